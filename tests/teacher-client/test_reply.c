/* test_reply.c: the pure reply functions: parsing every mask form (binary and JSON, after other
 * outputs), every malformed reply with its message, resizing (nearest for labels, bilinear for
 * probabilities) and the confidence threshold. */
#include <math.h>
#include <string.h>

#include "teacher_client.h"

/* A body of header followed by data; the Inference-Header-Content-Length value in *length. */
static GBytes *body_new(const char *header, const void *data, gsize size, char length[32])
{
  g_snprintf(length, 32, "%zu", strlen(header));
  GByteArray *body = g_byte_array_new();
  g_byte_array_append(body, (const guint8 *)header, (guint)strlen(header));
  if (size)
    g_byte_array_append(body, data, (guint)size);
  return g_byte_array_free_to_bytes(body);
}

static gboolean parse(const char *header, const void *data, gsize size, TeacherMask *mask,
                      GError **error)
{
  char length[32];
  g_autoptr(GBytes) body = body_new(header, data, size, length);
  return teacher_reply_parse(body, data ? length : NULL, "cam:1", 1 << 20, mask, error);
}

static void expect_error(const char *header, const void *data, gsize size, const char *fragment)
{
  TeacherMask mask;
  g_autoptr(GError) error = NULL;
  g_assert_false(parse(header, data, size, &mask, &error));
  g_assert_error(error, TEACHER_ERROR, TEACHER_ERROR_PROTOCOL);
  if (strstr(error->message, fragment) == NULL)
    g_error("expected '%s' in: %s", fragment, error->message);
  g_assert_null(mask.data);
}

static void test_binary_after_other_outputs(void)
{
  /* Two outputs before the mask: its bytes start after theirs. */
  const guint8 data[] = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 0, 1, 255, 1, 0, 0};
  TeacherMask mask;
  g_autoptr(GError) error = NULL;
  g_assert_true(parse("{\"id\":\"cam:1\",\"outputs\":[{\"name\":\"scores\",\"datatype\":\"FP32\","
                      "\"shape\":[2],\"parameters\":{\"binary_data_size\":8}},"
                      "{\"name\":\"x\",\"datatype\":\"INT32\",\"shape\":[1],\"data\":[3]},"
                      "{\"name\":\"extra\",\"parameters\":{\"binary_data_size\":2}},"
                      "{\"name\":\"mask\",\"datatype\":\"UINT8\",\"shape\":[1,2,3],"
                      "\"parameters\":{\"binary_data_size\":6}}]}",
                      data, sizeof data, &mask, &error));
  g_assert_no_error(error);
  g_assert_cmpint(mask.datatype, ==, TEACHER_DATATYPE_UINT8);
  g_assert_cmpint(mask.channels, ==, 0);
  g_assert_cmpint(mask.height, ==, 2);
  g_assert_cmpint(mask.width, ==, 3);
  gsize size;
  const guint8 *labels = g_bytes_get_data(mask.data, &size);
  g_assert_cmpmem(labels, size, data + 10, 6);
  guint8 out[6];
  g_assert_cmpint(teacher_mask_to_labels(&mask, 0.6, 3, 2, out, NULL), ==, 2);
  g_assert_cmpmem(out, 6, data + 10, 6);
  teacher_mask_clear(&mask);
}

static void test_json_data(void)
{
  TeacherMask mask;
  g_autoptr(GError) error = NULL;
  /* Nested data is flattened row-major; INT64 -1 is "ignore". */
  g_assert_true(parse("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"INT64\",\"shape\":[1,2,2],"
                      "\"data\":[[0,-1],[4,255]]}]}",
                      NULL, 0, &mask, &error));
  g_assert_no_error(error);
  guint8 out[4];
  g_assert_cmpint(teacher_mask_to_labels(&mask, 0.6, 2, 2, out, NULL), ==, 5);
  g_assert_cmpmem(out, 4, ((guint8[]){0, 255, 4, 255}), 4);
  teacher_mask_clear(&mask);

  g_assert_true(parse("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"FP32\",\"shape\":[1,1,1,2],"
                      "\"data\":[0.9, 0]}]}",
                      NULL, 0, &mask, &error));
  g_assert_cmpint(teacher_mask_to_labels(&mask, 0.6, 2, 1, out, NULL), ==, 2);
  g_assert_cmpmem(out, 2, ((guint8[]){1, 0}), 2);
  teacher_mask_clear(&mask);
}

