/* shipped.c: the weights shipped with gst-distill, and the student a stream starts from
 * (student.h, student_load_start). */
#include "student.h"

char *student_shipped_path(StudentArch arch, int num_classes)
{
  g_autofree char *name = g_strdup_printf("%s-%dclass.safetensors", student_arch_name(arch),
                                          num_classes);
  const char *env = g_getenv("DISTILL_WEIGHTS_DIR");
  const char *dirs[] = { DISTILL_INSTALLED_WEIGHTS_DIR, DISTILL_SOURCE_WEIGHTS_DIR };

  for (guint i = 0; i < G_N_ELEMENTS(dirs); i++) {
    char *path = g_build_filename(env ? env : dirs[i], name, NULL);
    if (g_file_test(path, G_FILE_TEST_IS_REGULAR))
      return path;
    g_free(path);
    if (env)
      break;
  }
  return NULL;
}

/* The checkpoint at path as a student of num_classes classes; NULL and why when it is not one. */
static Student *load_fitting(const char *path, int num_classes, GError **error)
{
  Student *student = student_load(path, error);
  if (student && student_get_config(student)->num_classes != num_classes) {
    g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_MISMATCH,
                "checkpoint %s: it is a student of %d classes, not %d", path,
                student_get_config(student)->num_classes, num_classes);
    g_clear_pointer(&student, student_free);
  }
  return student;
}

Student *student_load_start(const char *checkpoint, int num_classes, char **origin,
                            GError **refused, GError **error)
{
  g_autoptr(GError) checkpoint_error = NULL;
  g_autoptr(GError) shipped_error = NULL;
  StudentConfig cfg;
  student_config_default(&cfg, num_classes);
  g_autofree char *shipped = student_shipped_path(cfg.arch, num_classes);
  Student *student;

  *origin = NULL;
  if (checkpoint) {
    student = load_fitting(checkpoint, num_classes, &checkpoint_error);
    if (student) {
      *origin = g_strdup(checkpoint);
      return student;
    }
  }
  if (!shipped && !checkpoint)
    return student_new(&cfg, 1);
  if (!shipped) {
    g_set_error(error, STUDENT_ERROR, checkpoint_error->code, "%s; there are no shipped weights "
                "of %d classes to fall back on", checkpoint_error->message, num_classes);
    return NULL;
  }

  student = load_fitting(shipped, num_classes, &shipped_error);
  if (!student) {
    if (checkpoint_error)
      g_set_error(error, STUDENT_ERROR, shipped_error->code, "%s; nor the shipped weights: %s",
                  checkpoint_error->message, shipped_error->message);
    else
      g_set_error(error, STUDENT_ERROR, shipped_error->code, "the shipped weights: %s",
                  shipped_error->message);
    return NULL;
  }
  if (checkpoint_error)
    g_propagate_error(refused, g_steal_pointer(&checkpoint_error));
  *origin = g_steal_pointer(&shipped);
  return student;
}
