/* fuzz_element.c: libFuzzer target for what distillseg reads from a launch line and from
 * upstream: its property strings and the caps offered to its sink pad.
 *
 * Byte 0 chooses the path:
 *   bit 0 clear  properties: the rest is lines "name=value". Each value is set as gst-launch-1.0
 *                does (gst_util_set_object_arg) on a fresh element, and must read back as set.
 *                With bit 1 set the element then starts (READY -> PAUSED, the checks of start,
 *                the teacher client made from teacher-url) and stops; the file properties point
 *                to a small checkpoint or nowhere, so that nothing outside is read or written.
 *   bit 0 set    caps: byte 1 picks the output mode (passthrough, overlay, mask) and the rest is a
 *                caps string. It filters a caps query on the sink pad; fixed caps go through an
 *                accept-caps query and, when accepted, a caps event (the element renegotiates);
 *                a small frame of the new format then goes through the element, which must hand
 *                back a buffer with the class-map meta.
 * The element is compiled in (registered without a plugin file). */
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include <glib/gstdio.h>
#include <stdint.h>
#include <string.h>

#include "gstdistillseg.h"
#include "gstdistillsegmeta.h"
#include "student.h"

#define MAX_FRAME_PIXELS 4096  /* frames pushed through: the student runs in well under 1 ms */
#define MAX_CAPS_PIXELS (1 << 24)  /* 16 Mpixels (4096 x 4096): caps sent to the element */
#define MAX_CAPS_NESTING 8

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const output_modes[] = {"passthrough", "overlay", "mask"};

static char *small_checkpoint;  /* a 2-class student with few channels: quick to load and run */
static GstHarness *harnesses[G_N_ELEMENTS(output_modes)];
static gboolean in_caps_parser;

/* Properties that name files: reset before the element starts, so that fuzz input never decides
 * which file is read or written. */
static void point_files_at_nothing(GstElement *element)
{
  g_object_set(element, "checkpoint", small_checkpoint, "checkpoint-out", NULL,
               "teacher-token-file", NULL, "teacher-ca-file", NULL, NULL);
}

/* One "name=value" line: set as a launch line would, and read back. */
static void set_property_line(GstElement *element, const char *line)
{
  const char *eq = strchr(line, '=');
  if (eq == NULL)
    return;
  g_autofree char *name = g_strndup(line, eq - line);
  const char *text = eq + 1;
  GParamSpec *pspec = g_object_class_find_property(G_OBJECT_GET_CLASS(element), name);
  if (pspec == NULL || !(pspec->flags & G_PARAM_WRITABLE))
    return;

  /* What gst-launch-1.0 makes of the text; GObject refuses values out of the property's range
   * (with a warning), which is its business, not the element's. */
  GValue wanted = G_VALUE_INIT;
  g_value_init(&wanted, G_PARAM_SPEC_VALUE_TYPE(pspec));
  gboolean valid = gst_value_deserialize_with_pspec(&wanted, text, pspec) &&
                   !g_param_value_validate(pspec, &wanted);
  if (valid)
    gst_util_set_object_arg(G_OBJECT(element), name, text);
  /* The element's own properties read back as set; GStreamer's (name, qos, …) keep their own
   * rules (a NULL name becomes a generated one). */
  if (valid && pspec->owner_type == GST_TYPE_DISTILL_SEG) {
    GValue got = G_VALUE_INIT;
    g_value_init(&got, G_PARAM_SPEC_VALUE_TYPE(pspec));
    g_object_get_property(G_OBJECT(element), name, &got);
    g_assert_true(gst_value_compare(&wanted, &got) == GST_VALUE_EQUAL);
    g_value_unset(&got);
  }
  g_value_unset(&wanted);
}

static void fuzz_properties(const char *text, gboolean start)
{
  GstElement *element = gst_element_factory_make("distillseg", NULL);
  g_assert_nonnull(element);
  g_auto(GStrv) lines = g_strsplit(text, "\n", 64);
  for (int i = 0; lines[i]; i++)
    set_property_line(element, lines[i]);

  if (start) {
    guint min_stride, max_stride, width, height;
    point_files_at_nothing(element);
    g_object_get(element, "min-stride", &min_stride, "max-stride", &max_stride,
                 "inference-width", &width, "inference-height", &height, NULL);
    GstStateChangeReturn ret = gst_element_set_state(element, GST_STATE_PAUSED);
    /* Settings that cannot work together are refused when the element starts. */
    if (min_stride > max_stride || (width == 0) != (height == 0))
      g_assert_cmpint(ret, ==, GST_STATE_CHANGE_FAILURE);
    gst_element_set_state(element, GST_STATE_NULL);
  }
  gst_object_unref(element);
}