/* Upscaling a 2x2 mask to 4x4: nearest for labels, bilinear for probabilities, then the
 * confidence threshold. */
static void test_resize(void)
{
  TeacherMask mask;
  guint8 out[16];
  g_assert_true(parse("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"INT32\",\"shape\":[1,2,2],"
                      "\"data\":[1,2,3,0]}]}",
                      NULL, 0, &mask, NULL));
  g_assert_cmpint(teacher_mask_to_labels(&mask, 0.6, 4, 4, out, NULL), ==, 4);
  const guint8 nearest[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 0, 0, 3, 3, 0, 0};
  g_assert_cmpmem(out, 16, nearest, 16);
  teacher_mask_clear(&mask);

  /* Foreground probability 1 on the left column, 0 on the right: the bilinear ramp across the
   * middle (0.75, 0.25) stays above the 0.6 confidence for both classes. */
  float p[4] = {1, 0, 1, 0};
  g_assert_true(parse("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"FP32\",\"shape\":[1,1,2,2],"
                      "\"parameters\":{\"binary_data_size\":16}}]}",
                      p, sizeof p, &mask, NULL));
  g_assert_cmpint(teacher_mask_to_labels(&mask, 0.6, 4, 4, out, NULL), ==, 2);
  for (int y = 0; y < 4; y++)
    g_assert_cmpmem(out + 4 * y, 4, ((guint8[]){1, 1, 0, 0}), 4);
  /* At confidence 0.8 the ramp's 0.75 and 0.25 become "ignore". */
  teacher_mask_to_labels(&mask, 0.8, 4, 4, out, NULL);
  g_assert_cmpmem(out, 4, ((guint8[]){1, 255, 255, 0}), 4);
  teacher_mask_clear(&mask);

  /* Three classes, argmax after interpolation; a flat 0.4/0.35/0.25 pixel is ignored. */
  float q[3 * 2] = {0.1f, 0.4f, 0.8f, 0.35f, 0.1f, 0.25f};
  g_assert_true(parse("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"FP32\",\"shape\":[1,3,1,2],"
                      "\"parameters\":{\"binary_data_size\":24}}]}",
                      q, sizeof q, &mask, NULL));
  g_assert_cmpint(teacher_mask_to_labels(&mask, 0.6, 2, 1, out, NULL), ==, 3);
  g_assert_cmpmem(out, 2, ((guint8[]){1, 255}), 2);
  teacher_mask_clear(&mask);
}

static void test_bad_values(void)
{
  TeacherMask mask;
  guint8 out[4];
  g_autoptr(GError) error = NULL;
  g_assert_true(parse("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"INT32\",\"shape\":[1,1,2],"
                      "\"data\":[1,300]}]}",
                      NULL, 0, &mask, NULL));
  g_assert_cmpint(teacher_mask_to_labels(&mask, 0.6, 2, 1, out, &error), ==, -1);
  g_assert_error(error, TEACHER_ERROR, TEACHER_ERROR_PROTOCOL);
  g_assert_nonnull(strstr(error->message, "class index 300"));
  teacher_mask_clear(&mask);
  g_clear_error(&error);
  float nan[2] = {NAN, 0.5f};
  g_assert_true(parse("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"FP32\",\"shape\":[1,1,1,2],"
                      "\"parameters\":{\"binary_data_size\":8}}]}",
                      nan, sizeof nan, &mask, NULL));
  g_assert_cmpint(teacher_mask_to_labels(&mask, 0.6, 2, 1, out, &error), ==, -1);
  g_assert_nonnull(strstr(error->message, "non-finite"));
  teacher_mask_clear(&mask);
}

