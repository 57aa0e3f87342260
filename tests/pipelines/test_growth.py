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
    """gst-launch-1.0 -m of the clip through distillseg in real time: (the distill-stats
    messages' input widths, inference shares and training shares, the debug log's size changes,
    the class map's widths in its info lines, exit status)."""
    argv = ["gst-launch-1.0", "-m", "filesrc", f"location={clip}", "!", "decodebin", "!",
            "videoconvert", "!", "distillseg", "stats-interval=500", *props.split(), "!",
            "fakesink", "sync=true"]
    env = dict(os.environ, GST_DEBUG="distillseg:5", GST_DEBUG_NO_COLOR="1")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    stats = [(int(w), float(i), float(t)) for w, i, t in re.findall(
        r"distill-stats.*?input-width=\(int\)(\d+).*?inference-share=\(double\)([0-9.e-]+).*?"
        r"train-share=\(double\)([0-9.e-]+)", r.stdout)]
    changes = re.findall(r"student input (\d+x\d+ -> \d+x\d+: [^(]*)", r.stderr)
    maps = [int(w) for w in re.findall(r"student input \d+x\d+, class map (\d+)x\d+", r.stderr)]
    if r.returncode != 0:
        diag(r.stderr[-1500:])
    return stats, changes, maps, r.returncode


def mean(values):
    return sum(values) / len(values) if values else 0.0


def main():
    work = tempfile.TemporaryDirectory(prefix="distill-growth-test-")
    clip = os.path.join(work.name, "clip.avi")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", VTEST, "-frames:v", str(FRAMES),
                    "-c:v", "copy", clip], check=True, timeout=60)
    teacher, url = replay_teacher(ready=True)
    # Short rounds, twice a second: the trainer is measured within the clip.
    common = f"teacher-url={url} min-stride=5 max-updates=1"

    stats, changes, maps, status = launch(clip, f"sync=false {common}")
    widths = [w for w, _, _ in stats]
    at_320 = [(i, t) for w, i, t in stats if w == 320]
    inference, training = mean([i for i, _ in at_320]), mean([t for _, t in at_320])
    diag(f"real time: input widths {widths}; changes {changes}; class maps {maps}; at 320 "
         f"inference took {inference:.2f} and training {training:.2f} of the time")
    grew = status == 0 and widths and widths[0] == 320 and max(widths) > 320
    # The next step, 384, has 1.44 times the area: the budget's 0.75 of 0.5 for inference, 0.9
    # of the time for training (distill/README.md, "The training size").
    if not grew and status == 0 and (inference * 1.44 > 0.375 or training * 1.44 > 0.9):
        for what in ("the input grows", "the log says why", "the class map follows"):
            ok(True, f"{what} # SKIP no room on this box at 320: inference {inference:.2f}, "
               f"training {training:.2f} of the time")
    else:
        ok(grew, f"real time: the input grows from 320 ({widths})")
        ok(changes and re.match(r"320x240 -> \d+x\d+: a finer class map would resolve thin",
                                changes[0]),
           "the debug log says why it grew")
        ok(maps and maps[0] == 160 and max(maps) == max(widths) // 2,
           "the class map (the meta's) follows the input, at half its size")

    stats, changes, _, status = launch(clip, f"sync=false max-inference-long-side=0 {common}")
    widths = {w for w, _, _ in stats}
    ok(status == 0 and widths == {320} and not changes,
       f"max-inference-long-side=0: the input stays at 320 ({sorted(widths)})")

    stats, changes, _, status = launch(clip, f"sync=true {common}")
    widths = {w for w, _, _ in stats}
    ok(status == 0 and widths == {640} and not changes,
       f"sync mode: the input stays at 640 ({sorted(widths)})")
    teacher.stop()


if __name__ == "__main__":
    run_test(main)
