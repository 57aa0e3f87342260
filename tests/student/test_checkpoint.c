/* test_checkpoint.c: safetensors checkpoints: bit-exact round trip, OIHW on disk, the errors of
 * damaged, mismatched and wrong-version files, saves that leave no temporary files behind, saves
 * killed at random moments (the file always loads, old or new), and a full disk (the old file
 * left intact). */
#include <errno.h>
#include <glib/gstdio.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"

static char *folder;

static char *path_in_folder(const char *name)
{
  return g_build_filename(folder, name, NULL);
}

/* A default network whose every parameter differs from its neighbours' (biases too). */
static Student *random_student(int num_classes, gboolean head_skip)
{
  StudentConfig cfg;
  student_config_default_arch(&cfg, STUDENT_ARCH_JITNET, num_classes);
  cfg.jitnet.head_skip = head_skip;
  Student *s = student_new(&cfg, 11);
  GRand *rng = g_rand_new_with_seed(5);
  for (size_t i = 0; i < student_param_count(s); i++)
    student_params(s)[i] += (float)g_rand_double_range(rng, -0.1, 0.1);
  g_rand_free(rng);
  return s;
}

static char *read_file(const char *path, gsize *length)
{
  char *data;
  g_assert_true(g_file_get_contents(path, &data, length, NULL));
  return data;
}

static void test_round_trip(void)
{
  Student *s = random_student(3, TRUE);
  g_autofree char *path = path_in_folder("round.safetensors");
  GError *error = NULL;
  g_assert_true(student_save(s, path, &error));
  g_assert_no_error(error);

  Student *loaded = student_load(path, &error);
  g_assert_no_error(error);
  g_assert_true(student_config_equal(student_get_config(loaded), student_get_config(s)));
  g_assert_cmpuint(student_param_count(loaded), ==, student_param_count(s));
  g_assert_cmpmem(student_params(loaded), sizeof(float) * student_param_count(loaded),
                  student_params(s), sizeof(float) * student_param_count(s));

  Student *other = student_new(student_get_config(s), 99);
  g_assert_true(student_load_weights(other, path, &error));
  g_assert_no_error(error);
  g_assert_cmpmem(student_params(other), sizeof(float) * student_param_count(other),
                  student_params(s), sizeof(float) * student_param_count(s));
  student_free(other);
  student_free(loaded);
  student_free(s);
}

/* The header says what student/README.md says, and weights are OIHW on disk. */
static void test_layout(void)
{
  Student *s = random_student(2, FALSE);
  g_autofree char *path = path_in_folder("layout.safetensors");
  g_assert_true(student_save(s, path, NULL));
  gsize length;
  g_autofree char *file = read_file(path, &length);
  guint64 header_length;
  memcpy(&header_length, file, 8);
  header_length = GUINT64_FROM_LE(header_length);
  g_assert_cmpuint(header_length % 8, ==, 0);
  g_autofree char *header = g_strndup(file + 8, header_length);
  g_assert_nonnull(strstr(header, "\"arch\":\"jitnet\""));
  g_assert_nonnull(strstr(header, "\"format\":\"gst-distill\""));
  g_assert_nonnull(strstr(header, "\"version\":\"1\""));
  g_assert_nonnull(strstr(header, "\"stem.1.weight\":{\"dtype\":\"F32\",\"shape\":[16,8,3,3]"));
  g_assert_nonnull(strstr(header, "{\\\"num_classes\\\":2,\\\"stem\\\":[8,16],\\\"encoder\\\":"
                                  "[32,32,64],\\\"decoder\\\":[64,32,16],\\\"head\\\":[16,8],"
                                  "\\\"head_skip\\\":false}"));
  g_assert_null(strstr(header, "encoder.1.shortcut")); /* 32 -> 32 at stride 2: subsampling */
  g_assert_cmpuint(length, ==, 8 + header_length + sizeof(float) * student_param_count(s));

  /* stem.1.weight[o=5][i=3][y=2][x=1] on disk is HWIO[y][x][i][o] in memory. */
  const StudentTensor *t = student_find_tensor(s, "stem.1.weight");
  g_assert_true(t->hwio);
  const char *data = file + 8 + header_length;
  size_t disk_offset = 0;
  for (int i = 0; i < student_tensor_count(s); i++)
    if (student_tensor(s, i) != t)
      disk_offset += student_tensor(s, i)->count;
    else
      break;
  float on_disk;
  memcpy(&on_disk, data + sizeof(float) * (disk_offset + ((5 * 8 + 3) * 3 + 2) * 3 + 1), 4);
  float in_memory = student_params(s)[t->offset + ((2 * 3 + 1) * 8 + 3) * 16 + 5];
  g_assert_cmpfloat(on_disk, ==, in_memory);
  student_free(s);
}

