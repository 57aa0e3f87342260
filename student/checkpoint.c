/* checkpoint.c: safetensors checkpoints (student/README.md): an 8-byte little-endian header
 * length, a JSON header (tensor names, dtype F32, OIHW shapes, data offsets; __metadata__ with
 * the architecture and its configuration), then the raw tensors. */
#include <errno.h>
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "student_private.h"

G_STATIC_ASSERT(G_BYTE_ORDER == G_LITTLE_ENDIAN); /* floats are copied as they are on disk */

#define FORMAT_NAME "gst-distill"
#define FORMAT_VERSION "1"

/* ---- conversion between memory (HWIO) and disk (OIHW) ---------------------------------------- */

static void tensor_to_disk(const StudentTensor *t, const float *mem, float *disk)
{
  if (!t->hwio) {
    memcpy(disk, mem, sizeof(float) * t->count);
    return;
  }
  int cout = t->shape[0], cin = t->shape[1], kh = t->shape[2], kw = t->shape[3];
  for (int o = 0; o < cout; o++)
    for (int i = 0; i < cin; i++)
      for (int k = 0; k < kh * kw; k++)
        disk[((size_t)o * cin + i) * kh * kw + k] = mem[((size_t)k * cin + i) * cout + o];
}

static void tensor_from_disk(const StudentTensor *t, const float *disk, float *mem)
{
  if (!t->hwio) {
    memcpy(mem, disk, sizeof(float) * t->count);
    return;
  }
  int cout = t->shape[0], cin = t->shape[1], kh = t->shape[2], kw = t->shape[3];
  for (int o = 0; o < cout; o++)
    for (int i = 0; i < cin; i++)
      for (int k = 0; k < kh * kw; k++)
        mem[((size_t)k * cin + i) * cout + o] = disk[((size_t)o * cin + i) * kh * kw + k];
}

/* ---- writing --------------------------------------------------------------------------------- */

static char *header_json(Student *s)
{
  g_autoptr(JsonBuilder) b = json_builder_new();
  g_autofree char *config = student_config_to_json(student_get_config(s));
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "__metadata__");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "format");
  json_builder_add_string_value(b, FORMAT_NAME);
  json_builder_set_member_name(b, "version");
  json_builder_add_string_value(b, FORMAT_VERSION);
  json_builder_set_member_name(b, "arch");
  json_builder_add_string_value(b, student_arch_name(student_get_config(s)->arch));
  json_builder_set_member_name(b, "config");
  json_builder_add_string_value(b, config);
  json_builder_end_object(b);
  size_t offset = 0;
  for (int i = 0; i < student_tensor_count(s); i++) {
    const StudentTensor *t = student_tensor(s, i);
    json_builder_set_member_name(b, t->name);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "dtype");
    json_builder_add_string_value(b, "F32");
    json_builder_set_member_name(b, "shape");
    json_builder_begin_array(b);
    for (int d = 0; d < t->rank; d++)
      json_builder_add_int_value(b, t->shape[d]);
    json_builder_end_array(b);
    json_builder_set_member_name(b, "data_offsets");
    json_builder_begin_array(b);
    json_builder_add_int_value(b, (gint64)offset);
    json_builder_add_int_value(b, (gint64)(offset + t->count * sizeof(float)));
    json_builder_end_array(b);
    json_builder_end_object(b);
    offset += t->count * sizeof(float);
  }
  json_builder_end_object(b);
  g_autoptr(JsonGenerator) gen = json_generator_new();
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  json_generator_set_root(gen, root);
  return json_generator_to_data(gen, NULL);
}

/* The whole file in memory: header length, header padded with spaces so that the data starts
 * 8-byte aligned (as safetensors writers do), tensors. */
static GByteArray *serialise(Student *s, const float *values)
{
  g_autofree char *header = header_json(s);
  size_t header_len = strlen(header), padded = (header_len + 7) & ~(size_t)7;
  guint64 len_le = GUINT64_TO_LE(padded);
  GByteArray *file = g_byte_array_sized_new(8 + padded + sizeof(float) *
                                            student_param_count(s));
  g_byte_array_append(file, (const guint8 *)&len_le, 8);
  g_byte_array_append(file, (const guint8 *)header, header_len);
  for (size_t i = header_len; i < padded; i++)
    g_byte_array_append(file, (const guint8 *)" ", 1);
  float *disk = g_new(float, student_param_count(s));
  for (int i = 0; i < student_tensor_count(s); i++) {
    const StudentTensor *t = student_tensor(s, i);
    tensor_to_disk(t, values + t->offset, disk);
    g_byte_array_append(file, (const guint8 *)disk, sizeof(float) * t->count);
  }
  g_free(disk);
  return file;
}