static void test_malformed(void)
{
  const guint8 four[4] = {0};
  expect_error("{\"outputs\":[", four, 0, "malformed JSON");
  expect_error("", NULL, 0, "empty body");
  expect_error("[1,2]", NULL, 0, "not an object");
  expect_error("{\"error\":\"model not found\"}", NULL, 0, "model not found");
  expect_error("{\"id\":\"cam:2\",\"outputs\":[]}", NULL, 0, "does not match request id");
  expect_error("{\"outputs\":{}}", NULL, 0, "no \"outputs\" array");
  expect_error("{\"outputs\":[{\"name\":\"seg\"},{\"name\":\"logits\"}]}", NULL, 0,
               "no output named \"mask\" (outputs: 'seg', 'logits')");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"UINT8\",\"shape\":[1,2,2]}]}",
               NULL, 0, "neither binary_data_size nor data");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"FP16\",\"shape\":[1,2,2],"
               "\"data\":[1,2,3,4]}]}", NULL, 0, "datatype 'FP16'");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"UINT8\",\"shape\":[1,1,2,2],"
               "\"data\":[1,2,3,4]}]}", NULL, 0, "shape [1,h,w]");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"FP32\",\"shape\":[1,256,1,1],"
               "\"data\":[]}]}", NULL, 0, "1 to 255 channels");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"UINT8\",\"shape\":[1,2,\"2\"],"
               "\"data\":[1,2,3,4]}]}", NULL, 0, "non-integer");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"UINT8\",\"shape\":[1,2,2],"
               "\"data\":[1,2,3]}]}", NULL, 0, "holds 3 elements, its shape 4");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"UINT8\",\"shape\":[1,2,2],"
               "\"data\":[1,2,3,4,5]}]}", NULL, 0, "more elements than its shape");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"UINT8\",\"shape\":[1,2,2],"
               "\"data\":[1,2,\"3\",4]}]}", NULL, 0, "non-integer");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"UINT8\",\"shape\":[1,2,2],"
               "\"data\":[1,2,3,256]}]}", NULL, 0, "UINT8 mask data holds 256");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"UINT8\",\"shape\":[1,2,2],"
               "\"parameters\":{\"binary_data_size\":4}}]}", four, 3, "truncated body");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"UINT8\",\"shape\":[1,2,2],"
               "\"parameters\":{\"binary_data_size\":5}}]}", four, 4, "does not match its shape");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"UINT8\",\"shape\":[1,2,2],"
               "\"parameters\":{\"binary_data_size\":-4}}]}", four, 4, "invalid binary_data_size");
  expect_error("{\"outputs\":[{\"name\":\"a\",\"parameters\":{\"binary_data_size\":99}},"
               "{\"name\":\"mask\",\"datatype\":\"UINT8\",\"shape\":[1,2,2],"
               "\"parameters\":{\"binary_data_size\":4}}]}", four, 4, "runs past its end");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"FP32\",\"shape\":[1,2,1024,1024],"
               "\"parameters\":{\"binary_data_size\":8388608}}]}", four, 4, "exceeds the limit");
  expect_error("{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"UINT8\",\"shape\":[1,99999,2],"
               "\"data\":[]}]}", NULL, 0, "outside 1..16384");

  /* The header length itself. */
  TeacherMask mask;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) body = g_bytes_new_static("{}", 2);
  g_assert_false(teacher_reply_parse(body, "3", NULL, 1 << 20, &mask, &error));
  g_assert_nonnull(strstr(error->message, "Inference-Header-Content-Length '3'"));
  g_clear_error(&error);
  g_assert_false(teacher_reply_parse(body, "-1", NULL, 1 << 20, &mask, &error));
  g_assert_error(error, TEACHER_ERROR, TEACHER_ERROR_PROTOCOL);
}

static void test_error_message(void)
{
  const char *json = "{\"error\":\"bad\\ninput\\u0007\"}";
  g_autoptr(GBytes) body = g_bytes_new_static(json, strlen(json));
  g_autofree char *message = teacher_error_reply_message(body);
  g_assert_cmpstr(message, ==, "bad input ");
  g_autoptr(GString) long_error = g_string_new("{\"error\":\"");
  for (int i = 0; i < 500; i++)
    g_string_append_c(long_error, 'x');
  g_string_append(long_error, "\"}");
  g_autoptr(GBytes) long_body = g_bytes_new(long_error->str, long_error->len);
  g_autofree char *shortened = teacher_error_reply_message(long_body);
  g_assert_cmpuint(strlen(shortened), ==, 200);
  g_autoptr(GBytes) html = g_bytes_new_static("<html>", 6);
  g_assert_null(teacher_error_reply_message(html));
}