/* Takes whatever the element sent on, so that nothing piles up between inputs. */
static void drain(GstHarness *h)
{
  GstEvent *event;
  GstBuffer *buffer;
  while ((event = gst_harness_try_pull_event(h)))
    gst_event_unref(event);
  while ((event = gst_harness_try_pull_upstream_event(h)))
    gst_event_unref(event);
  while ((buffer = gst_harness_try_pull(h)))
    gst_buffer_unref(buffer);
}

/* A frame of info's format, every byte set. */
static GstBuffer *make_frame(const GstVideoInfo *info)
{
  GstBuffer *buffer = gst_buffer_new_allocate(NULL, GST_VIDEO_INFO_SIZE(info), NULL);
  gst_buffer_memset(buffer, 0, 0x5a, GST_VIDEO_INFO_SIZE(info));
  GST_BUFFER_PTS(buffer) = 0;
  GST_BUFFER_DURATION(buffer) = GST_SECOND / 30;
  return buffer;
}

/* How deep brackets nest in text: lists, arrays, ranges, nested structures. */
static int nesting(const char *text)
{
  int depth = 0, deepest = 0;
  for (const char *c = text; *c; c++) {
    if (strchr("{<[(", *c))
      deepest = MAX(deepest, ++depth);
    else if (strchr("}>])", *c) && depth > 0)
      depth--;
  }
  return deepest;
}

static void fuzz_caps(GstHarness *h, const char *text)
{
  /* GStreamer 1.22's caps parser leaks what it parsed of a list it then refuses
   * (tests/sanitize/lsan.supp), two stack frames per level: nested deeper than this, the
   * allocation's stack no longer reaches gst_caps_from_string within the 64 frames the long runs
   * keep (malloc_context_size), and the suppression cannot match. No video caps nest this deep. */
  if (nesting(text) > MAX_CAPS_NESTING)
    return;
  /* GStreamer's caps parser itself warns with a critical on some names it then refuses. */
  in_caps_parser = TRUE;
  GstCaps *caps = gst_caps_from_string(text);
  in_caps_parser = FALSE;
  if (caps == NULL)
    return;
  GstPad *sinkpad = gst_element_get_static_pad(h->element, "sink");
  GstCaps *templ = gst_pad_get_pad_template_caps(sinkpad);

  /* Whatever the filter, the answer stays within the pad's template and the filter. */
  GstCaps *answer = gst_pad_query_caps(sinkpad, caps);
  g_assert_true(gst_caps_is_subset(answer, templ));
  g_assert_true(gst_caps_is_empty(answer) || gst_caps_can_intersect(answer, caps));
  gst_caps_unref(answer);

  /* Fixed caps the element accepts go to it (the largest frames excepted: it allocates frame
   * buffers, as any video filter does); a small frame of that format then goes through, and
   * comes out with the class map, unless the caps event was refused. */
  GstVideoInfo info;
  if (gst_caps_is_fixed(caps) && gst_pad_query_accept_caps(sinkpad, caps) &&
      gst_video_info_from_caps(&info, caps) &&
      (guint64)GST_VIDEO_INFO_WIDTH(&info) * GST_VIDEO_INFO_HEIGHT(&info) <= MAX_CAPS_PIXELS) {
    gst_pad_push_event(h->srcpad, gst_event_new_caps(gst_caps_ref(caps)));
    if ((guint64)GST_VIDEO_INFO_WIDTH(&info) * GST_VIDEO_INFO_HEIGHT(&info) <= MAX_FRAME_PIXELS) {
      GstFlowReturn ret = gst_harness_push(h, make_frame(&info));
      if (ret == GST_FLOW_OK) {
        GstBuffer *out = gst_harness_pull(h);
        g_assert_nonnull(out);
        GstDistillSegMeta *meta = gst_buffer_get_distill_seg_meta(out);
        g_assert_nonnull(meta);
        g_assert_cmpuint(meta->region_count, ==, 2);
        g_assert_cmpuint(meta->masks_loc_w, ==, GST_VIDEO_INFO_WIDTH(&info));
        g_assert_cmpuint(meta->masks_loc_h, ==, GST_VIDEO_INFO_HEIGHT(&info));
        gst_buffer_unref(out);
      } else {
        g_assert_cmpint(ret, ==, GST_FLOW_NOT_NEGOTIATED);
      }
    }
  }
  gst_caps_unref(caps);
  gst_caps_unref(templ);
  gst_object_unref(sinkpad);
  drain(h);
}

