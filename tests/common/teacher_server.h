/* teacher_server.h: the reference teacher (teacher-server/run of this source tree) as a child
 * process of a test or a benchmark, on a loopback port: started, waited for, stopped.
 *
 * The server's stderr is the caller's (its log lines land in the test's log); it is sent SIGTERM
 * if the caller dies first, so that a test that aborts on an assertion leaves no server behind. */
#pragma once

#include <glib.h>

typedef enum {
  TEACHER_SERVER_READY,     /* GET /v2/health/ready answers 200: the model has loaded */
  TEACHER_SERVER_LISTENING, /* the listening line only: requests sent now meet a loading model */
} TeacherServerWait;

typedef struct {
  /* run's flags, NULL-terminated, without --port: e.g. "--model", "replay", "--video", …, NULL */
  const char *const *flags;
  int port;               /* 0: a free one, chosen by the server */
  TeacherServerWait wait; /* what teacher_server_start() returns after */
} TeacherServerOptions;

typedef struct TeacherServer TeacherServer;

/* Starts run with the options' flags on 127.0.0.1 and waits as options->wait says; NULL with a
 * message naming the command and what went wrong (it could not run, exited, printed no listening
 * line in 5 minutes (the first run installs npm packages), or was not ready in 2 minutes), the
 * process stopped. */
TeacherServer *teacher_server_start(const TeacherServerOptions *options, GError **error);

/* Its base URL, "http://127.0.0.1:PORT" (the KServe routes are under /v2). */
const char *teacher_server_url(const TeacherServer *server);
/* Its port: give it to a later start to serve on the same address again. */
int teacher_server_port(const TeacherServer *server);

/* SIGTERM, then SIGKILL if it has not exited in 10 s; reaps it and frees server (NULL: nothing). */
void teacher_server_stop(TeacherServer *server);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(TeacherServer, teacher_server_stop)
