/* config.c: StudentConfig: the architectures, their defaults and the compact JSON form of a
 * configuration, read and written from each architecture's table of keys (student/README.md). */
#include <string.h>

#include "student_private.h"

G_DEFINE_QUARK(student-error-quark, student_error)

static const StudentArchOps *const arch_ops[STUDENT_ARCH_COUNT] = {
  [STUDENT_ARCH_JITNET] = &jitnet_ops,
  [STUDENT_ARCH_MOBILENET] = &mobilenet_ops,
  [STUDENT_ARCH_REPGHOST] = &repghost_ops,
};

const StudentArchOps *student_arch_ops(StudentArch arch)
{
  g_return_val_if_fail(arch >= 0 && arch < STUDENT_ARCH_COUNT, &jitnet_ops);
  return arch_ops[arch];
}

const char *student_arch_name(StudentArch arch)
{
  return student_arch_ops(arch)->name;
}

gboolean student_arch_from_name(const char *name, StudentArch *arch)
{
  for (int a = 0; a < STUDENT_ARCH_COUNT; a++)
    if (name && g_str_equal(name, arch_ops[a]->name)) {
      *arch = (StudentArch)a;
      return TRUE;
    }
  return FALSE;
}

void student_config_default_arch(StudentConfig *cfg, StudentArch arch, int num_classes)
{
  memset(cfg, 0, sizeof *cfg);
  cfg->arch = arch;
  cfg->num_classes = num_classes;
  student_arch_ops(arch)->config_default(cfg);
}

void student_config_default(StudentConfig *cfg, int num_classes)
{
  student_config_default_arch(cfg, STUDENT_ARCH_JITNET, num_classes);
}

/* ---- the keys ------------------------------------------------------------------------------- */

static int *key_widths(StudentConfig *cfg, const StudentConfigKey *key)
{
  return (int *)((char *)cfg + key->offset);
}

static gboolean *key_flag(StudentConfig *cfg, const StudentConfigKey *key)
{
  return (gboolean *)((char *)cfg + key->offset);
}

char *student_config_to_json(const StudentConfig *cfg)
{
  const StudentArchOps *ops = student_arch_ops(cfg->arch);
  StudentConfig *c = (StudentConfig *)cfg;
  GString *json = g_string_new(NULL);
  g_string_append_printf(json, "{\"num_classes\":%d", cfg->num_classes);
  for (int k = 0; k < ops->n_keys; k++) {
    const StudentConfigKey *key = &ops->keys[k];
    g_string_append_printf(json, ",\"%s\":", key->name);
    if (!key->count) {
      g_string_append(json, *key_flag(c, key) ? "true" : "false");
      continue;
    }
    for (int i = 0; i < key->count; i++)
      g_string_append_printf(json, "%c%d", i ? ',' : '[', key_widths(c, key)[i]);
    g_string_append_c(json, ']');
  }
  g_string_append_c(json, '}');
  return g_string_free(json, FALSE);
}

gboolean student_config_equal(const StudentConfig *a, const StudentConfig *b)
{
  if (a->arch != b->arch || a->num_classes != b->num_classes)
    return FALSE;
  const StudentArchOps *ops = student_arch_ops(a->arch);
  for (int k = 0; k < ops->n_keys; k++) {
    const StudentConfigKey *key = &ops->keys[k];
    if (!key->count) {
      if (!*key_flag((StudentConfig *)a, key) != !*key_flag((StudentConfig *)b, key))
        return FALSE;
      continue;
    }
    if (memcmp(key_widths((StudentConfig *)a, key), key_widths((StudentConfig *)b, key),
               sizeof(int) * key->count) != 0)
      return FALSE;
  }
  return TRUE;
}

/* ---- reading -------------------------------------------------------------------------------- */

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

static gboolean read_widths(JsonNode *node, const char *key, int *widths, int count,
                            GError **error)
{
  JsonArray *array = JSON_NODE_HOLDS_ARRAY(node) ? json_node_get_array(node) : NULL;
  if (!array || json_array_get_length(array) != (guint)count) {
    g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT,
                "configuration: \"%s\" must be an array of %d widths", key, count);
    return FALSE;
  }
  for (int i = 0; i < count; i++)
    if (!read_positive_int(json_array_get_element(array, (guint)i), key, &widths[i], error))
      return FALSE;
  return TRUE;
}

static gboolean read_flag(JsonNode *node, const char *key, gboolean *out, GError **error)
{
  if (!JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_BOOLEAN) {
    g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT,
                "configuration: \"%s\" must be true or false", key);
    return FALSE;
  }
  *out = json_node_get_boolean(node);
  return TRUE;
}

static gboolean unknown_key(const StudentArchOps *ops, const char *name, GError **error)
{
  g_autoptr(GString) known = g_string_new("num_classes");
  for (int k = 0; k < ops->n_keys; k++)
    g_string_append_printf(known, ", %s", ops->keys[k].name);
  g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT,
              "configuration: unknown key \"%s\" (%s knows: %s)", name, ops->name, known->str);
  return FALSE;
}

static gboolean read_member(const StudentArchOps *ops, const char *name, JsonNode *node,
                            StudentConfig *cfg, GError **error)
{
  if (g_str_equal(name, "num_classes")) {
    if (!read_positive_int(node, name, &cfg->num_classes, error))
      return FALSE;
    /* Labels are bytes and 255 means "ignore". */
    if (cfg->num_classes > 255) {
      g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT,
                  "configuration: num_classes %d is more than 255", cfg->num_classes);
      return FALSE;
    }
    return TRUE;
  }
  for (int k = 0; k < ops->n_keys; k++) {
    const StudentConfigKey *key = &ops->keys[k];
    if (!g_str_equal(name, key->name))
      continue;
    return key->count ? read_widths(node, name, key_widths(cfg, key), key->count, error)
                      : read_flag(node, name, key_flag(cfg, key), error);
  }
  return unknown_key(ops, name, error);
}

/* Keys left out keep their defaults, so a configuration names only what it changes. */
gboolean student_config_from_json(const char *json, StudentArch arch, StudentConfig *cfg,
                                  GError **error)
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
  student_config_default_arch(&parsed, arch, 2);
  JsonObject *object = json_node_get_object(root);
  g_autoptr(GList) keys = json_object_get_members(object);
  for (GList *k = keys; k; k = k->next)
    if (!read_member(student_arch_ops(arch), k->data, json_object_get_member(object, k->data),
                     &parsed, error))
      return FALSE;
  *cfg = parsed;
  return TRUE;
}