static gboolean write_all(int fd, const guint8 *data, size_t len)
{
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0)
      errno = ENOSPC; /* write(2) makes no progress only when the device is full */
    if (n <= 0)
      return FALSE;
    data += n;
    len -= (size_t)n;
  }
  return TRUE;
}

/* The rename is durable only once the folder's entry is on disk. */
static gboolean fsync_folder(const char *path)
{
  g_autofree char *folder = g_path_get_dirname(path);
  int fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return FALSE;
  gboolean ok = fsync(fd) == 0;
  close(fd);
  return ok;
}

/* Temporary files are named after the checkpoint: "<name>.tmp-XXXXXX". */
static char *temp_prefix(const char *path)
{
  g_autofree char *name = g_path_get_basename(path);
  return g_strconcat(name, ".tmp-", NULL);
}

/* Removes the temporary files a save killed half-way left beside path. A save in progress holds
 * an exclusive lock on its temporary file, so only abandoned ones can be locked here. */
static void remove_stale_temp_files(const char *path)
{
  g_autofree char *folder = g_path_get_dirname(path);
  g_autofree char *prefix = temp_prefix(path);
  g_autoptr(GDir) dir = g_dir_open(folder, 0, NULL);
  if (!dir)
    return;
  for (const char *name; (name = g_dir_read_name(dir)) != NULL;) {
    if (!g_str_has_prefix(name, prefix) || strlen(name) != strlen(prefix) + 6)
      continue;
    g_autofree char *stale = g_build_filename(folder, name, NULL);
    int fd = open(stale, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
      continue;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
      unlink(stale);
    close(fd);
  }
}

/* replaced: the rename was done, the new file is in place. */
static gboolean save_failed(GError **error, const char *path, const char *tmp, gboolean replaced,
                            const char *what)
{
  int err = errno;
  if (tmp)
    unlink(tmp);
  const char *hint = err == ENOSPC || err == EDQUOT ? "free space on its disk"
                     : err == EFBIG ? "raise the file size limit (ulimit -f)"
                                    : "check that its folder exists and is writable";
  g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_IO, "cannot save checkpoint %s: %s: %s; %s%s",
              path, what, g_strerror(err), hint,
              replaced ? "" : " (the previous checkpoint, if any, is left intact)");
  return FALSE;
}

gboolean student_save_values(Student *s, const float *values, const char *path, GError **error)
{
  g_autoptr(GByteArray) file = serialise(s, values);
  remove_stale_temp_files(path);
  g_autofree char *tmp = g_strdup_printf("%s.tmp-XXXXXX", path);
  int fd = g_mkstemp(tmp);
  if (fd < 0)
    return save_failed(error, path, NULL, FALSE, "creating a temporary file beside it");
  if (flock(fd, LOCK_EX) != 0 || fchmod(fd, 0644) != 0 ||
      !write_all(fd, file->data, file->len) || fsync(fd) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    return save_failed(error, path, tmp, FALSE, "writing the temporary file");
  }
  /* Renamed while still open and locked, so that no other save takes it for an abandoned one. */
  if (rename(tmp, path) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    return save_failed(error, path, tmp, FALSE, "renaming the temporary file over it");
  }
  if (close(fd) != 0)
    return save_failed(error, path, NULL, TRUE, "closing it");
  if (!fsync_folder(path))
    return save_failed(error, path, NULL, TRUE, "syncing its folder");
  return TRUE;
}

gboolean student_save(Student *s, const char *path, GError **error)
{
  return student_save_values(s, student_params(s), path, error);
}

/* ---- reading --------------------------------------------------------------------------------- */

#define DAMAGED_HINT "the file is damaged or incomplete: copy or save it again"

/* Typed accessors that accept any JSON: a damaged header must give an error, not a warning. */
static const char *member_string(JsonObject *object, const char *key)
{
  JsonNode *node = json_object_get_member(object, key);
  if (!node || !JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_STRING)
    return NULL;
  return json_node_get_string(node);
}

