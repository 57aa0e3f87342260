/* reply.c: parsing a KServe v2 infer reply (JSON header, then Triton binary tensors) into the
 * teacher's mask. Pure functions over bytes: no I/O, no global state, so a fuzz target can feed
 * them anything. */
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

#include "probability_labels.h"
#include "teacher_client.h"

#define MAX_SIDE 16384     /* a mask side beyond this is a broken reply, not a real mask */
#define MAX_CHANNELS 255   /* class 255 means "ignore" in the 8-bit class map */

G_DEFINE_QUARK(teacher-error-quark, teacher_error)

static const struct {
  const char *name;
  TeacherDatatype datatype;
  int size;
} datatypes[] = {
  {"UINT8", TEACHER_DATATYPE_UINT8, 1},
  {"INT32", TEACHER_DATATYPE_INT32, 4},
  {"INT64", TEACHER_DATATYPE_INT64, 8},
  {"FP32", TEACHER_DATATYPE_FP32, 4},
};

static int element_size(TeacherDatatype datatype)
{
  for (guint i = 0; i < G_N_ELEMENTS(datatypes); i++)
    if (datatypes[i].datatype == datatype)
      return datatypes[i].size;
  g_assert_not_reached();
}

static gboolean protocol_error(GError **error, const char *format, ...) G_GNUC_PRINTF(2, 3);

static gboolean protocol_error(GError **error, const char *format, ...)
{
  va_list args;
  va_start(args, format);
  g_autofree char *message = g_strdup_vprintf(format, args);
  va_end(args);
  g_set_error(error, TEACHER_ERROR, TEACHER_ERROR_PROTOCOL, "teacher reply: %s", message);
  return FALSE;
}

/* The length of the JSON header: Inference-Header-Content-Length, or the whole body. */
static gboolean header_length(const char *value, gsize body_size, gsize *length, GError **error)
{
  if (value == NULL) {
    *length = body_size;
    return TRUE;
  }
  guint64 n;
  if (!g_ascii_string_to_unsigned(value, 10, 1, G_MAXUINT64, &n, NULL) || n > body_size)
    return protocol_error(error,
                          "Inference-Header-Content-Length '%.40s' is not a length within the "
                          "%" G_GSIZE_FORMAT "-byte body",
                          value, body_size);
  *length = (gsize)n;
  return TRUE;
}

static JsonNode *parse_json(const char *data, gsize length, GError **error)
{
  if (length == 0 || data == NULL) {
    protocol_error(error, "empty body where a JSON header was expected");
    return NULL;
  }
  g_autoptr(JsonParser) parser = json_parser_new_immutable();
  g_autoptr(GError) json_error = NULL;
  if (length > G_MAXSSIZE ||
      !json_parser_load_from_data(parser, data, (gssize)length, &json_error)) {
    protocol_error(error, "malformed JSON header (%s)",
                   json_error ? json_error->message : "too long");
    return NULL;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root)) {
    protocol_error(error, "the JSON header is not an object");
    return NULL;
  }
  return json_node_ref(root);
}

static const char *member_string(JsonObject *object, const char *name)
{
  JsonNode *node = json_object_get_member(object, name);
  if (node == NULL || !JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_STRING)
    return NULL;
  return json_node_get_string(node);
}

/* A non-negative integer member; absent = -1, anything else = -2. */
static gint64 member_count(JsonObject *object, const char *name)
{
  JsonNode *node = object ? json_object_get_member(object, name) : NULL;
  if (node == NULL)
    return -1;
  if (!JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_INT64 ||
      json_node_get_int(node) < 0)
    return -2;
  return json_node_get_int(node);
}

