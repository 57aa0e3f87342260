/* student-io: the student over raw files, for comparing it with other implementations
 * (tests/parity runs it against the PyTorch mirror).
 *
 *   student-io init OUT.safetensors [--arch NAME] [--classes N] [--seed S] [--config JSON]
 *   student-io forward CKPT INPUT.f32 H W LOGITS.f32
 *   student-io grad CKPT INPUT.f32 H W LABELS.u8 GRADS.safetensors
 *   student-io step CKPT INPUT.f32 H W LABELS.u8 sgd|adam LR WEIGHT_DECAY OUT.safetensors
 *   student-io fuse CKPT OUT.safetensors
 *
 * INPUT: H*W*3 float32 NHWC; LOGITS: h2*w2*C float32 NHWC at the logits size; LABELS: h2*w2
 * bytes (255 = ignore). grad writes the gradients of the mean loss as a checkpoint (same names,
 * OIHW shapes); step takes one optimiser step from fresh state and saves the weights; fuse saves
 * the inference form (student_fused_copy: repghost's fusion branches in its depthwise weights; any
 * other architecture as it is). Every
 * command accepts --threads N (default 1). Results go to stdout as one JSON line. */
#include <stdio.h>
#include <stdlib.h>

#include "optimizer.h"
#include "student.h"

static int threads = 1;
static gboolean bf16;
static int classes = 0;
static gint64 seed = 0;
static char *config_json = NULL;
static char *arch_name = NULL;

static GOptionEntry entries[] = {
  { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "Compute threads (default 1)", "N" },
  { "arch", 0, 0, G_OPTION_ARG_STRING, &arch_name,
    "init: the architecture (default: the element's)", "NAME" },
  { "classes", 0, 0, G_OPTION_ARG_INT, &classes, "init: number of classes", "N" },
  { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "init: seed of the initialisation", "S" },
  { "config", 0, 0, G_OPTION_ARG_STRING, &config_json, "init: configuration as JSON", "JSON" },
  { "bf16", 0, 0, G_OPTION_ARG_NONE, &bf16,
    "forward, grad, step: bfloat16 products (student_set_bf16); fails where the CPU lacks them",
    NULL },
  { NULL },
};

static G_GNUC_NORETURN void die(const char *format, ...)
{
  va_list args;
  va_start(args, format);
  fprintf(stderr, "student-io: ");
  vfprintf(stderr, format, args);
  fprintf(stderr, "\n");
  va_end(args);
  exit(1);
}

static void die_on_error(GError *error)
{
  if (error)
    die("%s", error->message);
}

static int parse_size(const char *text, const char *what)
{
  char *end;
  long v = strtol(text, &end, 10);
  if (*end || v < 1 || v > 1 << 16)
    die("%s must be a positive integer, not \"%s\"", what, text);
  return (int)v;
}

static float parse_float(const char *text, const char *what)
{
  char *end;
  float v = strtof(text, &end);
  if (*end || end == text)
    die("%s must be a number, not \"%s\"", what, text);
  return v;
}

/* Exactly expected bytes from path, or dies. */
static void *read_raw(const char *path, size_t expected)
{
  char *data;
  gsize length;
  GError *error = NULL;
  if (!g_file_get_contents(path, &data, &length, &error))
    die("%s", error->message);
  if (length != expected)
    die("%s holds %zu bytes, expected %zu", path, (size_t)length, expected);
  return data;
}

static void write_raw(const char *path, const void *data, size_t length)
{
  GError *error = NULL;
  if (!g_file_set_contents(path, data, (gssize)length, &error))
    die("%s", error->message);
}

static int cmd_init(int argc, char **argv)
{
  if (argc != 3)
    die("usage: student-io init OUT.safetensors [--arch NAME] [--classes N] [--seed S] "
        "[--config JSON]");
  StudentConfig cfg;
  student_config_default(&cfg, 2);
  if (arch_name && !student_arch_from_name(arch_name, &cfg.arch))
    die("student-io: no architecture \"%s\"", arch_name);
  student_config_default_arch(&cfg, cfg.arch, 2);
  GError *error = NULL;
  if (config_json && !student_config_from_json(config_json, cfg.arch, &cfg, &error))
    die_on_error(error);
  if (classes > 0)
    cfg.num_classes = classes;
  Student *s = student_new(&cfg, (guint64)seed);
  student_save(s, argv[2], &error);
  die_on_error(error);
  printf("{\"params\":%zu}\n", student_param_count(s));
  student_free(s);
  return 0;
}

/* Loads CKPT, reads INPUT H W and runs the forward pass: the part common to the commands. */
typedef struct {
  Student *student;
  float *image;
  int h, w;
  int logits_h, logits_w;
  const FeatureMap *logits;
} Run;