static JsonArray *member_array(JsonObject *object, const char *key)
{
  JsonNode *node = json_object_get_member(object, key);
  return node && JSON_NODE_HOLDS_ARRAY(node) ? json_node_get_array(node) : NULL;
}

/* -1 where the element is not a non-negative integer. */
static gint64 array_int(JsonArray *array, guint index)
{
  JsonNode *node = json_array_get_element(array, index);
  if (!JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_INT64)
    return -1;
  return json_node_get_int(node) < 0 ? -1 : json_node_get_int(node);
}

typedef struct {
  const char *path;     /* or the name given to bytes in memory, for messages */
  char *owned;          /* the file's contents when read here */
  const char *contents;
  gsize length;
  JsonParser *parser;
  JsonObject *header;
  const guint8 *data; /* the tensors, after the header */
  size_t data_length;
  StudentConfig config;
} CheckpointFile;

static void checkpoint_file_clear(CheckpointFile *f)
{
  g_clear_object(&f->parser);
  g_clear_pointer(&f->owned, g_free);
}

G_GNUC_PRINTF(4, 5)
static gboolean fail(GError **error, StudentError code, const char *path, const char *format,
                     ...)
{
  va_list args;
  va_start(args, format);
  g_autofree char *what = g_strdup_vprintf(format, args);
  va_end(args);
  g_set_error(error, STUDENT_ERROR, code, "checkpoint %s: %s", path, what);
  return FALSE;
}

static gboolean read_metadata(CheckpointFile *f, GError **error)
{
  JsonNode *node = json_object_get_member(f->header, "__metadata__");
  JsonObject *metadata = node && JSON_NODE_HOLDS_OBJECT(node) ? json_node_get_object(node) : NULL;
  if (!metadata)
    return fail(error, STUDENT_ERROR_MISMATCH, f->path, "no __metadata__: not a " FORMAT_NAME
                " checkpoint; use a checkpoint written by this project");
  const char *format = member_string(metadata, "format");
  const char *version = member_string(metadata, "version");
  const char *arch = member_string(metadata, "arch");
  const char *config = member_string(metadata, "config");
  if (!format || !g_str_equal(format, FORMAT_NAME))
    return fail(error, STUDENT_ERROR_MISMATCH, f->path,
                "not a " FORMAT_NAME " checkpoint (its __metadata__ lacks \"format\": \""
                FORMAT_NAME "\"); use a checkpoint written by this project");
  if (!version || !g_str_equal(version, FORMAT_VERSION))
    return fail(error, STUDENT_ERROR_MISMATCH, f->path,
                "format version %s, this program reads version " FORMAT_VERSION
                "; use a matching release", version ? version : "(none)");
  StudentArch known;
  if (!student_arch_from_name(arch, &known))
    return fail(error, STUDENT_ERROR_MISMATCH, f->path,
                "architecture \"%s\", which this program does not know; use a checkpoint of "
                "one it does (student/README.md)", arch ? arch : "(none)");
  g_autoptr(GError) config_error = NULL;
  if (!config || !student_config_from_json(config, known, &f->config, &config_error))
    return fail(error, STUDENT_ERROR_FORMAT, f->path, "bad configuration in __metadata__: %s; "
                DAMAGED_HINT, config_error ? config_error->message : "missing");
  return TRUE;
}

/* Checks the header's length and JSON, the metadata and the configuration of the bytes in f. */
static gboolean checkpoint_file_parse(CheckpointFile *f, GError **error)
{
  const char *path = f->path;
  if (f->length < 8)
    return fail(error, STUDENT_ERROR_FORMAT, path, "truncated: %zu bytes, less than the 8-byte "
                "header length; " DAMAGED_HINT, (size_t)f->length);
  guint64 header_length;
  memcpy(&header_length, f->contents, 8);
  header_length = GUINT64_FROM_LE(header_length);
  if (header_length > f->length - 8)
    return fail(error, STUDENT_ERROR_FORMAT, path, "truncated: the header of %" G_GUINT64_FORMAT
                " bytes runs past the end of the file (%zu bytes); " DAMAGED_HINT,
                header_length, (size_t)f->length);

  f->parser = json_parser_new();
  g_autoptr(GError) json_error = NULL;
  if (!json_parser_load_from_data(f->parser, f->contents + 8, (gssize)header_length, &json_error))
    return fail(error, STUDENT_ERROR_FORMAT, path, "corrupt header (not JSON: %s); " DAMAGED_HINT,
                json_error->message);
  JsonNode *root = json_parser_get_root(f->parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root))
    return fail(error, STUDENT_ERROR_FORMAT, path, "corrupt header (not a JSON object); "
                DAMAGED_HINT);
  f->header = json_node_get_object(root);
  f->data = (const guint8 *)f->contents + 8 + header_length;
  f->data_length = f->length - 8 - header_length;
  return read_metadata(f, error);
}

