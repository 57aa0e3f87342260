#!/usr/bin/python3
"""The ready gst-launch-1.0 lines of pipelines/ run as users run them: file -> window (fakesink
standing in for the window), RTSP camera -> overlay -> H.264 file, file -> masks on disk
learning from the replay teacher. TAP output."""
import glob
import os
import signal
import subprocess
import tempfile
import time

from harness import SOURCE, VTEST, diag, file_camera, free_port, ok, replay_teacher, run_test

FRAMES = 30


def script(name):
    return os.path.join(SOURCE, "pipelines", name)


def run(argv, timeout, env=None):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **(env or {})))
    if r.returncode != 0:
        diag(r.stdout[-1000:] + r.stderr[-1500:])
    return r


def frame_count(path):
    r = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v",
                        "-show_entries", "stream=codec_name,nb_read_frames", "-of", "csv=p=0",
                        path], capture_output=True, text=True, timeout=60)
    codec, _, frames = r.stdout.strip().partition(",")
    return codec, int(frames) if frames.isdigit() else 0


def pgm_values(path):
    with open(path, "rb") as f:
        data = f.read()
    magic, width, height, maxval = data.split(maxsplit=4)[:4]
    pixels = data[-int(width) * int(height):]
    return magic, int(width), int(height), set(pixels)


def main():
    work = tempfile.TemporaryDirectory(prefix="distill-launch-test-")
    clip = os.path.join(work.name, "clip.avi")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", VTEST, "-frames:v", str(FRAMES),
                    "-c:v", "copy", clip], check=True, timeout=60)

    r = run([script("file-to-window.sh"), clip], 120, {"DISTILL_SINK": "fakesink"})
    ok(r.returncode == 0, "file-to-window.sh plays a file through distillseg to the sink")
    r = run([script("file-to-window.sh"), "/no/such.avi"], 30)
    ok(r.returncode == 2 and "no such file" in r.stderr, "file-to-window.sh: a missing file is "
       "a clear error")

    teacher, teacher_url = replay_teacher()
    masks = os.path.join(work.name, "masks")
    r = run([script("file-to-masks.sh"), clip, masks, teacher_url], 240)
    files = sorted(glob.glob(os.path.join(masks, "*.pgm")))
    ok(r.returncode == 0 and len(files) == FRAMES,
       f"file-to-masks.sh writes a mask per frame ({len(files)} of {FRAMES})")
    if files:
        magic, width, height, values = pgm_values(files[-1])
        ok(magic == b"P5" and (width, height) == (768, 576) and values <= {0, 1},
           f"the masks are 768x576 PGM class indices ({sorted(values)})")

    camera, camera_url = file_camera(free_port())
    out = os.path.join(work.name, "annotated.mp4")
    recorder = subprocess.Popen([script("rtsp-to-h264-file.sh"), camera_url, out, teacher_url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(8)
    recorder.send_signal(signal.SIGINT)  # gst-launch -e: the MP4 is finished properly
    try:
        recorder.wait(30)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.wait()
    codec, frames = frame_count(out) if os.path.exists(out) else ("", 0)
    if not ok(recorder.returncode == 0 and codec == "h264" and frames >= 20,
              f"rtsp-to-h264-file.sh records the camera to H.264 MP4 ({codec}, {frames} frames, "
              f"exit status {recorder.returncode})"):
        diag(recorder.stderr.read()[-1500:])
    camera.stop()
    teacher.stop()


if __name__ == "__main__":
    run_test(main)