/* Datatype and shape of the mask against DESIGN.md's list. */
static gboolean check_mask_header(JsonObject *output, TeacherMask *mask, GError **error)
{
  const char *datatype = member_string(output, "datatype");
  int found = -1;
  for (guint i = 0; datatype != NULL && i < G_N_ELEMENTS(datatypes); i++)
    if (strcmp(datatype, datatypes[i].name) == 0)
      found = (int)i;
  if (found < 0)
    return protocol_error(error,
                          "mask datatype '%.40s' is not one of UINT8, INT32, INT64 (class indices) "
                          "or FP32 (probabilities)",
                          datatype ? datatype : "(missing)");
  mask->datatype = datatypes[found].datatype;

  JsonNode *shape_node = json_object_get_member(output, "shape");
  if (shape_node == NULL || !JSON_NODE_HOLDS_ARRAY(shape_node))
    return protocol_error(error, "mask has no shape array");
  JsonArray *shape = json_node_get_array(shape_node);
  guint rank = json_array_get_length(shape);
  gint64 dims[4] = {0};
  g_autoptr(GString) text = g_string_new("[");
  for (guint i = 0; i < rank; i++) {
    JsonNode *dim = json_array_get_element(shape, i);
    if (!JSON_NODE_HOLDS_VALUE(dim) || json_node_get_value_type(dim) != G_TYPE_INT64)
      return protocol_error(error, "mask shape holds a non-integer");
    if (i < 4)
      dims[i] = json_node_get_int(dim);
    if (i < 8)
      g_string_append_printf(text, "%s%" G_GINT64_FORMAT, i ? "," : "", json_node_get_int(dim));
  }
  g_string_append(text, rank > 8 ? ",…]" : "]");
  gboolean labels = mask->datatype != TEACHER_DATATYPE_FP32;
  if (labels && (rank != 3 || dims[0] != 1))
    return protocol_error(error, "a %s mask must have shape [1,h,w] (class indices), not %s",
                          datatype, text->str);
  if (!labels && (rank != 4 || dims[0] != 1))
    return protocol_error(error, "an FP32 mask must have shape [1,C,h,w] (probabilities), not %s",
                          text->str);
  gint64 channels = labels ? 0 : dims[1], height = dims[rank - 2], width = dims[rank - 1];
  if (!labels && (channels < 1 || channels > MAX_CHANNELS))
    return protocol_error(error, "an FP32 mask must have 1 to %d channels, not %" G_GINT64_FORMAT,
                          MAX_CHANNELS, channels);
  if (height < 1 || width < 1 || height > MAX_SIDE || width > MAX_SIDE)
    return protocol_error(error,
                          "mask size %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
                          " is outside 1..%d per side",
                          width, height, MAX_SIDE);
  mask->channels = (int)channels;
  mask->height = (int)height;
  mask->width = (int)width;
  return TRUE;
}

/* Appends the elements of data (nested arrays flattened, row-major) to out as little-endian. */
static gboolean append_json_data(JsonNode *node, TeacherDatatype datatype, GByteArray *out,
                                 gsize limit, GError **error)
{
  if (JSON_NODE_HOLDS_ARRAY(node)) {
    JsonArray *array = json_node_get_array(node);
    for (guint i = 0; i < json_array_get_length(array); i++)
      if (!append_json_data(json_array_get_element(array, i), datatype, out, limit, error))
        return FALSE;
    return TRUE;
  }
  GType type = JSON_NODE_HOLDS_VALUE(node) ? json_node_get_value_type(node) : G_TYPE_INVALID;
  if (out->len >= limit)
    return protocol_error(error, "mask data holds more elements than its shape");
  if (datatype == TEACHER_DATATYPE_FP32) {
    if (type != G_TYPE_INT64 && type != G_TYPE_DOUBLE)
      return protocol_error(error, "FP32 mask data holds a non-number");
    float value = (float)json_node_get_double(node);
    guint32 bits;
    memcpy(&bits, &value, 4);
    bits = GUINT32_TO_LE(bits);
    g_byte_array_append(out, (const guint8 *)&bits, 4);
    return TRUE;
  }
  if (type != G_TYPE_INT64)
    return protocol_error(error, "integer mask data holds a non-integer");
  gint64 value = json_node_get_int(node);
  if (datatype == TEACHER_DATATYPE_UINT8) {
    if (value < 0 || value > 255)
      return protocol_error(error, "UINT8 mask data holds %" G_GINT64_FORMAT, value);
    guint8 byte = (guint8)value;
    g_byte_array_append(out, &byte, 1);
  } else if (datatype == TEACHER_DATATYPE_INT32) {
    if (value < G_MININT32 || value > G_MAXINT32)
      return protocol_error(error, "INT32 mask data holds %" G_GINT64_FORMAT, value);
    gint32 le = GINT32_TO_LE((gint32)value);
    g_byte_array_append(out, (const guint8 *)&le, 4);
  } else {
    gint64 le = GINT64_TO_LE(value);
    g_byte_array_append(out, (const guint8 *)&le, 8);
  }
  return TRUE;
}

/* The output named "mask" and where its binary data starts (binary tensors follow the JSON
 * header in the order of their outputs); *binary_size -1 when its data is JSON. */