static gboolean checkpoint_file_open(CheckpointFile *f, const char *path, GError **error)
{
  *f = (CheckpointFile){ .path = path };
  g_autoptr(GError) io_error = NULL;
  if (!g_file_get_contents(path, &f->owned, &f->length, &io_error))
    return fail(error, STUDENT_ERROR_IO, path, "cannot read it: %s; check the path",
                io_error->message);
  f->contents = f->owned;
  return checkpoint_file_parse(f, error);
}

static gboolean checkpoint_file_open_data(CheckpointFile *f, const void *data, size_t length,
                                          const char *name, GError **error)
{
  *f = (CheckpointFile){ .path = name, .contents = data, .length = length };
  return checkpoint_file_parse(f, error);
}

static gboolean read_offsets(const CheckpointFile *f, const char *name, JsonObject *info,
                             size_t expected_bytes, size_t *begin, GError **error)
{
  JsonArray *offsets = member_array(info, "data_offsets");
  if (!offsets || json_array_get_length(offsets) != 2)
    return fail(error, STUDENT_ERROR_FORMAT, f->path, "tensor %s has no valid data_offsets; "
                DAMAGED_HINT, name);
  gint64 start = array_int(offsets, 0), end = array_int(offsets, 1);
  if (start < 0 || end < start || (guint64)(end - start) != expected_bytes)
    return fail(error, STUDENT_ERROR_FORMAT, f->path, "tensor %s: data_offsets [%" G_GINT64_FORMAT
                ", %" G_GINT64_FORMAT "] do not span its %zu bytes; " DAMAGED_HINT, name, start,
                end, expected_bytes);
  if ((guint64)end > f->data_length)
    return fail(error, STUDENT_ERROR_FORMAT, f->path, "truncated: the data of tensor %s ends at "
                "byte %" G_GINT64_FORMAT " of the data section, which holds %zu; " DAMAGED_HINT,
                name, end, f->data_length);
  *begin = (size_t)start;
  return TRUE;
}

static char *shape_string(JsonArray *shape)
{
  GString *s = g_string_new("[");
  for (guint i = 0; shape && i < json_array_get_length(shape); i++)
    g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? "," : "", array_int(shape, i));
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

