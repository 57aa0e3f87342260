#!/bin/sh
# An RTSP camera, segmented, the overlay recorded to an H.264 MP4 file; Ctrl-C (SIGINT) ends the
# recording cleanly (gst-launch-1.0 -e finishes the file).
#   pipelines/rtsp-to-h264-file.sh RTSP_URL OUT.mp4 [TEACHER_URL]
set -eu
[ $# -ge 2 ] || { echo "usage: $0 RTSP_URL OUT.mp4 [TEACHER_URL]" >&2; exit 2; }
exec gst-launch-1.0 -e \
  rtspsrc location="$1" protocols=tcp latency=200 ! decodebin ! videoconvert ! \
  distillseg ${3:+teacher-url="$3"} output=overlay ! \
  videoconvert ! x264enc tune=zerolatency speed-preset=veryfast ! h264parse ! \
  mp4mux ! filesink location="$2"