static GstStaticPadTemplate any_src = GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS,
                                                              GST_STATIC_CAPS_ANY);
static GstStaticPadTemplate any_sink = GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS,
                                                               GST_STATIC_CAPS_ANY);

/* An element of each output mode, started on a small frame size, for the caps path. */
static GstHarness *start_harness(const char *output)
{
  GstElement *element = gst_element_factory_make("distillseg", NULL);
  point_files_at_nothing(element);
  gst_util_set_object_arg(G_OBJECT(element), "output", output);
  g_object_set(element, "threads", 1, "stats-interval", 0, NULL);
  GstHarness *h = gst_harness_new_empty();
  gst_harness_add_element_full(h, element, &any_src, "sink", &any_sink, "src");
  gst_object_unref(element);
  gst_harness_play(h);
  gst_harness_set_src_caps_str(h, "video/x-raw,format=RGB,width=8,height=8,framerate=30/1");
  gst_buffer_unref(gst_harness_push_and_pull(h, gst_buffer_new_allocate(NULL, 8 * 8 * 3, NULL)));
  drain(h);
  return h;
}

static void remove_checkpoint(void)
{
  g_autofree char *dir = g_path_get_dirname(small_checkpoint);
  g_unlink(small_checkpoint);
  g_rmdir(dir);
}

/* Prints the message, and aborts on a critical, so that libFuzzer keeps the input and the
 * sanitizer prints where it came from (GLib's own fatal criticals raise SIGTRAP, which neither
 * catches). */
static void abort_on_critical(const char *domain, GLogLevelFlags level, const char *message,
                              gpointer data)
{
  g_log_default_handler(domain, level, message, data);
  if ((level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)) && !in_caps_parser)
    abort();
}

/* GStreamer, GLib and the element set up their types, classes and registries on first use and
 * keep them: all of that is done here once, so that libFuzzer's per-input leak check sees only
 * what one input leaves behind. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  /* Only the element compiled in: no plugin registry to scan or load. */
  g_setenv("GST_REGISTRY_DISABLE", "yes", TRUE);
  gst_init(NULL, NULL);
  /* A critical is a broken promise between the element and GStreamer: a finding. */
  g_log_set_default_handler(abort_on_critical, NULL);
  g_assert_true(GST_ELEMENT_REGISTER(distillseg, NULL));

  g_autoptr(GError) error = NULL;
  char *dir = g_dir_make_tmp("fuzz-element-XXXXXX", &error);
  g_assert_no_error(error);
  small_checkpoint = g_build_filename(dir, "small.safetensors", NULL);
  g_free(dir);
  StudentConfig cfg;
  student_config_default_arch(&cfg, STUDENT_ARCH_JITNET, 2);
  cfg.jitnet = (JitnetConfig){.stem = {4, 4}, .encoder = {4, 4, 4}, .decoder = {4, 4, 4},
                              .head = {4, 4}};
  Student *student = student_new(&cfg, 1);
  g_assert_true(student_save(student, small_checkpoint, &error));
  student_free(student);
  atexit(remove_checkpoint);

  for (guint i = 0; i < G_N_ELEMENTS(output_modes); i++)
    harnesses[i] = start_harness(output_modes[i]);
  /* The lasting state of the property path: one of each kind of property set, and a start. */
  fuzz_properties("teacher-url=http://127.0.0.1:9\noutput=mask\nlearning-rate=0.1\n"
                  "optimizer=adam\ntrain=false\nnum-classes=3", TRUE);
  fuzz_caps(harnesses[0], "video/x-raw,format=I420,width=16,height=8,framerate=30/1");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 2)
    return 0;
  g_autofree char *text = g_strndup((const char *)data + 2, size - 2);
  if (data[0] & 1)
    fuzz_caps(harnesses[data[1] % G_N_ELEMENTS(output_modes)], text);
  else
    fuzz_properties(text, (data[0] & 2) != 0);
  return 0;
}