static void assert_load_fails(const char *path, int code, const char *words)
{
  GError *error = NULL;
  Student *s = student_load(path, &error);
  g_assert_null(s);
  g_assert_error(error, STUDENT_ERROR, code);
  g_assert_nonnull(strstr(error->message, path));
  if (words && !strstr(error->message, words))
    g_error("\"%s\" does not say \"%s\"", error->message, words);
  g_test_message("%s", error->message);
  g_error_free(error);
}

static void test_mismatch(void)
{
  Student *two = random_student(2, FALSE);
  g_autofree char *path = path_in_folder("two.safetensors");
  g_assert_true(student_save(two, path, NULL));
  GError *error = NULL;

  Student *three = random_student(3, FALSE);
  g_assert_false(student_load_weights(three, path, &error));
  g_assert_error(error, STUDENT_ERROR, STUDENT_ERROR_MISMATCH);
  g_assert_nonnull(strstr(error->message, "checkpoint has 2 classes, the network 3"));
  g_assert_nonnull(strstr(error->message, path));
  g_clear_error(&error);

  Student *skip = random_student(2, TRUE);
  float before = student_params(skip)[0];
  g_assert_false(student_load_weights(skip, path, &error));
  g_assert_error(error, STUDENT_ERROR, STUDENT_ERROR_MISMATCH);
  g_assert_nonnull(strstr(error->message, "configuration"));
  g_assert_cmpfloat(student_params(skip)[0], ==, before); /* left as it was */
  g_clear_error(&error);
  student_free(skip);
  student_free(three);
  student_free(two);
}

static void test_missing_file(void)
{
  g_autofree char *path = path_in_folder("no-such.safetensors");
  assert_load_fails(path, STUDENT_ERROR_IO, "check the path");
}

static void test_truncated(void)
{
  Student *s = random_student(2, FALSE);
  g_autofree char *path = path_in_folder("whole.safetensors");
  g_autofree char *cut_path = path_in_folder("cut.safetensors");
  g_assert_true(student_save(s, path, NULL));
  gsize length;
  g_autofree char *file = read_file(path, &length);
  guint64 header_length;
  memcpy(&header_length, file, 8);
  header_length = GUINT64_FROM_LE(header_length);
  gsize cuts[] = { 0, 1, 7, 8, 9, 100, 8 + header_length / 2, 8 + header_length - 1,
                   8 + header_length, 8 + header_length + 1, 8 + header_length + 4000,
                   length / 2, length - 4, length - 1 };
  for (guint i = 0; i < G_N_ELEMENTS(cuts); i++) {
    g_assert_true(g_file_set_contents(cut_path, file, (gssize)cuts[i], NULL));
    assert_load_fails(cut_path, STUDENT_ERROR_FORMAT, NULL);
  }
  student_free(s);
}

/* Writes a copy of the checkpoint at path with its header's `from` replaced by `to`. */
static char *edited_copy(const char *path, const char *from, const char *to)
{
  gsize length;
  g_autofree char *file = read_file(path, &length);
  guint64 header_length;
  memcpy(&header_length, file, 8);
  header_length = GUINT64_FROM_LE(header_length);
  g_autofree char *header = g_strndup(file + 8, header_length);
  g_assert_nonnull(strstr(header, from));
  GString *edited = g_string_new(header);
  g_string_replace(edited, from, to, 1);
  guint64 new_length = GUINT64_TO_LE(edited->len);
  GByteArray *out = g_byte_array_new();
  g_byte_array_append(out, (const guint8 *)&new_length, 8);
  g_byte_array_append(out, (const guint8 *)edited->str, edited->len);
  g_byte_array_append(out, (const guint8 *)file + 8 + header_length, length - 8 - header_length);
  char *edited_path = path_in_folder("edited.safetensors");
  g_assert_true(g_file_set_contents(edited_path, (const char *)out->data, out->len, NULL));
  g_byte_array_unref(out);
  g_string_free(edited, TRUE);
  return edited_path;
}

