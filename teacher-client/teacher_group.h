/* teacher_group.h: one teacher client shared by the distillseg elements of a process that have
 * the same teacher settings (several cameras of distill-rtsp, or of one gst-launch line), and a
 * small arbiter that grants the teacher's capacity to the cameras that need it most.
 *
 * Each element joins with its settings and gets a member holding its own TeacherStream on the
 * shared client (one session, one network thread for all). The group's capacity is the
 * teacher-inflight of its settings: at most that many queries are out at once, whichever cameras
 * they come from. A camera's query waits in the group's queue while the teacher is busy; when a
 * place frees, the waiting query of the camera with the lowest recent accuracy (mIoU of its last
 * teacher frame; a camera with none yet comes first) is sent, oldest first among equals. A query
 * that waited longer than teacher-timeout fails with TEACHER_ERROR_TIMEOUT unsent.
 *
 * Callbacks follow teacher_client.h: exactly one per accepted request, on the client thread (or,
 * for a query that never left the queue, on the thread that gives it up). */
#pragma once

#include "teacher_client.h"

G_BEGIN_DECLS

typedef struct TeacherMember TeacherMember;

/* Joins (or starts) the group of the client settings cfg (compared field by field) with a stream
 * named name. Fails as teacher_client_new() does. */
TeacherMember *teacher_group_join(const TeacherClientConfig *cfg, const char *name,
                                  GError **error);
/* Gives up the member's waiting queries (G_IO_ERROR_CANCELLED), closes its stream (its queries
 * in flight are cancelled, their callbacks run before this returns) and frees the client with
 * the group's last member. */
void teacher_group_leave(TeacherMember *member);

/* The member's stream, for its counters. */
TeacherStream *teacher_member_stream(TeacherMember *member);
/* Queries of the member waiting or in flight. Also sends waiting queries the teacher has room
 * for (a place freed by another camera's answer). */
guint teacher_member_outstanding(TeacherMember *member);
/* The member's recent accuracy (-1 = none yet): its rank in the queue. */
void teacher_member_set_need(TeacherMember *member, double last_miou);
/* Queues frame (copied) for the teacher; sent when granted, at once when the teacher has room.
 * FALSE (callback not called, error set) when the frame is invalid or the member is leaving. */
gboolean teacher_member_request(TeacherMember *member, const TeacherFrame *frame,
                                TeacherResultFunc callback, gpointer user_data, GError **error);

G_END_DECLS
