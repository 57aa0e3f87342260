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

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Everything the client does with a reply body. */
static void run_reply(GBytes *body, const char *header_length, const char *id, int out_width,
                      int out_height, double confidence)
{
  TeacherMask mask;
  GError *error = NULL;
  if (teacher_reply_parse(body, header_length, id, MAX_ELEMENTS, &mask, &error)) {
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
}

/* GLib and json-glib set up their types, classes, quarks and error domains on first use and keep
 * them: done here once, on a valid reply and on broken ones, so that libFuzzer's leak check (more
 * allocations than frees in one input) is not fooled into turning itself off. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  static const char *const bodies[] = {
      ("{\"id\":\"cam0:7\",\"outputs\":[{\"name\":\"mask\",\"datatype\":\"FP32\","
       "\"shape\":[1,1,1,2],\"data\":[0.5,1e9]}]}"),
      "{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"INT32\",\"shape\":[1,1,1],\"data\":[300]}]}",
      "{\"error\":\"x\"}", "{", "[1]", "\xff",
  };
  for (guint i = 0; i < G_N_ELEMENTS(bodies); i++) {
    GBytes *body = g_bytes_new_static(bodies[i], strlen(bodies[i]));
    run_reply(body, NULL, "cam0:7", 2, 1, 0.6);
    g_bytes_unref(body);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < PREFIX)
    return 0;
  guint32 length = (guint32)data[1] | (guint32)data[2] << 8 | (guint32)data[3] << 16 |
                   (guint32)data[4] << 24;
  char header[16];
  g_snprintf(header, sizeof header, "%u", length);
  /* A copy of just the body, so that reading past it is caught by the sanitizers. */
  GBytes *body = g_bytes_new(data + PREFIX, size - PREFIX);
  run_reply(body, (data[0] & 1) ? header : NULL, (data[0] & 2) ? "cam0:7" : NULL, data[5] + 1,
            data[6] + 1, data[7] / 255.0);
  g_bytes_unref(body);
  return 0;
}
