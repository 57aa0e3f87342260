/* checkpoint.h: checkpoint entry points beyond student.h's (checkpoint.c). */
#pragma once

#include "student.h"

/* As student_load, from a whole checkpoint file already in memory (length bytes at data); name
 * stands for the file in error messages. */
Student *student_load_data(const void *data, size_t length, const char *name, GError **error);
