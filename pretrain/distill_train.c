/* distill-train: trains the student offline on teacher-labelled frames (pretrain/label's cache),
 * for a checkpoint that gives online distillation a good start (data/weights/).
 *
 *   distill-train --manifest ~/.cache/gst-distill/pretrain/manifest.txt \
 *       --out data/weights/jitnet-2class.safetensors --steps 3000
 *
 * Ctrl-C (or SIGTERM) stops after the current step and saves the checkpoint; --resume FILE
 * --start-step N goes on from it with the same schedule. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "train.h"

static void on_stop_signal(int sig)
{
  train_stop_requested = 1;
}

static gboolean parse_size(const char *text, int *w, int *h)
{
  char *end;
  long a = strtol(text, &end, 10);
  if (*end != 'x')
    return FALSE;
  long b = strtol(end + 1, &end, 10);
  if (*end || a < 32 || b < 32 || a > 4096 || b > 4096)
    return FALSE;
  *w = (int)a;
  *h = (int)b;
  return TRUE;
}

int main(int argc, char **argv)
{
  TrainConfig cfg;
  train_config_default(&cfg);
  char *manifest = NULL, *out = NULL, *resume = NULL, *crop = NULL;
  char *arch = NULL, *config_json = NULL;
  char **held_out_sources = NULL;
  int classes = 2, threads = 0, held_out_every = 10;
  gint64 seed = 1;
  GOptionEntry entries[] = {
    { "manifest", 'm', 0, G_OPTION_ARG_FILENAME, &manifest, "frames and labels (pretrain/label)", "FILE" },
    { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "checkpoint to write (atomically)", "FILE" },
    { "resume", 0, 0, G_OPTION_ARG_FILENAME, &resume, "start from this checkpoint", "FILE" },
    { "start-step", 0, 0, G_OPTION_ARG_INT, &cfg.start_step, "first step (with --resume)", "N" },
    { "steps", 's', 0, G_OPTION_ARG_INT, &cfg.steps, "last step (default 2000)", "N" },
    { "batch", 'b', 0, G_OPTION_ARG_INT, &cfg.batch, "crops per optimiser step (default 4)", "N" },
    { "crop", 0, 0, G_OPTION_ARG_STRING, &crop, "training input size (default 320x240)", "WxH" },
    { "lr", 0, 0, G_OPTION_ARG_DOUBLE, &cfg.learning_rate, "Adam learning rate, cosine-decayed (default 2e-3)", "R" },
    { "weight-decay", 0, 0, G_OPTION_ARG_DOUBLE, &cfg.weight_decay, "L2 weight decay (default 0)", "D" },
    { "fg-weight", 0, 0, G_OPTION_ARG_DOUBLE, &cfg.foreground_weight, "loss weight of foreground pixels (default 1)", "W" },
    { "confidence", 0, 0, G_OPTION_ARG_DOUBLE, &cfg.augment.confidence, "teacher probability under which a pixel is ignored (default 0.6, as distillseg)", "P" },
    { "min-zoom", 0, 0, G_OPTION_ARG_DOUBLE, &cfg.augment.min_zoom, "least crop zoom (default 0.6)", "Z" },
    { "max-zoom", 0, 0, G_OPTION_ARG_DOUBLE, &cfg.augment.max_zoom, "largest crop zoom (default 1.8)", "Z" },
    { "held-out-every", 0, 0, G_OPTION_ARG_INT, &held_out_every, "hold out every Nth frame of each source (default 10; 0 = none)", "N" },
    { "held-out-source", 0, 0, G_OPTION_ARG_STRING_ARRAY, &held_out_sources, "hold out all of this source (repeatable)", "SOURCE" },
    { "arch", 0, 0, G_OPTION_ARG_STRING, &arch, "architecture of a new student (default: the element's)", "NAME" },
    { "config", 0, 0, G_OPTION_ARG_STRING, &config_json, "its widths, as JSON (default: the architecture's)", "JSON" },
    { "classes", 0, 0, G_OPTION_ARG_INT, &classes, "classes of a new student (default 2)", "K" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "compute threads (default all cores)", "N" },
    { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "initialisation and sampling seed (default 1)", "S" },
    { "log-every", 0, 0, G_OPTION_ARG_INT, &cfg.log_every, "steps per loss line (default 50)", "N" },
    { "eval-every", 0, 0, G_OPTION_ARG_INT, &cfg.eval_every, "steps per held-out evaluation (default 500)", "N" },
    { "save-every", 0, 0, G_OPTION_ARG_INT, &cfg.save_every, "steps per checkpoint (default 250)", "N" },
    { NULL },
  };
  GError *error = NULL;
  GOptionContext *ctx = g_option_context_new("- train the student offline on teacher-labelled frames");
  g_option_context_add_main_entries(ctx, entries, NULL);
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "distill-train: %s (see --help)\n", error->message);
    return 2;
  }
  g_option_context_free(ctx);
  const char *problem = NULL;
  if (!manifest || !out)
    problem = "--manifest FILE and --out FILE are required";
  else if (crop && !parse_size(crop, &cfg.crop_width, &cfg.crop_height))
    problem = "--crop takes WIDTHxHEIGHT, each 32 to 4096, e.g. 320x240";
  else if (cfg.steps < 1 || cfg.batch < 1 || cfg.start_step < 0 || cfg.start_step >= cfg.steps)
    problem = "--steps and --batch must be at least 1, and --start-step below --steps";
  else if (!(cfg.learning_rate > 0) || !(cfg.foreground_weight > 0))
    problem = "--lr and --fg-weight must be positive";
  else if (!(cfg.augment.confidence >= 0.5 && cfg.augment.confidence <= 1.0))
    problem = "--confidence must be within [0.5, 1]";
  else if (!(cfg.augment.min_zoom > 0 && cfg.augment.min_zoom <= cfg.augment.max_zoom))
    problem = "--min-zoom must be positive and at most --max-zoom";
  else if (classes < 2 || classes > 254 || held_out_every < 0 || held_out_every == 1)
    problem = "--classes must be within [2, 254] and --held-out-every 0 or at least 2";
  if (problem) {
    fprintf(stderr, "distill-train: %s (see --help)\n", problem);
    return 2;
  }
  cfg.checkpoint_out = out;
  cfg.seed = (guint64)seed;

  Dataset *set = dataset_load(manifest, (guint)held_out_every,
                              (const char *const *)held_out_sources, &error);
  if (!set) {
    fprintf(stderr, "distill-train: %s\n", error->message);
    return 1;
  }
  Student *student;
  if (resume) {
    student = student_load(resume, &error);
  } else {
    StudentConfig scfg;
    student_config_default(&scfg, classes);
    if (arch && !student_arch_from_name(arch, &scfg.arch)) {
      fprintf(stderr, "distill-train: no architecture \"%s\" (see student/README.md)\n", arch);
      return 1;
    }
    student_config_default_arch(&scfg, scfg.arch, classes);
    if (config_json && !student_config_from_json(config_json, scfg.arch, &scfg, &error)) {
      fprintf(stderr, "distill-train: --config: %s\n", error->message);
      return 1;
    }
    scfg.num_classes = classes;
    student = student_new(&scfg, (guint64)seed);
  }
  if (!student) {
    fprintf(stderr, "distill-train: %s\n", error->message);
    return 1;
  }
  char *described = dataset_describe(set);
  printf("frames: %u train, %u held out (%s)\n", set->n_train, set->n_held_out, described);
  g_free(described);
  printf("steps %d..%d, batch %d, crop %dx%d, lr %g\n", cfg.start_step, cfg.steps, cfg.batch,
         cfg.crop_width, cfg.crop_height, cfg.learning_rate);
  fflush(stdout);

  struct sigaction sa = { .sa_handler = on_stop_signal };
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  ThreadPool *pool = thread_pool_new(threads);
  TrainResult result;
  gboolean ok = train_run(student, set, &cfg, pool, &result, &error);
  if (ok)
    printf("done: %d steps in %.0f s, loss %.4f -> %.4f, held-out miou %.4f%s\n",
           result.steps_done, result.seconds, result.first_loss, result.last_loss,
           result.held_out_miou, train_stop_requested ? " (stopped: resume with --resume)" : "");
  else
    fprintf(stderr, "distill-train: %s\n", error->message);
  thread_pool_free(pool);
  student_free(student);
  dataset_free(set);
  g_strfreev(held_out_sources);
  g_free(manifest);
  g_free(out);
  g_free(resume);
  g_free(crop);
  g_free(arch);
  g_free(config_json);
  g_clear_error(&error);
  return ok ? 0 : 1;
}
