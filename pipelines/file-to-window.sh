#!/bin/sh
# A video file, segmented and shown in a window, the classes blended over the video.
#   pipelines/file-to-window.sh FILE [TEACHER_URL]
# Without TEACHER_URL the student runs inference only. DISTILL_SINK replaces the window sink
# (e.g. fakesink on a machine without a display).
set -eu
[ $# -ge 1 ] || { echo "usage: $0 FILE [TEACHER_URL]" >&2; exit 2; }
[ -f "$1" ] || { echo "$0: no such file: $1" >&2; exit 2; }
exec gst-launch-1.0 -e \
  filesrc location="$1" ! decodebin ! videoconvert ! \
  distillseg ${2:+teacher-url="$2"} output=overlay ! \
  videoconvert ! ${DISTILL_SINK:-autovideosink}