static void test_damaged_header(void)
{
  Student *s = random_student(2, FALSE);
  g_autofree char *path = path_in_folder("good.safetensors");
  g_assert_true(student_save(s, path, NULL));
  struct {
    const char *from, *to;
    int code;
    const char *words;
  } cases[] = {
    { "{\"__metadata__\"", "#!garbage", STUDENT_ERROR_FORMAT, "corrupt header" },
    { "{\"__metadata__\"", "[{\"__metadata__\"", STUDENT_ERROR_FORMAT, "corrupt header" },
    { "\"stem.0.bias\"", "\"stem.0.vias\"", STUDENT_ERROR_FORMAT, "missing tensor stem.0.bias" },
    { "\"shape\":[16,8,3,3]", "\"shape\":[32,8,3,1]", STUDENT_ERROR_FORMAT, "shape [32,8,3,1]" },
    { "\"dtype\":\"F32\"", "\"dtype\":\"F16\"", STUDENT_ERROR_FORMAT, "dtype F16" },
    { "\"data_offsets\":[0,", "\"data_offsets\":[4,", STUDENT_ERROR_FORMAT, "data_offsets" },
    { "\"arch\":\"jitnet\"", "\"arch\":\"resnet\"", STUDENT_ERROR_MISMATCH, "architecture" },
    { "\"format\":\"gst-distill\"", "\"format\":\"other\"", STUDENT_ERROR_MISMATCH, NULL },
    { "\\\"head_skip\\\":false", "\\\"head_skip\\\":7", STUDENT_ERROR_FORMAT, "head_skip" },
    { "\"version\":\"1\"", "\"version\":\"2\"", STUDENT_ERROR_MISMATCH, "format version 2" },
    { "\"version\":\"1\"", "\"version\":1", STUDENT_ERROR_MISMATCH, "format version (none)" },
    { "\\\"encoder\\\":[32,32,64]", "\\\"encoder\\\":[65536,65536,65536]",
      STUDENT_ERROR_FORMAT, "needs more than" },
  };
  for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *edited = edited_copy(path, cases[i].from, cases[i].to);
    assert_load_fails(edited, cases[i].code, cases[i].words);
  }
  student_free(s);
}

static int count_entries(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  int n = 0;
  while (g_dir_read_name(d))
    n++;
  g_dir_close(d);
  return n;
}

static void test_atomic_save(void)
{
  g_autofree char *dir = path_in_folder("atomic");
  g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
  g_autofree char *path = g_build_filename(dir, "student.safetensors", NULL);
  Student *s = random_student(2, FALSE);
  GError *error = NULL;
  g_assert_true(student_save(s, path, &error));
  student_params(s)[0] += 1.0f;
  g_assert_true(student_save(s, path, &error)); /* over the old one */
  g_assert_no_error(error);
  g_assert_cmpint(count_entries(dir), ==, 1);
  Student *loaded = student_load(path, &error);
  g_assert_no_error(error);
  g_assert_cmpfloat(student_params(loaded)[0], ==, student_params(s)[0]);

  g_autofree char *nowhere = g_build_filename(dir, "missing", "student.safetensors", NULL);
  g_assert_false(student_save(s, nowhere, &error));
  g_assert_error(error, STUDENT_ERROR, STUDENT_ERROR_IO);
  g_assert_nonnull(strstr(error->message, nowhere));
  g_clear_error(&error);
  g_assert_cmpint(count_entries(dir), ==, 1);
  student_free(loaded);
  student_free(s);
}

/* ---- saves killed half-way ---------------------------------------------------------------- */

enum { KILLS = 60 };

static gboolean holds(Student *loaded, Student *expected)
{
  return memcmp(student_params(loaded), student_params(expected),
                sizeof(float) * student_param_count(expected)) == 0;
}

/* The child: saves old and new weights in turn over path, for ever, and says on `ready` when the
 * first save is done. */
static G_GNUC_NORETURN void save_forever(Student *old_weights, Student *new_weights,
                                        const char *path, int ready)
{
  for (guint64 i = 0;; i++) {
    if (!student_save(i % 2 ? old_weights : new_weights, path, NULL))
      _exit(3);
    if (i == 0 && write(ready, "s", 1) != 1)
      _exit(4);
  }
}

/* A child saving in a loop is killed with SIGKILL at a random moment, KILLS times: after each
 * kill the file loads and holds the old or the new weights, and temporary files of killed saves
 * never pile up (each save removes those left before it). */
