/* param_table.c: see param_table.h. */
#include "param_table.h"

void param_table_init(ParamTable *table)
{
  table->tensors = g_array_new(FALSE, TRUE, sizeof(StudentTensor));
  table->count = 0;
}

void param_table_clear(ParamTable *table)
{
  if (!table->tensors)
    return;
  for (guint i = 0; i < table->tensors->len; i++)
    g_free(g_array_index(table->tensors, StudentTensor, i).name);
  g_array_free(table->tensors, TRUE);
  table->tensors = NULL;
  table->count = 0;
}

size_t param_table_add(ParamTable *table, const char *name, int rank, const int *shape,
                       gboolean hwio)
{
  StudentTensor t = { .name = g_strdup(name), .offset = table->count, .count = 1,
                      .rank = rank, .hwio = hwio, .init_gain = hwio ? 1.0 : 0.0 };
  for (int i = 0; i < rank; i++) {
    t.shape[i] = shape[i];
    t.count *= (size_t)shape[i];
  }
  g_array_append_val(table->tensors, t);
  table->count += t.count;
  return t.offset;
}

void param_table_set_init(ParamTable *table, size_t offset, double gain)
{
  for (guint i = 0; i < table->tensors->len; i++) {
    StudentTensor *t = &g_array_index(table->tensors, StudentTensor, i);
    if (t->offset == offset) {
      t->init_gain = gain;
      return;
    }
  }
  g_return_if_reached();
}

const StudentTensor *param_table_get(const ParamTable *table, int index)
{
  return &g_array_index(table->tensors, StudentTensor, index);
}

int param_table_size(const ParamTable *table)
{
  return (int)table->tensors->len;
}