static void run_forward(Run *run, char **argv, ThreadPool *pool)
{
  GError *error = NULL;
  run->student = student_load(argv[2], &error);
  die_on_error(error);
  if (bf16 && !student_set_bf16(run->student, TRUE))
    die("--bf16: this CPU has no AVX512-BF16");
  run->h = parse_size(argv[4], "H");
  run->w = parse_size(argv[5], "W");
  run->image = read_raw(argv[3], sizeof(float) * run->h * run->w * 3);
  FeatureMap input = feature_map(run->image, run->h, run->w, 3);
  run->logits = student_forward(run->student, &input, pool);
  run->logits_h = run->logits->h;
  run->logits_w = run->logits->w;
}

static void run_clear(Run *run)
{
  student_free(run->student);
  g_free(run->image);
}

static double run_backward(Run *run, const char *labels_path, ThreadPool *pool)
{
  uint8_t *labels = read_raw(labels_path, (size_t)run->logits_h * run->logits_w);
  student_zero_grads(run->student);
  double loss = student_backward(run->student, labels, NULL, pool);
  g_free(labels);
  return loss;
}

static int cmd_forward(int argc, char **argv, ThreadPool *pool)
{
  if (argc != 7)
    die("usage: student-io forward CKPT INPUT.f32 H W LOGITS.f32");
  Run run;
  run_forward(&run, argv, pool);
  const FeatureMap *z = run.logits;
  write_raw(argv[6], z->data, sizeof(float) * z->h * z->w * z->c);
  printf("{\"h\":%d,\"w\":%d,\"c\":%d}\n", z->h, z->w, z->c);
  run_clear(&run);
  return 0;
}

static int cmd_grad(int argc, char **argv, ThreadPool *pool)
{
  if (argc != 8)
    die("usage: student-io grad CKPT INPUT.f32 H W LABELS.u8 GRADS.safetensors");
  Run run;
  run_forward(&run, argv, pool);
  double loss = run_backward(&run, argv[6], pool);
  GError *error = NULL;
  student_save_values(run.student, student_grads(run.student), argv[7], &error);
  die_on_error(error);
  printf("{\"loss\":%.9g}\n", loss);
  run_clear(&run);
  return 0;
}

static int cmd_step(int argc, char **argv, ThreadPool *pool)
{
  if (argc != 11)
    die("usage: student-io step CKPT INPUT.f32 H W LABELS.u8 sgd|adam LR WEIGHT_DECAY "
        "OUT.safetensors");
  OptimizerConfig cfg;
  if (g_str_equal(argv[7], "sgd"))
    optimizer_config_default(&cfg, OPTIMIZER_SGD);
  else if (g_str_equal(argv[7], "adam"))
    optimizer_config_default(&cfg, OPTIMIZER_ADAM);
  else
    die("optimiser must be sgd or adam, not \"%s\"", argv[7]);
  cfg.learning_rate = parse_float(argv[8], "LR");
  cfg.weight_decay = parse_float(argv[9], "WEIGHT_DECAY");

  Run run;
  run_forward(&run, argv, pool);
  double loss = run_backward(&run, argv[6], pool);
  Optimizer *opt = optimizer_new(&cfg, student_param_count(run.student));
  optimizer_step(opt, student_params(run.student), student_grads(run.student));
  optimizer_free(opt);
  GError *error = NULL;
  student_save(run.student, argv[10], &error);
  die_on_error(error);
  printf("{\"loss\":%.9g}\n", loss);
  run_clear(&run);
  return 0;
}

static int cmd_fuse(int argc, char **argv)
{
  if (argc != 4)
    die("usage: student-io fuse CKPT OUT.safetensors");
  GError *error = NULL;
  Student *trained = student_load(argv[2], &error);
  die_on_error(error);
  Student *fused = student_fused_copy(trained);
  student_save(fused, argv[3], &error);
  die_on_error(error);
  printf("{\"params\":%zu}\n", student_param_count(fused));
  student_free(fused);
  student_free(trained);
  return 0;
}

int main(int argc, char **argv)
{
  GError *error = NULL;
  GOptionContext *context = g_option_context_new("init|forward|grad|step|fuse ARGS…");
  g_option_context_add_main_entries(context, entries, NULL);
  if (!g_option_context_parse(context, &argc, &argv, &error))
    die_on_error(error);
  g_option_context_free(context);
  if (argc < 2)
    die("usage: student-io init|forward|grad|step|fuse ARGS… [--threads N]");

  ThreadPool *pool = thread_pool_new(threads < 1 ? 1 : threads);
  int status;
  if (g_str_equal(argv[1], "init"))
    status = cmd_init(argc, argv);
  else if (g_str_equal(argv[1], "forward"))
    status = cmd_forward(argc, argv, pool);
  else if (g_str_equal(argv[1], "grad"))
    status = cmd_grad(argc, argv, pool);
  else if (g_str_equal(argv[1], "step"))
    status = cmd_step(argc, argv, pool);
  else if (g_str_equal(argv[1], "fuse"))
    status = cmd_fuse(argc, argv);
  else
    die("unknown command \"%s\": init, forward, grad, step or fuse", argv[1]);
  thread_pool_free(pool);
  return status;
}