static void test_killed_saves(void)
{
  g_autofree char *dir = path_in_folder("killed");
  g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
  g_autofree char *path = g_build_filename(dir, "student.safetensors", NULL);
  Student *old_weights = random_student(2, FALSE);
  Student *new_weights = random_student(2, FALSE);
  for (size_t i = 0; i < student_param_count(new_weights); i++)
    student_params(new_weights)[i] += 1.0f;
  g_assert_true(student_save(old_weights, path, NULL));
  GRand *rng = g_rand_new_with_seed(17);
  guint saw_old = 0, saw_new = 0, left_temp = 0;

  for (guint k = 0; k < KILLS; k++) {
    int ready[2];
    g_assert_cmpint(pipe(ready), ==, 0);
    fflush(stdout);
    pid_t child = fork();
    g_assert_cmpint(child, >=, 0);
    if (child == 0) {
      close(ready[0]);
      save_forever(old_weights, new_weights, path, ready[1]);
    }
    close(ready[1]);
    char byte;
    g_assert_cmpint(read(ready[0], &byte, 1), ==, 1);
    close(ready[0]);
    /* A save takes a few milliseconds (most of it fsync): anywhere in the next few saves. */
    g_usleep(g_rand_int_range(rng, 0, 20000));
    g_assert_cmpint(kill(child, SIGKILL), ==, 0);
    int status;
    g_assert_cmpint(waitpid(child, &status, 0), ==, child);
    g_assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    GError *error = NULL;
    Student *loaded = student_load(path, &error);
    g_assert_no_error(error);
    gboolean is_old = holds(loaded, old_weights), is_new = holds(loaded, new_weights);
    g_assert_true(is_old || is_new);
    saw_old += is_old;
    saw_new += is_new;
    student_free(loaded);
    /* The checkpoint, and at most the temporary file of the save that was killed. */
    int entries = count_entries(dir);
    g_assert_cmpint(entries, <=, 2);
    left_temp += entries == 2;
  }
  g_test_message("%d kills: the file held the old weights %u times, the new %u times; %u kills "
                 "left a temporary file, removed by the next save", KILLS, saw_old, saw_new,
                 left_temp);
  g_assert_true(student_save(old_weights, path, NULL));
  g_assert_cmpint(count_entries(dir), ==, 1);
  g_rand_free(rng);
  student_free(new_weights);
  student_free(old_weights);
}

/* ---- a full disk ---------------------------------------------------------------------------- */

/* In place: /proc files cannot be replaced as g_file_set_contents does. */
static gboolean write_text(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");
  if (!f)
    return FALSE;
  gboolean ok = fputs(text, f) >= 0;
  return fclose(f) == 0 && ok;
}

/* In a new user namespace, as ourselves (so that the files we make are ours), and a new mount
 * namespace. */
static gboolean enter_namespaces(void)
{
  uid_t uid = getuid();
  gid_t gid = getgid();
  if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
    return FALSE;
  g_autofree char *uid_map = g_strdup_printf("%u %u 1", (unsigned)uid, (unsigned)uid);
  g_autofree char *gid_map = g_strdup_printf("%u %u 1", (unsigned)gid, (unsigned)gid);
  return write_text("/proc/self/setgroups", "deny") && write_text("/proc/self/uid_map", uid_map) &&
         write_text("/proc/self/gid_map", gid_map) &&
         mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;
}

/* In a child (a new mount namespace or a lowered limit stays there): leaves path (in dir) holding
 * old_weights, a checkpoint of `bytes` bytes, with no room for another. A tmpfs too small for a
 * second copy is mounted over dir when an unprivileged user namespace allows it (the kernel
 * says ENOSPC, as on a full disk); otherwise the file size limit (RLIMIT_FSIZE, SIGXFSZ ignored)
 * is set below the checkpoint's size (the kernel says EFBIG). Returns which. */
static const char *fill_disk(const char *dir, const char *path, Student *old_weights,
                             gsize bytes, gboolean *mounted)
{
  g_autofree char *options = g_strdup_printf("size=%zu", bytes + bytes / 2);
  *mounted = enter_namespaces() && mount("tmpfs", dir, "tmpfs", 0, options) == 0;
  GError *error = NULL;
  gboolean saved = student_save(old_weights, path, &error);
  g_assert_no_error(error);
  g_assert_true(saved);
  if (*mounted)
    return "a tmpfs of 1.5 times the checkpoint's size";
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit limit = { .rlim_cur = bytes / 2, .rlim_max = bytes / 2 };
  g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &limit), ==, 0);
  return "a file size limit (RLIMIT_FSIZE) of half the checkpoint's size";
}

