/* student.h: the student segmentation network (architecture in student/README.md).
 *
 * All parameters live in one flat buffer and their gradients in another of the same length, so
 * that an optimiser step, a weight snapshot or a swap of published weights is one loop or one
 * memcpy. Convolution weights are kept HWIO in memory (the layout of kernels/); checkpoints hold
 * them OIHW, as PyTorch does. */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "kernels.h"

/* The architectures (student/README.md); a checkpoint names its own. */
typedef enum {
  STUDENT_ARCH_JITNET,    /* "jitnet": JITNet's encoder-decoder of residual blocks */
  STUDENT_ARCH_MOBILENET, /* "mobilenet": inverted residuals and a Lite R-ASPP head */
  STUDENT_ARCH_REPGHOST,  /* "repghost": a U-Net of RepGhost bottlenecks */
  STUDENT_ARCH_COUNT,
} StudentArch;

/* jitnet's widths. */
typedef struct {
  int stem[2];
  int encoder[3];
  int decoder[3];
  int head[2];
  gboolean head_skip;
} JitnetConfig;

#define MOBILENET_BLOCKS 7

/* mobilenet's widths. */
typedef struct {
  int stem[1];
  int expand[MOBILENET_BLOCKS];
  int out[MOBILENET_BLOCKS];
  int aspp[1];
  gboolean hswish;
} MobilenetConfig;

/* repghost's widths; fused: the inference form (the fusion branches in the depthwise weights). */
typedef struct {
  int stem[1];
  int encoder[4], encoder_mid[4];
  int decoder[3], decoder_mid[3];
  int head[1];
  gboolean fused;
} RepghostConfig;

/* An architecture and its configuration: num_classes and the fields of arch (the others are
 * left as student_config_default_arch sets them: zeros). */
typedef struct {
  StudentArch arch;
  int num_classes;
  JitnetConfig jitnet;
  MobilenetConfig mobilenet;
  RepghostConfig repghost;
} StudentConfig;

/* The default architecture for num_classes classes, with its default widths. */
void student_config_default(StudentConfig *cfg, int num_classes);
/* arch with its default widths (student/README.md). */
void student_config_default_arch(StudentConfig *cfg, StudentArch arch, int num_classes);
/* The architecture's name in checkpoints and tools ("jitnet"), and back: FALSE for a name
 * that is none. */
const char *student_arch_name(StudentArch arch);
gboolean student_arch_from_name(const char *name, StudentArch *arch);
/* Compact JSON of the architecture's configuration, as stored in a checkpoint's metadata beside
 * the architecture's name; g_free() it. */
char *student_config_to_json(const StudentConfig *cfg);
/* Parses the configuration of arch from JSON: keys left out keep their defaults. */
gboolean student_config_from_json(const char *json, StudentArch arch, StudentConfig *cfg,
                                  GError **error);
gboolean student_config_equal(const StudentConfig *a, const StudentConfig *b);

typedef struct {
  char *name;        /* checkpoint name, e.g. "encoder.0.conv1.weight" */
  size_t offset;     /* in floats, into student_params() and student_grads() */
  size_t count;
  int rank;
  int shape[4];      /* as in the checkpoint (PyTorch): OIHW for convolution weights */
  gboolean hwio;     /* a convolution weight: HWIO in memory, OIHW on disk */
  /* Initial values (student/README.md, "Initialisation"): convolution weights He-normal times
   * init_gain; other tensors init_gain (biases 0, scales 1). */
  double init_gain;
} StudentTensor;

typedef struct Student Student;

/* A new network with seeded He-normal initialisation (student/README.md). */
Student *student_new(const StudentConfig *cfg, guint64 seed);
/* A new network with every parameter 0, for weights that come from elsewhere (a file, a buffer):
 * the initialisation costs more than a small frame's forward pass. */
Student *student_new_zeroed(const StudentConfig *cfg);
/* A new network with src's configuration and weights. */
Student *student_copy(const Student *src);

/* Re-parameterisation (student/README.md, "Architecture repghost"): the configuration a network
 * of cfg runs with (extra training branches folded into its convolutions; cfg itself for the
 * architectures that have none), and the weights of such a network computing the same function
 * as trained. */
void student_config_inference(const StudentConfig *cfg, StudentConfig *inference);
void student_fuse(const Student *trained, Student *inference);
/* A new network of the inference form, with trained's function. */
Student *student_fused_copy(const Student *trained);
void student_free(Student *student);
const StudentConfig *student_get_config(const Student *student);