/* Valid replies with random bytes changed, cut or inserted: each parse either succeeds with a
 * mask that converts, or fails with a protocol error that says something. */
static void test_mutations(void)
{
  static const char *const seeds[] = {
      "{\"id\":\"cam:1\",\"outputs\":[{\"name\":\"mask\",\"datatype\":\"UINT8\","
      "\"shape\":[1,2,3],\"parameters\":{\"binary_data_size\":6}}]}",
      "{\"outputs\":[{\"name\":\"mask\",\"datatype\":\"FP32\",\"shape\":[1,2,1,2],"
      "\"data\":[0.1,0.9,0.9,0.1]}]}",
      "{\"outputs\":[{\"name\":\"x\",\"parameters\":{\"binary_data_size\":2}},{\"name\":"
      "\"mask\",\"datatype\":\"INT64\",\"shape\":[1,1,2],\"parameters\":"
      "{\"binary_data_size\":16}}]}",
  };
  GRand *rng = g_rand_new_with_seed(17);
  guint parsed = 0, refused = 0;
  for (int n = 0; n < 30000; n++) {
    const char *seed = seeds[n % G_N_ELEMENTS(seeds)];
    g_autoptr(GByteArray) body = g_byte_array_new();
    g_byte_array_append(body, (const guint8 *)seed, (guint)strlen(seed));
    for (int i = 0; i < 24; i++) {
      guint8 byte = (guint8)g_rand_int(rng);
      g_byte_array_append(body, &byte, 1);
    }
    int edits = g_rand_int_range(rng, 1, 4);
    for (int e = 0; e < edits && body->len > 1; e++) {
      guint at = (guint)g_rand_int_range(rng, 0, (gint32)body->len);
      switch (g_rand_int_range(rng, 0, 3)) {
      case 0: body->data[at] = (guint8)g_rand_int(rng); break;
      case 1: g_byte_array_set_size(body, at); break;
      default: g_byte_array_remove_index(body, at); break;
      }
    }
    char length[32];
    g_snprintf(length, sizeof length, "%zu", strlen(seed) + g_rand_int_range(rng, -2, 3));
    g_autoptr(GBytes) bytes = g_bytes_new(body->data, body->len);
    TeacherMask mask;
    g_autoptr(GError) error = NULL;
    if (teacher_reply_parse(bytes, g_rand_boolean(rng) ? length : NULL, "cam:1", 1 << 16, &mask,
                            &error)) {
      guint8 out[5 * 3];
      if (teacher_mask_to_labels(&mask, 0.6, 5, 3, out, &error) < 0)
        g_assert_error(error, TEACHER_ERROR, TEACHER_ERROR_PROTOCOL);
      teacher_mask_clear(&mask);
      parsed++;
    } else {
      g_assert_error(error, TEACHER_ERROR, TEACHER_ERROR_PROTOCOL);
      g_assert_cmpuint(strlen(error->message), >, strlen("teacher reply: "));
      g_assert_null(mask.data);
      refused++;
    }
  }
  g_rand_free(rng);
  g_test_message("%u parsed, %u refused", parsed, refused);
  g_assert_cmpuint(parsed, >, 0);
  g_assert_cmpuint(refused, >, 0);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/teacher-client/reply/binary-after-other-outputs",
                  test_binary_after_other_outputs);
  g_test_add_func("/teacher-client/reply/json-data", test_json_data);
  g_test_add_func("/teacher-client/reply/resize", test_resize);
  g_test_add_func("/teacher-client/reply/bad-values", test_bad_values);
  g_test_add_func("/teacher-client/reply/malformed", test_malformed);
  g_test_add_func("/teacher-client/reply/error-message", test_error_message);
  g_test_add_func("/teacher-client/reply/mutations", test_mutations);
  return g_test_run();
}
