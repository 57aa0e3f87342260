/* init.h: seeded initialisation of the parameters (student/README.md). */
#pragma once

#include <glib.h>

#include "param_table.h"

/* He-normal (fan-in, ReLU gain) convolution weights times their init_gain, the constant
 * init_gain elsewhere (StudentTensor). The numbers come from a portable generator in checkpoint
 * order (OIHW within a weight), so a seed gives the same network on every machine. */
void init_params(const ParamTable *table, float *params, guint64 seed);
