/* init.h: seeded initialisation of the parameters (student/README.md). */
#pragma once

#include <glib.h>

#include "param_table.h"

/* He-normal (fan-in, ReLU gain) convolution weights, 0.1 of that for every block's conv3, zero
 * biases. The numbers come from a portable generator in checkpoint order (OIHW within a weight),
 * so a seed gives the same network on every machine. */
void init_params(const ParamTable *table, float *params, guint64 seed);