float *student_params(Student *student);
float *student_grads(Student *student);
size_t student_param_count(const Student *student);
int student_tensor_count(const Student *student);
const StudentTensor *student_tensor(const Student *student, int index);
const StudentTensor *student_find_tensor(const Student *student, const char *name);

/* Size of the logits (half resolution) for an input of in_h x in_w. */
void student_logits_size(const Student *student, int in_h, int in_w, int *out_h, int *out_w);
/* Floating-point operations (2 per multiply-add) of one forward pass at in_h x in_w. */
double student_forward_flops(const Student *student, int in_h, int in_w);

/* Runs the network on input (in_h x in_w x 3, RGB scaled to [0,1] minus 0.5). Activation buffers
 * are planned for the input size and reused while it stays the same. Returns the logits, valid
 * until the next forward; keeps what backward needs, input included: leave it unchanged until
 * student_backward. */
const FeatureMap *student_forward(Student *student, const FeatureMap *input, ThreadPool *pool);

/* Gradient of the loss (softmax cross-entropy, kernels.h) of the last forward's logits against
 * labels (logits size, row-major, 255 = ignore) and optional per-pixel weights; ADDS it to
 * student_grads(). Returns the loss. */
double student_backward(Student *student, const uint8_t *labels, const float *pixel_weight,
                        ThreadPool *pool);
/* For another loss: the caller writes the gradient of its loss with respect to the last
 * forward's logits into student_logits_delta() (same size), then runs the rest of the backward,
 * which ADDS to student_grads(). */
FeatureMap *student_logits_delta(Student *student);
void student_backward_from_logits(Student *student, ThreadPool *pool);
void student_zero_grads(Student *student);

/* Mixed-precision training: the backward pass's convolutions (input and weight gradients) take
 * their products in bfloat16 and their sums in fp32 (kernels.h), about twice as fast where the
 * CPU has AVX512-BF16. Only on such CPUs: returns whether it is on. Off by default. */
gboolean student_set_bf16(Student *student, gboolean on);
gboolean student_get_bf16(const Student *student);
/* The same for the forward pass, in the layers where it pays (conv_layer.c, bf16_forward_pays: the
 * wide layers at the larger sizes; the others stay fp32; bf16_backward_pays keeps the backward
 * pass of the narrow pointwise layers in fp32 as well): 1.2-1.4x faster at 640x480. The
 * shipped weights' logits move by 0.04% (RMS) and their class maps on 4 pixels in 100,000
 * (tests/distill/test_precision), but rounding activations flips ReLUs near zero, and gradients
 * through such a forward pass move by up to a quarter in the early layers on the parity frames:
 * the parity tests keep it off, and it is a switch apart from student_set_bf16. Off by default. */
gboolean student_set_bf16_forward(Student *student, gboolean on);
gboolean student_get_bf16_forward(const Student *student);

/* The shipped weights of arch for num_classes classes ("jitnet-2class.safetensors"): in
 * $DISTILL_WEIGHTS_DIR when set, else installed, else in the source tree (a build run in place);
 * NULL when there are none. g_free() it. */
char *student_shipped_path(StudentArch arch, int num_classes);
/* The student a stream starts from: the checkpoint; when it cannot be used (unreadable, damaged,
 * another architecture or class count), the shipped weights, with *refused saying why the
 * checkpoint was not; without a checkpoint, the shipped weights, or a freshly initialised network
 * when none are shipped for num_classes. *origin (g_free() it) is the file the weights came from,
 * NULL for fresh ones. NULL and an error naming every file tried when none can be used. */
Student *student_load_start(const char *checkpoint, int num_classes, char **origin,
                            GError **refused, GError **error);

/* Checkpoints (safetensors; format in student/README.md). Saving writes a temporary file beside
 * path, fsyncs it, renames it over path and fsyncs the folder. */
gboolean student_save(Student *student, const char *path, GError **error);
/* The same file with values (laid out as student_params(), e.g. the gradients) as the tensors. */
gboolean student_save_values(Student *student, const float *values, const char *path,
                             GError **error);
/* A new network with the file's configuration and weights. */
Student *student_load(const char *path, GError **error);
/* Loads weights into an existing network; the file's configuration must equal its own. */
gboolean student_load_weights(Student *student, const char *path, GError **error);

#define STUDENT_ERROR (student_error_quark())
GQuark student_error_quark(void);
typedef enum {
  STUDENT_ERROR_IO,          /* missing or unreadable file, failed write */
  STUDENT_ERROR_FORMAT,      /* not a valid safetensors file of this format: truncated, corrupt */
  STUDENT_ERROR_MISMATCH,    /* valid, but another architecture, configuration or class count */
} StudentError;
