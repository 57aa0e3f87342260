/* fuzz_checkpoint.c: libFuzzer target for the safetensors checkpoint loader (student/checkpoint.c):
 * student_load_data on the input as a whole checkpoint file. Every input either loads, with no
 * error, or is refused with a format or mismatch error that names the file; nothing else (a
 * crash, a read past the input, a leak, a huge allocation) is allowed.
 * tests/fuzz/make-checkpoint-corpus.py writes the seeds: small valid checkpoints and damaged
 * ones. */
#include <stdint.h>
#include <string.h>

#include "checkpoint.h"

#define NAME "fuzz-input"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void load(const void *data, size_t size)
{
  GError *error = NULL;
  Student *student = student_load_data(data, size, NAME, &error);
  if (student) {
    g_assert_null(error);
    g_assert_cmpuint(student_param_count(student), >, 0);
    student_free(student);
    return;
  }
  g_assert_true(g_error_matches(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT) ||
                g_error_matches(error, STUDENT_ERROR, STUDENT_ERROR_MISMATCH));
  g_assert_nonnull(strstr(error->message, NAME));
  g_error_free(error);
}

/* GLib and json-glib set up their types and quarks on first use and keep them: done here once,
 * so that libFuzzer's leak check is not fooled into turning itself off. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  static const char header[] = "\x12\0\0\0\0\0\0\0{\"__metadata__\":1}";
  load(header, sizeof header - 1);
  load("\x02\0\0\0\0\0\0\0{", 9);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  /* A copy of just the input, so that reading past it is caught by the sanitizers. */
  void *copy = g_memdup2(data, size);
  load(copy, size);
  g_free(copy);
  return 0;
}