static void disk_full_child(const char *dir)
{
  Student *old_weights = random_student(2, FALSE);
  Student *new_weights = random_student(2, TRUE);
  g_autofree char *path = g_build_filename(dir, "student.safetensors", NULL);
  g_assert_true(student_save(old_weights, path, NULL));
  gsize bytes;
  g_free(read_file(path, &bytes));
  g_unlink(path);

  gboolean mounted;
  const char *how = fill_disk(dir, path, old_weights, bytes, &mounted);
  GError *error = NULL;
  g_assert_false(student_save(new_weights, path, &error));
  g_assert_error(error, STUDENT_ERROR, STUDENT_ERROR_IO);
  g_test_message("full disk (%s): %s", how, error->message);
  g_assert_nonnull(strstr(error->message, path));
  g_assert_nonnull(strstr(error->message, mounted ? "free space" : "file size limit"));
  g_assert_nonnull(strstr(error->message, "left intact"));
  g_clear_error(&error);
  g_assert_cmpint(count_entries(dir), ==, 1); /* no temporary file left */
  Student *loaded = student_load(path, &error);
  g_assert_no_error(error);
  g_assert_true(holds(loaded, old_weights));
  student_free(loaded);
  if (mounted)
    g_assert_cmpint(umount(dir), ==, 0);
  else
    g_unlink(path);
  student_free(new_weights);
  student_free(old_weights);
}

static void test_disk_full(void)
{
  g_autofree char *dir = path_in_folder("full");
  g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
  fflush(stdout);
  pid_t child = fork();
  g_assert_cmpint(child, >=, 0);
  if (child == 0) {
    disk_full_child(dir);
    fflush(stdout);
    _exit(0);
  }
  int status;
  g_assert_cmpint(waitpid(child, &status, 0), ==, child);
  g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_config_json(void)
{
  StudentConfig cfg, parsed;
  student_config_default_arch(&cfg, STUDENT_ARCH_JITNET, 4);
  cfg.jitnet.head_skip = TRUE;
  g_autofree char *json = student_config_to_json(&cfg);
  g_assert_cmpstr(json, ==, "{\"num_classes\":4,\"stem\":[8,16],\"encoder\":[32,32,64],"
                            "\"decoder\":[64,32,16],\"head\":[16,8],\"head_skip\":true}");
  g_assert_true(student_config_from_json(json, STUDENT_ARCH_JITNET, &parsed, NULL));
  g_assert_true(student_config_equal(&cfg, &parsed));
  /* Keys left out keep their defaults. */
  g_assert_true(student_config_from_json("{\"encoder\":[16,16,48]}", STUDENT_ARCH_JITNET,
                                         &parsed, NULL));
  g_assert_cmpint(parsed.jitnet.encoder[2], ==, 48);
  g_assert_cmpint(parsed.jitnet.decoder[0], ==, 64);
  g_assert_cmpint(parsed.num_classes, ==, 2);
  GError *error = NULL;
  g_assert_false(student_config_from_json("{\"encodr\":[1,2,3]}", STUDENT_ARCH_JITNET,
                                          &parsed, &error));
  g_assert_error(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT);
  g_clear_error(&error);
  g_assert_false(student_config_from_json("{\"stem\":[8]}", STUDENT_ARCH_JITNET, &parsed,
                                          &error));
  g_clear_error(&error);
  g_assert_false(student_config_from_json("{\"num_classes\":300}", STUDENT_ARCH_JITNET,
                                          &parsed, &error));
  g_clear_error(&error);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  folder = g_dir_make_tmp("test-checkpoint-XXXXXX", NULL);
  g_test_add_func("/student/checkpoint/round-trip", test_round_trip);
  g_test_add_func("/student/checkpoint/layout", test_layout);
  g_test_add_func("/student/checkpoint/mismatch", test_mismatch);
  g_test_add_func("/student/checkpoint/missing-file", test_missing_file);
  g_test_add_func("/student/checkpoint/truncated", test_truncated);
  g_test_add_func("/student/checkpoint/damaged-header", test_damaged_header);
  g_test_add_func("/student/checkpoint/atomic-save", test_atomic_save);
  g_test_add_func("/student/checkpoint/config-json", test_config_json);
  g_test_add_func("/student/checkpoint/killed-saves", test_killed_saves);
  g_test_add_func("/student/checkpoint/disk-full", test_disk_full);
  int status = g_test_run();
  g_autofree char *rm = g_strdup_printf("rm -rf '%s'", folder);
  if (system(rm) != 0)
    g_printerr("could not remove %s\n", folder);
  return status;
}
