/* distill-rtsp.h: what the parts of distill-rtsp share (distill-rtsp.c: the server and the main
 * loop; options.c: the command line; camera.c: one camera's pipelines; metrics.c: progress line,
 * CSV log and /metrics). */
#pragma once

#include <libsoup/soup.h>
#include <stdio.h>

#include "rtsp-out.h"

typedef struct {
  gchar **inputs;            /* --input [NAME=]URI, as given */
  gchar *teacher, *model, *token_file, *ca_file;
  gchar *bind, *auth_file, *tls_cert, *tls_key, *checkpoint_dir, *csv;
  gint port, metrics_port;
  gint stats_interval_ms;
  gdouble inference_budget;  /* --inference-budget: the process's, for all its cameras */
  gchar **element_options;   /* --element-option PROP=VALUE for every distillseg */
} RtspOptions;

/* The figures of the last distill-stats message of a camera. */
typedef struct {
  guint64 frames, teacher_queries, teacher_errors, updates;
  guint stride;
  double fps, student_ms, train_ms, teacher_latency_ms, last_miou, shown_miou;
  gint input_width, input_height;          /* the student's input in use (compute governor) */
  double inference_share, train_share;     /* of the frame interval, of the time */
  gboolean hibernating;
  gboolean valid;            /* a message has come */
} CameraStats;

typedef struct Camera Camera;

typedef struct {
  RtspOptions options;
  GMainLoop *loop;
  GstRTSPServer *server;
  GPtrArray *cameras;        /* Camera * */
  SoupServer *metrics;
  FILE *csv;
  gint64 start_time;
  gboolean tty;              /* stderr is a terminal: the progress lines are redrawn in place */
  guint progress_lines;      /* lines drawn last time (tty) */
  gboolean stopping;
  int exit_status;
} DistillRtsp;

struct Camera {
  DistillRtsp *app;
  gchar *name;
  gchar *input;              /* as given, less a password in it (messages show it) */
  gchar *source_description; /* gst-launch description of the source part */
  gchar *checkpoint;         /* DIR/NAME.safetensors, or NULL */

  GstElement *source;        /* input -> raw frames (appsink "frames"), restarted on failure */
  GstElement *process;       /* appsrc "feed" -> distillseg -> x264enc -> appsink "encoded" */
  GstAppSrc *feed;
  GstElement *distill, *gate, *encoder;

  RtspOut out;               /* the annotated stream's viewers */

  gboolean source_running;
  guint restart_timer;       /* pending reconnection */
  guint watchdog;
  guint backoff_s;           /* next wait before a reconnection */
  gint frames_in;            /* frames from the current source (atomic) */
  gint frames_seen;          /* frames_in at the watchdog's last look */
  gint64 progress_time;      /* monotonic us: when frames last came (or the source started) */
  guint64 reconnects;
  gchar *last_error;

  CameraStats stats;         /* main thread */
};

/* options.c */
gboolean rtsp_options_parse(RtspOptions *options, int *argc, char ***argv, GError **error);
void rtsp_options_clear(RtspOptions *options);
/* Splits "[NAME=]URI" (the n-th input) into its name (default camN) and its input. */
void rtsp_input_split(const char *spec, guint n, gchar **name, gchar **input);
/* The input as messages may show it: a URI's password (rtsp://user:pw@camera) hidden. */
gchar *rtsp_input_without_password(const char *input);
/* The gst-launch description of the source part for an input (file, URI, V4L2 device). */
gchar *rtsp_source_description(const char *input, GError **error);
/* Reads user:password lines into an RTSP authenticator granting the "viewer" role. */
GstRTSPAuth *rtsp_auth_from_file(const char *path, GError **error);
/* An RTSP authenticator granting the "viewer" role to anyone (TLS without passwords). */
GstRTSPAuth *rtsp_auth_anyone(void);
/* The server's certificate and key, checked to belong together. */
GTlsCertificate *rtsp_tls_certificate_load(const char *cert_file, const char *key_file,
                                           GError **error);

/* camera.c */
Camera *camera_new(DistillRtsp *app, const char *name, const char *input, guint threads,
                   GError **error);
gboolean camera_start(Camera *cam, GError **error);
GstRTSPMediaFactory *camera_media_factory(Camera *cam);
/* Viewers are told the stream ends; the source stops. */
void camera_end_viewers(Camera *cam);
/* Stops both pipelines (the element saves its checkpoint). */
void camera_stop(Camera *cam);
void camera_free(Camera *cam);
/* A distill-stats message of the camera's process pipeline. */
void camera_take_stats(Camera *cam, const GstStructure *s);
gboolean camera_up(Camera *cam);

/* metrics.c */
gboolean metrics_start(DistillRtsp *app, GError **error);
gchar *metrics_render(DistillRtsp *app);
void progress_draw(DistillRtsp *app);
gboolean csv_open(DistillRtsp *app, GError **error);
void csv_write(DistillRtsp *app, Camera *cam);
