/* student_private.h: what the network's files share. student.c holds what every architecture
 * has (the parameter buffers, the arena, precision switches); each architecture's file (jitnet.c)
 * its layers, its buffers of an input size, and its forward and backward passes, through a
 * table of StudentArchOps. */
#pragma once

#include <json-glib/json-glib.h>

#include "arena.h"
#include "param_table.h"
#include "student.h"

/* One key of an architecture's configuration in JSON: an array of `count` positive widths, or a
 * boolean (count 0), at `offset` bytes into StudentConfig. */
typedef struct {
  const char *name;
  int count;
  size_t offset;
} StudentConfigKey;

typedef struct {
  const char *name; /* in checkpoints and tools */
  void (*config_default)(StudentConfig *cfg);
  const StudentConfigKey *keys;
  int n_keys;
  /* Fewer parameters than the configuration's network has (a lower bound, cheap), so that a
   * damaged configuration naming huge widths is refused before it is made. */
  double (*min_param_count)(const StudentConfig *cfg);

  /* Registers the layers' tensors in s->table and allocates s->net (freed with g_free). */
  void (*make)(Student *s);
  void (*logits_size)(const Student *s, int in_h, int in_w, int *h, int *w);
  double (*forward_flops)(const Student *s, int in_h, int in_w);
  /* Places every activation and gradient buffer of an in_h x in_w input in arena (measuring
   * first, when arena->base is NULL). */
  void (*plan)(Student *s, int in_h, int in_w, Arena *arena);
  const FeatureMap *(*forward)(Student *s, const FeatureMap *input, ThreadPool *pool);
  FeatureMap *(*logits_delta)(Student *s);
  void (*backward)(Student *s, ThreadPool *pool);
  /* Sets the layers' bfloat16 switches from s->bf16_backward and s->bf16_forward. */
  void (*apply_precision)(Student *s);

  /* Re-parameterised architectures (NULL for the others, which run as they train): the
   * inference form of a configuration, and the weights of a network of that form from those of
   * a trained one (student_fuse). */
  void (*config_inference)(StudentConfig *cfg);
  void (*fuse)(const Student *trained, Student *fused);
} StudentArchOps;

extern const StudentArchOps jitnet_ops, mobilenet_ops, repghost_ops;

const StudentArchOps *student_arch_ops(StudentArch arch);

struct Student {
  StudentConfig config;
  const StudentArchOps *ops;
  ParamTable table;
  float *params, *grads;
  void *net; /* the architecture's layers (ops->make) */

  /* Planned for an input of planned_h x planned_w (0 = not yet). */
  int planned_h, planned_w;
  float *arena;
  FeatureMap input;          /* of the last forward, read again by backward */
  const FeatureMap *logits;  /* of the last forward */
  int bf16_backward, bf16_forward; /* student_set_bf16, student_set_bf16_forward */
};
