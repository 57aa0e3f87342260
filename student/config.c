/* config.c: StudentConfig, its defaults and its compact JSON form (student/README.md). */
#include <json-glib/json-glib.h>

#include "student.h"

G_DEFINE_QUARK(student-error-quark, student_error)

void student_config_default(StudentConfig *cfg, int num_classes)
{
  *cfg = (StudentConfig){
    .num_classes = num_classes,
    .stem = { 8, 32 },
    .encoder = { 64, 64, 128 },
    .decoder = { 128, 64, 32 },
    .head = { 16, 8 },
    .head_skip = FALSE,
  };
}

char *student_config_to_json(const StudentConfig *cfg)
{
  return g_strdup_printf("{\"num_classes\":%d,\"stem\":[%d,%d],\"encoder\":[%d,%d,%d],"
                         "\"decoder\":[%d,%d,%d],\"head\":[%d,%d],\"head_skip\":%s}",
                         cfg->num_classes, cfg->stem[0], cfg->stem[1], cfg->encoder[0],
                         cfg->encoder[1], cfg->encoder[2], cfg->decoder[0], cfg->decoder[1],
                         cfg->decoder[2], cfg->head[0], cfg->head[1],
                         cfg->head_skip ? "true" : "false");
}

static gboolean read_positive_int(JsonNode *node, const char *key, int *out, GError **error)
{
  if (!JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_INT64 ||
      json_node_get_int(node) < 1 || json_node_get_int(node) > 65536) {
    g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT,
                "configuration: \"%s\" must hold positive integers", key);
    return FALSE;
  }
  *out = (int)json_node_get_int(node);
  return TRUE;
}

static gboolean read_widths(JsonNode *node, const char *key, int *widths, guint count,
                            GError **error)
{
  JsonArray *array = JSON_NODE_HOLDS_ARRAY(node) ? json_node_get_array(node) : NULL;
  if (!array || json_array_get_length(array) != count) {
    g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT,
                "configuration: \"%s\" must be an array of %u widths", key, count);
    return FALSE;
  }
  for (guint i = 0; i < count; i++)
    if (!read_positive_int(json_array_get_element(array, i), key, &widths[i], error))
      return FALSE;
  return TRUE;
}

static gboolean read_member(const char *key, JsonNode *node, StudentConfig *cfg, GError **error)
{
  if (g_str_equal(key, "num_classes")) {
    if (!read_positive_int(node, key, &cfg->num_classes, error))
      return FALSE;
    /* Labels are bytes and 255 means "ignore". */
    if (cfg->num_classes > 255) {
      g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT,
                  "configuration: num_classes %d is more than 255", cfg->num_classes);
      return FALSE;
    }
    return TRUE;
  }
  if (g_str_equal(key, "stem"))
    return read_widths(node, key, cfg->stem, 2, error);
  if (g_str_equal(key, "encoder"))
    return read_widths(node, key, cfg->encoder, 3, error);
  if (g_str_equal(key, "decoder"))
    return read_widths(node, key, cfg->decoder, 3, error);
  if (g_str_equal(key, "head"))
    return read_widths(node, key, cfg->head, 2, error);
  if (g_str_equal(key, "head_skip")) {
    if (!JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_BOOLEAN) {
      g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT,
                  "configuration: \"head_skip\" must be true or false");
      return FALSE;
    }
    cfg->head_skip = json_node_get_boolean(node);
    return TRUE;
  }
  g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT,
              "configuration: unknown key \"%s\" (known: num_classes, stem, encoder, decoder, "
              "head, head_skip)", key);
  return FALSE;
}

/* Keys left out keep their defaults, so a configuration names only what it changes. */
gboolean student_config_from_json(const char *json, StudentConfig *cfg, GError **error)
{
  g_autoptr(JsonParser) parser = json_parser_new();
  g_autoptr(GError) parse_error = NULL;
  if (!json_parser_load_from_data(parser, json, -1, &parse_error)) {
    g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT, "configuration is not JSON: %s",
                parse_error->message);
    return FALSE;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
    g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT,
                "configuration must be a JSON object");
    return FALSE;
  }
  StudentConfig parsed;
  student_config_default(&parsed, 2);
  JsonObject *object = json_node_get_object(root);
  g_autoptr(GList) keys = json_object_get_members(object);
  for (GList *k = keys; k; k = k->next)
    if (!read_member(k->data, json_object_get_member(object, k->data), &parsed, error))
      return FALSE;
  *cfg = parsed;
  return TRUE;
}

gboolean student_config_equal(const StudentConfig *a, const StudentConfig *b)
{
  return a->num_classes == b->num_classes && a->stem[0] == b->stem[0] &&
         a->stem[1] == b->stem[1] && a->encoder[0] == b->encoder[0] &&
         a->encoder[1] == b->encoder[1] && a->encoder[2] == b->encoder[2] &&
         a->decoder[0] == b->decoder[0] && a->decoder[1] == b->decoder[1] &&
         a->decoder[2] == b->decoder[2] && a->head[0] == b->head[0] &&
         a->head[1] == b->head[1] && !a->head_skip == !b->head_skip;
}
