/* The shared teacher and its arbiter (teacher-client/teacher_group.h) against the replay teacher over
 * HTTP on loopback, answering 300 ms late so that queries queue: the teacher's capacity is shared
 * by the members of a group, granted to the least accurate camera first, and members with other
 * settings have a client of their own. */
#include <gio/gio.h>
#include <string.h>

#include "teacher_group.h"
#include "teacher_server.h"

#define VTEST "/usr/share/doc/opencv-doc/examples/data/vtest.avi"

static TeacherServer *server;
static const gchar *url;
static guint8 frame_pixels[64 * 48 * 3];

static void start_teacher(void)
{
  g_autofree gchar *labels = g_build_filename(g_getenv("DISTILL_SOURCE_ROOT"), "data", "vtest",
                                              "labels.mkv", NULL);
  g_autoptr(GError) error = NULL;

  server = teacher_server_start(
      &(TeacherServerOptions){.flags = (const char *[]){"--model", "replay", "--video", VTEST,
                                                        "--labels", labels, "--latency-ms",
                                                        "300", NULL},
                              .wait = TEACHER_SERVER_LISTENING},
      &error);
  g_assert_no_error(error);
  url = teacher_server_url(server);
}

static void config(TeacherClientConfig *cfg, guint timeout_ms)
{
  teacher_client_config_init(cfg);
  cfg->urls = url;
  cfg->timeout_ms = timeout_ms;  /* the replay teacher takes ~2 s to load: health is probed */
  cfg->inflight = 1;
}

typedef struct {
  GAsyncQueue *answers;  /* the names of answered queries, in order */
  const char *name;
} Query;

static void on_answer(TeacherResult *result, const GError *error, gpointer data)
{
  Query *q = data;

  g_async_queue_push(q->answers, g_strdup_printf("%s%s", q->name,
                                                 result ? "" : g_error_matches(
                                                     error, G_IO_ERROR, G_IO_ERROR_CANCELLED)
                                                                   ? " cancelled"
                                                                   : " failed"));
}

static TeacherMember *join(const TeacherClientConfig *cfg, const char *name)
{
  g_autoptr(GError) error = NULL;
  TeacherMember *member = teacher_group_join(cfg, name, &error);

  g_assert_no_error(error);
  return member;
}

static void request(TeacherMember *member, Query *q)
{
  g_autoptr(GError) error = NULL;
  TeacherFrame frame = {.rgb = frame_pixels, .width = 64, .height = 48, .out_width = 32,
                        .out_height = 24};

  g_assert_true(teacher_member_request(member, &frame, on_answer, q, &error));
  g_assert_no_error(error);
}

static void expect_answer(GAsyncQueue *answers, const char *name)
{
  g_autofree gchar *got = g_async_queue_timeout_pop(answers, 30 * G_USEC_PER_SEC);
  g_assert_cmpstr(got, ==, name);
}

/* Capacity 1: A's first query goes out; then A, B and C queue. C has no accuracy yet, B is the
 * less accurate of the others: C, B, A. */
static void test_least_accurate_first(void)
{
  g_autoptr(GAsyncQueue) answers = g_async_queue_new_full(g_free);
  TeacherClientConfig cfg;

  config(&cfg, 20000);
  TeacherMember *a = join(&cfg, "a");
  TeacherMember *b = join(&cfg, "b");
  TeacherMember *c = join(&cfg, "c");
  teacher_member_set_need(a, 0.9);
  teacher_member_set_need(b, 0.2);
  Query a1 = {answers, "a1"}, a2 = {answers, "a2"}, b1 = {answers, "b1"}, c1 = {answers, "c1"};
  request(a, &a1);
  request(a, &a2);
  request(b, &b1);
  request(c, &c1);
  g_assert_cmpuint(teacher_member_outstanding(a), ==, 2);
  expect_answer(answers, "a1");
  expect_answer(answers, "c1");
  expect_answer(answers, "b1");
  expect_answer(answers, "a2");
  g_assert_cmpuint(teacher_member_outstanding(a), ==, 0);
  teacher_group_leave(a);
  teacher_group_leave(b);
  teacher_group_leave(c);
}

/* Another timeout is another group, with a client and capacity of its own: its query does not
 * wait behind the first group's. */
static void test_other_settings_other_client(void)
{
  g_autoptr(GAsyncQueue) answers = g_async_queue_new_full(g_free);
  TeacherClientConfig cfg, other;

  config(&cfg, 20000);
  config(&other, 19000);
  TeacherMember *a = join(&cfg, "a");
  TeacherMember *b = join(&cfg, "b");
  TeacherMember *d = join(&other, "d");
  Query a1 = {answers, "a1"}, b1 = {answers, "b1"}, d1 = {answers, "d1"};
  request(a, &a1);
  request(b, &b1);
  g_usleep(50000);
  request(d, &d1);
  expect_answer(answers, "a1");
  expect_answer(answers, "d1");
  expect_answer(answers, "b1");
  teacher_group_leave(a);
  teacher_group_leave(b);
  teacher_group_leave(d);
}

/* A member that leaves gets its waiting queries back as cancelled, at once. */
static void test_leave_cancels(void)
{
  g_autoptr(GAsyncQueue) answers = g_async_queue_new_full(g_free);
  TeacherClientConfig cfg;

  config(&cfg, 20000);
  TeacherMember *a = join(&cfg, "a");
  TeacherMember *b = join(&cfg, "b");
  Query a1 = {answers, "a1"}, b1 = {answers, "b1"};
  request(a, &a1);
  request(b, &b1);
  teacher_group_leave(b);
  expect_answer(answers, "b1 cancelled");
  expect_answer(answers, "a1");
  teacher_group_leave(a);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  memset(frame_pixels, 128, sizeof frame_pixels);
  start_teacher();
  g_test_add_func("/teachergroup/least-accurate-first", test_least_accurate_first);
  g_test_add_func("/teachergroup/other-settings-other-client", test_other_settings_other_client);
  g_test_add_func("/teachergroup/leave-cancels", test_leave_cancels);
  int status = g_test_run();
  teacher_server_stop(server);
  return status;
}