static char *expected_shape_string(const StudentTensor *t)
{
  GString *s = g_string_new("[");
  for (int d = 0; d < t->rank; d++)
    g_string_append_printf(s, "%s%d", d ? "," : "", t->shape[d]);
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

static gboolean shape_matches(const StudentTensor *t, JsonArray *shape)
{
  if (!shape || json_array_get_length(shape) != (guint)t->rank)
    return FALSE;
  for (int d = 0; d < t->rank; d++)
    if (array_int(shape, d) != t->shape[d])
      return FALSE;
  return TRUE;
}

static gboolean read_tensor(const CheckpointFile *f, const StudentTensor *t, float *values,
                            GError **error)
{
  JsonNode *node = json_object_get_member(f->header, t->name);
  if (!node || !JSON_NODE_HOLDS_OBJECT(node))
    return fail(error, STUDENT_ERROR_FORMAT, f->path, "missing tensor %s; " DAMAGED_HINT, t->name);
  JsonObject *info = json_node_get_object(node);
  const char *dtype = member_string(info, "dtype");
  if (!dtype || !g_str_equal(dtype, "F32"))
    return fail(error, STUDENT_ERROR_FORMAT, f->path, "tensor %s has dtype %s, expected F32; "
                "convert the checkpoint to float32", t->name, dtype ? dtype : "(none)");
  JsonArray *shape = member_array(info, "shape");
  if (!shape_matches(t, shape)) {
    g_autofree char *found = shape_string(shape);
    g_autofree char *expected = expected_shape_string(t);
    return fail(error, STUDENT_ERROR_FORMAT, f->path, "tensor %s has shape %s, its configuration "
                "implies %s; " DAMAGED_HINT, t->name, found, expected);
  }
  size_t begin = 0;
  if (!read_offsets(f, t->name, info, t->count * sizeof(float), &begin, error))
    return FALSE;
  float *disk = g_new(float, t->count);
  memcpy(disk, f->data + begin, t->count * sizeof(float));
  tensor_from_disk(t, disk, values + t->offset);
  g_free(disk);
  return TRUE;
}

/* All of the network's tensors and no others, into values (the layout of student_params). */
static gboolean read_tensors(const CheckpointFile *f, Student *s, float *values, GError **error)
{
  for (int i = 0; i < student_tensor_count(s); i++)
    if (!read_tensor(f, student_tensor(s, i), values, error))
      return FALSE;
  g_autoptr(GList) names = json_object_get_members(f->header);
  for (GList *n = names; n; n = n->next)
    if (!g_str_equal(n->data, "__metadata__") && !student_find_tensor(s, n->data))
      return fail(error, STUDENT_ERROR_FORMAT, f->path, "unexpected tensor %s, which its "
                  "configuration does not have; " DAMAGED_HINT, (const char *)n->data);
  return TRUE;
}

static gboolean load_into(const CheckpointFile *f, Student *s, GError **error)
{
  float *values = g_new(float, student_param_count(s));
  gboolean ok = read_tensors(f, s, values, error);
  if (ok)
    memcpy(student_params(s), values, sizeof(float) * student_param_count(s));
  g_free(values);
  return ok;
}

static Student *load_new(CheckpointFile *f, GError **error)
{
  /* Checked before the network is made, so that a damaged configuration naming huge widths is
   * refused without allocating them. */
  if (student_arch_ops(f->config.arch)->min_param_count(&f->config) * sizeof(float) >
      (double)f->data_length) {
    fail(error, STUDENT_ERROR_FORMAT, f->path, "its configuration needs more than the %zu bytes "
         "of tensors it holds; " DAMAGED_HINT, f->data_length);
    return NULL;
  }
  Student *s = student_new_zeroed(&f->config);
  if (!load_into(f, s, error))
    g_clear_pointer(&s, student_free);
  return s;
}

Student *student_load(const char *path, GError **error)
{
  CheckpointFile f;
  Student *s = checkpoint_file_open(&f, path, error) ? load_new(&f, error) : NULL;
  checkpoint_file_clear(&f);
  return s;
}

Student *student_load_data(const void *data, size_t length, const char *name, GError **error)
{
  CheckpointFile f;
  Student *s = checkpoint_file_open_data(&f, data, length, name, error) ? load_new(&f, error)
                                                                        : NULL;
  checkpoint_file_clear(&f);
  return s;
}

static gboolean config_matches(const CheckpointFile *f, Student *s, GError **error)
{
  const StudentConfig *own = student_get_config(s);
  if (f->config.arch != own->arch)
    return fail(error, STUDENT_ERROR_MISMATCH, f->path, "architecture \"%s\", the network is "
                "\"%s\"; use a checkpoint of the network's architecture",
                student_arch_name(f->config.arch), student_arch_name(own->arch));
  if (f->config.num_classes != own->num_classes)
    return fail(error, STUDENT_ERROR_MISMATCH, f->path, "checkpoint has %d classes, the network "
                "%d; use a checkpoint trained for %d classes or change the class count",
                f->config.num_classes, own->num_classes, own->num_classes);
  if (!student_config_equal(&f->config, own)) {
    g_autofree char *theirs = student_config_to_json(&f->config);
    g_autofree char *ours = student_config_to_json(own);
    return fail(error, STUDENT_ERROR_MISMATCH, f->path, "configuration %s differs from the "
                "network's %s; use a checkpoint of the same configuration", theirs, ours);
  }
  return TRUE;
}

gboolean student_load_weights(Student *s, const char *path, GError **error)
{
  CheckpointFile f;
  gboolean ok = checkpoint_file_open(&f, path, error) && config_matches(&f, s, error) &&
                load_into(&f, s, error);
  checkpoint_file_clear(&f);
  return ok;
}
