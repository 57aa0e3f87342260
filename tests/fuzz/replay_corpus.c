/* replay_corpus.c: a main() for a fuzz target built without libFuzzer: runs every file named on
 * the command line, or found in a folder named there, through LLVMFuzzerTestOneInput once, so
 * that any compiler replays the committed corpus (and crashes found earlier) as a test. */
#include <glib.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional in a target, as with libFuzzer. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static guint run_file(const char *path)
{
  g_autofree char *contents = NULL;
  gsize length = 0;
  g_autoptr(GError) error = NULL;
  if (!g_file_get_contents(path, &contents, &length, &error))
    g_error("%s", error->message);
  /* An exact-size copy, so that a sanitizer build sees reads past the input's end. */
  g_autofree uint8_t *input = g_memdup2(contents, length);
  LLVMFuzzerTestOneInput(input, length);
  return 1;
}

static int compare_paths(gconstpointer a, gconstpointer b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static guint run_folder(const char *folder)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GDir) dir = g_dir_open(folder, 0, &error);
  if (dir == NULL)
    g_error("%s", error->message);
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
  for (const char *name; (name = g_dir_read_name(dir)) != NULL;)
    g_ptr_array_add(names, g_build_filename(folder, name, NULL));
  /* The same order on every run, so that a failure repeats. */
  g_ptr_array_sort(names, compare_paths);
  guint count = 0;
  for (guint i = 0; i < names->len; i++)
    if (!g_file_test(names->pdata[i], G_FILE_TEST_IS_DIR))
      count += run_file(names->pdata[i]);
  return count;
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    g_printerr("usage: %s CORPUS-FOLDER|FILE…\n", argv[0]);
    return 2;
  }
  if (LLVMFuzzerInitialize)
    LLVMFuzzerInitialize(&argc, &argv);
  guint count = 0;
  for (int i = 1; i < argc; i++)
    count += g_file_test(argv[i], G_FILE_TEST_IS_DIR) ? run_folder(argv[i]) : run_file(argv[i]);
  if (count == 0) {
    g_printerr("%s: no inputs found\n", argv[0]);
    return 1;
  }
  g_print("%u inputs ran\n", count);
  return 0;
}