static JsonObject *find_mask_output(JsonArray *outputs, gsize body_size, gsize *offset,
                                    gint64 *binary_size, GError **error)
{
  g_autoptr(GString) names = g_string_new(NULL);
  for (guint i = 0; i < json_array_get_length(outputs); i++) {
    JsonNode *node = json_array_get_element(outputs, i);
    if (!JSON_NODE_HOLDS_OBJECT(node)) {
      protocol_error(error, "output %u is not an object", i);
      return NULL;
    }
    JsonObject *output = json_node_get_object(node);
    const char *name = member_string(output, "name");
    JsonNode *params = json_object_get_member(output, "parameters");
    gint64 size = member_count(params && JSON_NODE_HOLDS_OBJECT(params)
                                   ? json_node_get_object(params) : NULL,
                               "binary_data_size");
    if (size == -2) {
      protocol_error(error, "output %u has an invalid binary_data_size", i);
      return NULL;
    }
    if (g_strcmp0(name, "mask") == 0) {
      if (size < 0 && json_object_get_member(output, "data") == NULL) {
        protocol_error(error, "output mask has neither binary_data_size nor data");
        return NULL;
      }
      *binary_size = size;
      return output;
    }
    g_string_append_printf(names, "%s'%.40s'", names->len ? ", " : "", name ? name : "?");
    if (size > 0 && (guint64)size > body_size - *offset) {
      protocol_error(error, "truncated body: output %u's binary data runs past its end", i);
      return NULL;
    }
    *offset += size > 0 ? (gsize)size : 0;
  }
  protocol_error(error, "no output named \"mask\" (outputs: %s)",
                 names->len ? names->str : "none");
  return NULL;
}

/* The mask's elements, from the body (binary) or from its JSON data. */
static gboolean mask_data(GBytes *body, JsonObject *output, gsize offset, gint64 binary_size,
                          gsize max_elements, TeacherMask *mask, GError **error)
{
  gsize elements = (gsize)MAX(mask->channels, 1) * (gsize)mask->height * (gsize)mask->width;
  gsize bytes = elements * (gsize)element_size(mask->datatype);
  gsize body_size = g_bytes_get_size(body);
  if (elements > max_elements)
    return protocol_error(error,
                          "mask of %" G_GSIZE_FORMAT " elements exceeds the limit of %" G_GSIZE_FORMAT,
                          elements, max_elements);
  if (binary_size >= 0) {
    if ((gsize)binary_size != bytes)
      return protocol_error(error,
                            "mask binary_data_size %" G_GINT64_FORMAT " does not match its shape "
                            "(%" G_GSIZE_FORMAT " bytes)",
                            binary_size, bytes);
    if (bytes > body_size - offset)
      return protocol_error(error,
                            "truncated body: %" G_GSIZE_FORMAT " bytes of mask data, %" G_GSIZE_FORMAT
                            " announced",
                            body_size - offset, bytes);
    mask->data = g_bytes_new_from_bytes(body, offset, bytes);
    return TRUE;
  }
  g_autoptr(GByteArray) values = g_byte_array_sized_new((guint)MIN(bytes, G_MAXUINT));
  if (!append_json_data(json_object_get_member(output, "data"), mask->datatype, values, bytes,
                        error))
    return FALSE;
  if (values->len != bytes)
    return protocol_error(error, "mask data holds %u elements, its shape %" G_GSIZE_FORMAT,
                          values->len / element_size(mask->datatype), elements);
  mask->data = g_byte_array_free_to_bytes(g_steal_pointer(&values));
  return TRUE;
}

gboolean teacher_reply_parse(GBytes *body, const char *inference_header_length, const char *id,
                             gsize max_elements, TeacherMask *mask, GError **error)
{
  memset(mask, 0, sizeof *mask);
  gsize body_size;
  const char *data = g_bytes_get_data(body, &body_size);
  gsize json_length = 0;
  if (!header_length(inference_header_length, body_size, &json_length, error))
    return FALSE;
  g_autoptr(JsonNode) root = parse_json(data, json_length, error);
  if (root == NULL && inference_header_length == NULL && error && *error) {
    char *message = g_strconcat((*error)->message, "; without Inference-Header-Content-Length "
                                "the whole body must be JSON", NULL);
    g_free((*error)->message);
    (*error)->message = message;
  }
  if (root == NULL)
    return FALSE;
  JsonObject *header = json_node_get_object(root);
  const char *server_error = member_string(header, "error");
  if (server_error != NULL)
    return protocol_error(error, "the server answered with an error: %.200s", server_error);
  const char *reply_id = member_string(header, "id");
  if (id != NULL && reply_id != NULL && strcmp(id, reply_id) != 0)
    return protocol_error(error, "reply id '%.60s' does not match request id '%s'", reply_id, id);
  JsonNode *outputs = json_object_get_member(header, "outputs");
  if (outputs == NULL || !JSON_NODE_HOLDS_ARRAY(outputs))
    return protocol_error(error, "no \"outputs\" array in the JSON header");

  gsize offset = json_length;
  gint64 binary_size = -1;
  JsonObject *output = find_mask_output(json_node_get_array(outputs), body_size, &offset,
                                        &binary_size, error);
  return output && check_mask_header(output, mask, error) &&
         mask_data(body, output, offset, binary_size, max_elements, mask, error);
}

