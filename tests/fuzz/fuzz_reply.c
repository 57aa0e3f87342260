/* fuzz_reply.c: libFuzzer target for the teacher's reply parser (teacher_client.h): the pure
 * functions that read whatever a teacher sends back, teacher_reply_parse,
 * teacher_mask_to_labels and teacher_error_reply_message.
 *
 * An input is an 8-byte prefix, then the reply body:
 *   byte 0      flags: bit 0 the Inference-Header-Content-Length header is present (else the
 *               whole body is JSON), bit 1 the request id "cam0:7" is checked
 *   bytes 1..4  the header's value, a little-endian uint32 written out in decimal
 *   byte 5, 6   width - 1 and height - 1 of the class map asked for (1..256)
 *   byte 7      the confidence threshold, / 255
 * tests/fuzz/make-reply-corpus.py writes seeds in this form. */
#include <stdint.h>
#include <string.h>

#include "teacher_client.h"

#define PREFIX 8
#define MAX_ELEMENTS (1u << 22)  /* as a client with a 16 MiB reply limit: keeps a run quick */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < PREFIX)
    return 0;
  guint32 length = (guint32)data[1] | (guint32)data[2] << 8 | (guint32)data[3] << 16 |
                   (guint32)data[4] << 24;
  char header[16];
  g_snprintf(header, sizeof header, "%u", length);
  int out_width = data[5] + 1, out_height = data[6] + 1;
  double confidence = data[7] / 255.0;
  /* A copy of just the body, so that reading past it is caught by the sanitizers. */
  GBytes *body = g_bytes_new(data + PREFIX, size - PREFIX);

  TeacherMask mask;
  GError *error = NULL;
  if (teacher_reply_parse(body, (data[0] & 1) ? header : NULL, (data[0] & 2) ? "cam0:7" : NULL,
                          MAX_ELEMENTS, &mask, &error)) {
    g_assert_null(error);
    g_assert_nonnull(mask.data);
    uint8_t *labels = g_malloc((gsize)out_width * out_height);
    int classes = teacher_mask_to_labels(&mask, confidence, out_width, out_height, labels, &error);
    g_assert_true(classes == -1 ? error != NULL : classes >= 0 && classes <= 255 && !error);
    g_free(labels);
    teacher_mask_clear(&mask);
  } else {
    /* Every failure says why, as a protocol error, and leaves nothing to free. */
    g_assert_true(g_error_matches(error, TEACHER_ERROR, TEACHER_ERROR_PROTOCOL));
    g_assert_null(mask.data);
  }
  g_clear_error(&error);
  g_free(teacher_error_reply_message(body));
  g_bytes_unref(body);
  return 0;
}
