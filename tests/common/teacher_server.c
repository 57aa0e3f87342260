/* teacher_server.c: see teacher_server.h. */
#include "teacher_server.h"

#include <gio/gio.h>
#include <libsoup/soup.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#ifndef DISTILL_SOURCE_ROOT
#error "DISTILL_SOURCE_ROOT, the source tree whose teacher-server/run is started, comes from meson"
#endif
#define TEACHER_SERVER_RUN DISTILL_SOURCE_ROOT "/teacher-server/run"

#define LISTEN_TIMEOUT_S 300 /* the first run installs the npm packages before listening */
#define READY_TIMEOUT_S 120  /* replay decodes its videos first: ~2 s for vtest */
#define STOP_TIMEOUT_S 10
#define POLL_US (20 * 1000)

struct TeacherServer {
  GSubprocess *process;
  char *command; /* for messages */
  char *url;
  int port;
};

/* In the server's process before exec (run execs node): it must not outlive its caller. */
static void die_with_parent(gpointer data)
{
  prctl(PR_SET_PDEATHSIG, SIGTERM);
}

static gboolean has_exited(TeacherServer *server)
{
  return g_subprocess_get_identifier(server->process) == NULL;
}

static char *exit_status(TeacherServer *server)
{
  g_subprocess_wait(server->process, NULL, NULL);
  if (g_subprocess_get_if_signaled(server->process))
    return g_strdup_printf("killed by signal %d", g_subprocess_get_term_sig(server->process));
  return g_strdup_printf("exit status %d", g_subprocess_get_exit_status(server->process));
}

/* The line run prints on stdout once listening, and nothing after it:
 * "teacher-server: listening on http://127.0.0.1:PORT/v2 (…)". */
static char *read_listening_line(TeacherServer *server, GError **error)
{
  GPollableInputStream *out =
      G_POLLABLE_INPUT_STREAM(g_subprocess_get_stdout_pipe(server->process));
  g_autoptr(GString) line = g_string_new(NULL);
  gint64 deadline = g_get_monotonic_time() + LISTEN_TIMEOUT_S * G_USEC_PER_SEC;

  while (!strchr(line->str, '\n')) {
    char chunk[256];
    g_autoptr(GError) read_error = NULL;
    gssize n = g_pollable_input_stream_read_nonblocking(out, chunk, sizeof chunk, NULL,
                                                        &read_error);
    if (n > 0) {
      g_string_append_len(line, chunk, n);
    } else if (n == 0) {
      g_autofree char *status = exit_status(server);
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                  "%s ended (%s) before listening; its messages are on stderr", server->command,
                  status);
      return NULL;
    } else if (!g_error_matches(read_error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "reading the output of %s: %s",
                  server->command, read_error->message);
      return NULL;
    } else if (g_get_monotonic_time() > deadline) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
                  "%s printed no listening line in %d s", server->command, LISTEN_TIMEOUT_S);
      return NULL;
    } else {
      g_usleep(POLL_US);
    }
  }
  return g_string_free(g_steal_pointer(&line), FALSE);
}

/* server->url and server->port from the listening line. */
static gboolean parse_listening_line(TeacherServer *server, char *line, GError **error)
{
  const char *start = strstr(line, "listening on http://");
  const char *end = start ? strstr(start, "/v2") : NULL;
  const char *port = end ? g_strrstr_len(start, end - start, ":") : NULL;

  if (!port || (server->port = atoi(port + 1)) <= 0) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                "%s printed \"%s\", not \"… listening on http://HOST:PORT/v2 …\"",
                server->command, g_strchomp(line));
    return FALSE;
  }
  start += strlen("listening on ");
  server->url = g_strndup(start, end - start);
  return TRUE;
}

static gboolean wait_until_ready(TeacherServer *server, GError **error)
{
  g_autoptr(SoupSession) session = soup_session_new_with_options("timeout", 5, NULL);
  g_autofree char *ready = g_strconcat(server->url, "/v2/health/ready", NULL);
  gint64 deadline = g_get_monotonic_time() + READY_TIMEOUT_S * G_USEC_PER_SEC;

  for (;;) {
    g_autoptr(SoupMessage) probe = soup_message_new("GET", ready);
    g_autoptr(GBytes) body = soup_session_send_and_read(session, probe, NULL, NULL);
    if (soup_message_get_status(probe) == SOUP_STATUS_OK)
      return TRUE;
    if (has_exited(server)) {
      g_autofree char *status = exit_status(server);
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                  "%s ended (%s) before it was ready; its messages are on stderr",
                  server->command, status);
      return FALSE;
    }
    if (g_get_monotonic_time() > deadline) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
                  "%s at %s is not ready after %d s (GET /v2/health/ready: %u)", server->command,
                  server->url, READY_TIMEOUT_S, soup_message_get_status(probe));
      return FALSE;
    }
    g_usleep(5 * POLL_US);
  }
}

static char *command_line(const char *const *argv)
{
  GString *command = g_string_new(NULL);
  for (guint i = 0; argv[i]; i++) {
    g_autofree char *quoted = g_shell_quote(argv[i]);
    g_string_append_printf(command, "%s%s", i ? " " : "", strpbrk(argv[i], " '\"") ? quoted
                                                                                  : argv[i]);
  }
  return g_string_free(command, FALSE);
}

TeacherServer *teacher_server_start(const TeacherServerOptions *options, GError **error)
{
  TeacherServer *server = g_new0(TeacherServer, 1);
  g_autofree char *port = g_strdup_printf("%d", options->port);
  g_autoptr(GPtrArray) argv = g_ptr_array_new();

  g_ptr_array_add(argv, (gpointer)TEACHER_SERVER_RUN);
  for (guint i = 0; options->flags && options->flags[i]; i++)
    g_ptr_array_add(argv, (gpointer)options->flags[i]);
  g_ptr_array_add(argv, (gpointer) "--port");
  g_ptr_array_add(argv, port);
  g_ptr_array_add(argv, NULL);
  server->command = command_line((const char *const *)argv->pdata);

  g_autoptr(GSubprocessLauncher) launcher =
      g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE);
  g_subprocess_launcher_set_child_setup(launcher, die_with_parent, NULL, NULL);
  server->process =
      g_subprocess_launcher_spawnv(launcher, (const char *const *)argv->pdata, error);
  if (!server->process) {
    g_prefix_error(error, "cannot run %s: ", server->command);
    teacher_server_stop(server);
    return NULL;
  }
  g_autofree char *line = read_listening_line(server, error);
  if (!line || !parse_listening_line(server, line, error) ||
      (options->wait == TEACHER_SERVER_READY && !wait_until_ready(server, error))) {
    teacher_server_stop(server);
    return NULL;
  }
  return server;
}

const char *teacher_server_url(const TeacherServer *server)
{
  return server->url;
}

int teacher_server_port(const TeacherServer *server)
{
  return server->port;
}

void teacher_server_stop(TeacherServer *server)
{
  if (!server)
    return;
  if (server->process) {
    g_subprocess_send_signal(server->process, SIGTERM);
    gint64 deadline = g_get_monotonic_time() + STOP_TIMEOUT_S * G_USEC_PER_SEC;
    while (!has_exited(server) && g_get_monotonic_time() < deadline)
      g_usleep(POLL_US);
    if (!has_exited(server))
      g_subprocess_force_exit(server->process);
    g_subprocess_wait(server->process, NULL, NULL);
    g_object_unref(server->process);
  }
  g_free(server->command);
  g_free(server->url);
  g_free(server);
}