void teacher_mask_clear(TeacherMask *mask)
{
  g_clear_pointer(&mask->data, g_bytes_unref);
}

static gint64 label_at(const guint8 *data, TeacherDatatype datatype, gsize index)
{
  if (datatype == TEACHER_DATATYPE_UINT8)
    return data[index];
  if (datatype == TEACHER_DATATYPE_INT32) {
    gint32 v;
    memcpy(&v, data + index * 4, 4);
    return GINT32_FROM_LE(v);
  }
  gint64 v;
  memcpy(&v, data + index * 8, 8);
  return GINT64_FROM_LE(v);
}

/* Nearest neighbour, pixel centres aligned. */
static int labels_resize(const TeacherMask *mask, int out_w, int out_h, uint8_t *labels,
                         GError **error)
{
  const guint8 *data = g_bytes_get_data(mask->data, NULL);
  gint64 largest = -1;
  for (int y = 0; y < out_h; y++) {
    int sy = MIN(mask->height - 1, (int)(((gint64)y * 2 + 1) * mask->height / (2 * out_h)));
    for (int x = 0; x < out_w; x++) {
      int sx = MIN(mask->width - 1, (int)(((gint64)x * 2 + 1) * mask->width / (2 * out_w)));
      gint64 v = label_at(data, mask->datatype, (gsize)sy * mask->width + sx);
      if (v > 255) {
        g_set_error(error, TEACHER_ERROR, TEACHER_ERROR_PROTOCOL,
                    "teacher reply: class index %" G_GINT64_FORMAT " in the mask; class maps are "
                    "8-bit (0..254, 255 = ignore)", v);
        return -1;
      }
      if (v < 0 || v == 255)
        v = 255;
      else
        largest = MAX(largest, v);
      labels[(gsize)y * out_w + x] = (uint8_t)v;
    }
  }
  return (int)(largest + 1);
}

static int probabilities_resize(const TeacherMask *mask, double confidence, int out_w, int out_h,
                                uint8_t *labels, GError **error)
{
  int c_count = mask->channels, h = mask->height, w = mask->width;
  gsize count = (gsize)h * w * c_count;
  g_autofree float *p = g_new(float, count);
  memcpy(p, g_bytes_get_data(mask->data, NULL), count * sizeof(float));
  for (gsize i = 0; i < count; i++) {
    guint32 bits;
    memcpy(&bits, &p[i], 4);
    bits = GUINT32_FROM_LE(bits);
    memcpy(&p[i], &bits, 4);
    if (!isfinite(p[i])) {
      g_set_error(error, TEACHER_ERROR, TEACHER_ERROR_PROTOCOL,
                  "teacher reply: a non-finite probability in the mask");
      return -1;
    }
  }
  labels_from_probabilities(p, c_count, w, h, confidence, out_w, out_h, labels);
  return c_count == 1 ? 2 : c_count;
}

int teacher_mask_to_labels(const TeacherMask *mask, double confidence, int out_width,
                           int out_height, uint8_t *labels, GError **error)
{
  g_return_val_if_fail(mask->data != NULL && out_width > 0 && out_height > 0, -1);
  if (mask->datatype == TEACHER_DATATYPE_FP32)
    return probabilities_resize(mask, confidence, out_width, out_height, labels, error);
  return labels_resize(mask, out_width, out_height, labels, error);
}

char *teacher_error_reply_message(GBytes *body)
{
  gsize size;
  const char *data = g_bytes_get_data(body, &size);
  if (size == 0)
    return NULL;
  g_autoptr(JsonNode) root = parse_json(data, size, NULL);
  const char *message = root ? member_string(json_node_get_object(root), "error") : NULL;
  if (message == NULL)
    return NULL;
  char *clean = g_utf8_make_valid(message, -1);
  for (char *c = clean; *c; c++)
    if ((guchar)*c < 0x20 || *c == 0x7f)
      *c = ' ';
  if (g_utf8_strlen(clean, -1) > 200) {
    *g_utf8_offset_to_pointer(clean, 200) = '\0';
  }
  return clean;
}
