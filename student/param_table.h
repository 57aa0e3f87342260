/* param_table.h: where each named tensor lives in the flat parameter buffer.
 *
 * Layers register their weights and biases while the network is made; the table then gives the
 * buffer's length, the checkpoint names and shapes, and the offsets every layer reads from. */
#pragma once

#include <glib.h>

#include "student.h"

typedef struct {
  GArray *tensors; /* of StudentTensor, in checkpoint order */
  size_t count;    /* floats so far */
} ParamTable;

void param_table_init(ParamTable *table);
void param_table_clear(ParamTable *table);
/* Appends a tensor of the given (checkpoint) shape; returns its offset in floats. A convolution
 * weight (hwio) starts He-normal, anything else at 0 (param_table_set_init changes either). */
size_t param_table_add(ParamTable *table, const char *name, int rank, const int *shape,
                       gboolean hwio);
/* The initial scale of the tensor at offset: He-normal times gain for a convolution weight,
 * the constant gain otherwise. */
void param_table_set_init(ParamTable *table, size_t offset, double gain);
const StudentTensor *param_table_get(const ParamTable *table, int index);
int param_table_size(const ParamTable *table);
