#!/bin/sh
# A video file, segmented frame by frame into class masks on disk (PGM, pixel = class index), for
# evaluation against teacher labels (score-masks LABELS OUT_DIR). sync=true: the paper's protocol,
# every teacher frame waited for, so that a run repeats.
#   pipelines/file-to-masks.sh FILE OUT_DIR [TEACHER_URL]
set -eu
[ $# -ge 2 ] || { echo "usage: $0 FILE OUT_DIR [TEACHER_URL]" >&2; exit 2; }
[ -f "$1" ] || { echo "$0: no such file: $1" >&2; exit 2; }
mkdir -p "$2"
exec gst-launch-1.0 -e \
  filesrc location="$1" ! decodebin ! videoconvert ! \
  distillseg ${3:+teacher-url="$3"} sync=true output=mask ! \
  pnmenc ! multifilesink location="$2/%05d.pgm"
