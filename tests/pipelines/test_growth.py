#!/usr/bin/python3
"""The training size, as users run distillseg: vtest in real time (sync=false, paced at its 10
fps) with the replay teacher. vtest's people are thin at a long side of 320, the trainer has time
to spare between teacher frames, so the student's input grows; the debug log says why, and
distill-stats and the meta's class map follow. max-inference-long-side=0 keeps 320, and sync
mode its own 640. TAP output."""
import os
import re
import subprocess
import tempfile

from harness import VTEST, diag, ok, replay_teacher, run_test

FRAMES = 80


def launch(clip, props):
    """gst-launch-1.0 -m of the clip through distillseg in real time: (input widths in the
    distill-stats messages, the debug log's size changes, the class map's widths in the meta
    log lines, exit status)."""
    argv = ["gst-launch-1.0", "-m", "filesrc", f"location={clip}", "!", "decodebin", "!",
            "videoconvert", "!", "distillseg", "stats-interval=500", *props.split(), "!",
            "fakesink", "sync=true"]
    env = dict(os.environ, GST_DEBUG="distillseg:5", GST_DEBUG_NO_COLOR="1")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    widths = [int(w) for w in re.findall(r"distill-stats.*?input-width=\(int\)(\d+)", r.stdout)]
    changes = re.findall(r"student input (\d+x\d+ -> \d+x\d+: [^(]*)", r.stderr)
    maps = [int(w) for w in re.findall(r"student input \d+x\d+, class map (\d+)x\d+", r.stderr)]
    if r.returncode != 0:
        diag(r.stderr[-1500:])
    return widths, changes, maps, r.returncode


def main():
    work = tempfile.TemporaryDirectory(prefix="distill-growth-test-")
    clip = os.path.join(work.name, "clip.avi")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", VTEST, "-frames:v", str(FRAMES),
                    "-c:v", "copy", clip], check=True, timeout=60)
    teacher, url = replay_teacher(ready=True)
    # Short rounds often: the trainer measured within the clip.
    common = f"teacher-url={url} min-stride=2 max-updates=2"

    widths, changes, maps, status = launch(clip, f"sync=false {common}")
    diag(f"real time: input widths {widths}; changes {changes}; class maps {maps}")
    ok(status == 0 and widths and widths[0] == 320 and max(widths) > 320,
       f"real time: the input grows from 320 ({widths})")
    ok(changes and all(re.match(r"320x240 -> \d+x\d+: a finer class map would resolve thin",
                                c) for c in changes[:1]),
       "the debug log says why it grew")
    ok(maps and maps[0] == 160 and max(maps) == max(widths) // 2,
       "the class map (the meta's) follows the input, at half its size")

    widths, changes, _, status = launch(clip, f"sync=false max-inference-long-side=0 {common}")
    ok(status == 0 and widths and set(widths) == {320} and not changes,
       f"max-inference-long-side=0: the input stays at 320 ({sorted(set(widths))})")

    widths, changes, _, status = launch(clip, f"sync=true {common}")
    ok(status == 0 and widths and set(widths) == {640} and not changes,
       f"sync mode: the input stays at 640 ({sorted(set(widths))})")
    teacher.stop()


if __name__ == "__main__":
    run_test(main)
