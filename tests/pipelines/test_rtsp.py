#!/usr/bin/python3
"""distill-rtsp end to end over real RTSP on loopback: a file served as a camera (distill-camera)
-> distill-rtsp, learning from the replay teacher over HTTP -> ffmpeg decoding the annotated
stream. The camera goes away and comes back; a wrong password is refused; /metrics is Prometheus
text whose counters move; SIGINT stops it cleanly with the checkpoint saved; plot-stats charts the
CSV log. TAP output."""
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.request

from harness import (BUILD, SOURCE, VTEST, Process, diag, ffmpeg_frames, file_camera, free_port,
                     ok, replay_teacher, run_test)

METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{camera="((?:[^"\\]|\\.)*)"\} (\S+)$')
NAMES = ["distill_frames_total", "distill_fps", "distill_stride", "distill_last_miou",
         "distill_shown_miou",
         "distill_teacher_queries_total", "distill_teacher_errors_total", "distill_updates_total",
         "distill_student_ms", "distill_input_width", "distill_input_height",
         "distill_inference_share", "distill_train_share", "distill_hibernating"]


def scrape(url):
    """Parses the Prometheus text exposition format strictly enough to catch a malformed page:
    every sample's family has HELP and TYPE before it; values are numbers; counters end in
    _total. Returns {(name, camera): value} or raises ValueError."""
    with urllib.request.urlopen(url, timeout=10) as r:
        if not r.headers.get("Content-Type", "").startswith("text/plain"):
            raise ValueError(f"Content-Type {r.headers.get('Content-Type')}")
        text = r.read().decode()
    if not text.endswith("\n"):
        raise ValueError("the page does not end with a newline")
    types, helps, samples = {}, set(), {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind not in ("counter", "gauge") or name in types:
                raise ValueError(f"bad TYPE line: {line}")
            if kind == "counter" and not name.endswith("_total"):
                raise ValueError(f"counter {name} does not end in _total")
            types[name] = kind
        else:
            m = METRIC_LINE.match(line)
            if not m:
                raise ValueError(f"not a sample line: {line!r}")
            name, camera, value = m.groups()
            if name not in types or name not in helps:
                raise ValueError(f"{name} has no TYPE/HELP before its samples")
            samples[(name, camera)] = float(value)
    return samples


def wait_metric(url, name, camera, predicate, timeout):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = scrape(url).get((name, camera))
        if value is not None and predicate(value):
            return value
        time.sleep(0.5)
    return value


def main():
    work = tempfile.TemporaryDirectory(prefix="distill-rtsp-test-")
    auth = os.path.join(work.name, "viewers")
    with open(auth, "w") as f:
        f.write("# viewers\nalice:s3cret\n")
    os.chmod(auth, 0o600)
    checkpoints = os.path.join(work.name, "checkpoints")
    csv = os.path.join(work.name, "stats.csv")

    teacher, teacher_url = replay_teacher()
    camera_port = free_port()
    camera, camera_url = file_camera(camera_port)
    # A small student input keeps the test quick on two shared cores.
    rtsp = Process([os.path.join(BUILD, "pipelines", "distill-rtsp"),
                    "--input", f"door={camera_url}", "--teacher", teacher_url,
                    "--port", "0", "--metrics-port", "0", "--auth-file", auth,
                    "--checkpoint-dir", checkpoints, "--csv", csv, "--stats-interval", "500",
                    "--inference-budget", "0.3", "-o", "inference-width=320", "-o", "inference-height=240",
                    "-o", "min-stride=4"],
                   r"metrics at (http://\S+)")
    metrics = rtsp.match.group(1)
    stream = rtsp.read_until(r"door at (rtsp://\S+)").group(1)
    ok(stream.startswith("rtsp://127.0.0.1:") and stream.endswith("/door"),
       f"the camera's stream is named after its input, on loopback: {stream}")
    viewer = stream.replace("rtsp://", "rtsp://alice:s3cret@")

    frames, log = ffmpeg_frames(viewer, 50)
    if not ok(frames >= 50, f"an RTSP client decodes 50 annotated frames ({frames})"):
        diag(log[-1500:])
        diag(rtsp.stderr()[-1500:])
    probe = subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-select_streams",
                            "v", "-show_entries", "stream=codec_name,width,height", "-of",
                            "csv=p=0", viewer], capture_output=True, text=True, timeout=30)
    ok(probe.stdout.strip() == "h264,768,576", f"the stream is H.264 768x576 ({probe.stdout.strip()})")

    wrong, log = ffmpeg_frames(stream.replace("rtsp://", "rtsp://alice:wrong@"), 5, timeout=20)
    ok(wrong == 0 and "401" in log, "a wrong password is refused (401)")
    anonymous, log = ffmpeg_frames(stream, 5, timeout=20)
    ok(anonymous == 0 and "401" in log, "no password is refused (401)")

    try:
        first = scrape(metrics)
        ok(all((n, "door") in first for n in NAMES), "/metrics parses as Prometheus text and "
           "has every figure, labelled by camera")
        queries = wait_metric(metrics, "distill_teacher_queries_total", "door",
                              lambda v: v >= 2, 60)
        start = first[("distill_frames_total", "door")]
        moved = wait_metric(metrics, "distill_frames_total", "door", lambda v: v > start, 10)
        ok(moved > start, f"distill_frames_total moves ({start:.0f} -> {moved:.0f})")
        second = scrape(metrics)
        ok(queries is not None and queries >= 2, f"the teacher is queried ({queries})")
        ok(second[("distill_fps", "door")] > 0, f"fps ({second[('distill_fps', 'door')]:.1f})")
        ok(second[("distill_camera_up", "door")] == 1, "the camera is up")
        size = (second[("distill_input_width", "door")], second[("distill_input_height", "door")])
        ok(size == (320, 240), f"the input size set by hand stays, budget or not: {size}")
        share = second[("distill_inference_share", "door")]
        ok(0 < share < 10, f"the inference share of the frame interval is measured ({share:.3f})")
    except (ValueError, OSError) as e:
        ok(False, f"/metrics: {e}")

    # The camera goes away: distill-rtsp notices and reconnects once it is back.
    camera.stop()
    down = wait_metric(metrics, "distill_camera_up", "door", lambda v: v == 0, 30)
    ok(down == 0, "the camera's loss is noticed (distill_camera_up 0)")
    time.sleep(1)
    camera, _ = file_camera(camera_port)
    up = wait_metric(metrics, "distill_camera_up", "door", lambda v: v == 1, 40)
    ok(up == 1, "the camera is reconnected")
    ok(scrape(metrics)[("distill_reconnects_total", "door")] >= 1, "the reconnection is counted")
    frames, log = ffmpeg_frames(viewer, 20)
    if not ok(frames >= 20, f"a client receives frames again after the reconnection ({frames})"):
        diag(log[-1500:])
        diag(rtsp.stderr()[-1500:])
    ok("door: input lost" in rtsp.stderr(), "the loss is reported on stderr")

    rtsp.signal(signal.SIGINT)
    status = rtsp.wait(20)
    ok(status == 0, f"SIGINT stops distill-rtsp cleanly (exit status {status})")
    saved = os.path.join(checkpoints, "door.safetensors")
    ok(os.path.getsize(saved) > 1000 if os.path.exists(saved) else False,
       "the camera's student is saved to DIR/NAME.safetensors")
    progress = rtsp.stderr()
    ok(re.search(r"door +\d+\.\d fps +stride +\d+ +teacher +\d+\.\d% +mIoU", progress),
       "the progress line reports fps, stride, teacher fraction and mIoU")

    # A restart starts from the saved student; a second camera (unnamed: cam1) shares the
    # process, its compute threads and the teacher client.
    rtsp = Process([os.path.join(BUILD, "pipelines", "distill-rtsp"), "--input",
                    f"door={camera_url}", "--input", camera_url, "--teacher", teacher_url,
                    "--port", "0", "--metrics-port", "0", "--checkpoint-dir", checkpoints,
                    "-o", "inference-width=320", "-o", "inference-height=240"],
                   r"metrics at (http://\S+)", env=dict(os.environ, GST_DEBUG="distillseg:4"))
    metrics = rtsp.match.group(1)
    ok(re.search(r"starting from the checkpoint \S*door\.safetensors", rtsp.stderr()),
       "the restarted camera starts from its checkpoint")
    streams = [rtsp.read_until(r"(door|cam1) at (rtsp://\S+)") for _ in range(2)]
    streams = {m.group(1): m.group(2) for m in streams if m}
    for name in ("door", "cam1"):
        frames, _ = ffmpeg_frames(streams.get(name, ""), 10)
        ok(frames >= 10, f"two cameras in one process: {name} is served ({frames} frames)")
    queries = wait_metric(metrics, "distill_teacher_queries_total", "cam1", lambda v: v >= 1, 30)
    ok(queries and queries >= 1, "the second camera queries the shared teacher")
    before = os.path.getmtime(saved)
    rtsp.signal(signal.SIGTERM)
    status = rtsp.wait(20)
    if not ok(status == 0 and os.path.getmtime(saved) >= before
              and os.path.exists(os.path.join(checkpoints, "cam1.safetensors")),
              f"SIGTERM stops it cleanly too, saving each camera's student (exit status {status})"):
        diag(rtsp.stderr()[-2500:])

    with open(csv) as f:
        rows = f.read().splitlines()
    ok(rows[0].startswith("time_s,camera,frames,fps,stride") and len(rows) > 5,
       f"the CSV log has a header and rows ({len(rows) - 1})")
    chart = os.path.join(work.name, "stats.png")
    subprocess.run([os.path.join(SOURCE, "pipelines", "plot-stats"), csv, chart], check=False,
                   timeout=120)
    with open(chart, "rb") if os.path.exists(chart) else open(os.devnull, "rb") as f:
        ok(f.read(8) == b"\x89PNG\r\n\x1a\n", "plot-stats charts the CSV log as a PNG")

    # An HTTP stream as input (python's http.server serving the video file on loopback).
    http_port = free_port()
    http = Process(["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", str(http_port),
                    "--directory", os.path.dirname(VTEST)], None)
    time.sleep(1)
    rtsp = Process([os.path.join(BUILD, "pipelines", "distill-rtsp"), "--input",
                    f"web=http://127.0.0.1:{http_port}/{os.path.basename(VTEST)}", "--port", "0",
                    "--metrics-port", "0", "-o", "inference-width=320",
                    "-o", "inference-height=240"], r"metrics at (http://\S+)")
    frames = wait_metric(rtsp.match.group(1), "distill_frames_total", "web", lambda v: v >= 20,
                         30)
    ok(frames is not None and frames >= 20, f"an HTTP stream as input ({frames} frames)")
    rtsp.signal(signal.SIGTERM)
    ok(rtsp.wait(20) == 0, "and it stops cleanly")
    http.stop()

    bad = subprocess.run([os.path.join(BUILD, "pipelines", "distill-rtsp"), "--input",
                          "/no/such/video.avi", "--metrics-port", "-1"],
                         capture_output=True, text=True, timeout=30)
    ok(bad.returncode == 2 and "neither a file" in bad.stderr,
       "a missing input file is a clear error")
    camera.stop()
    teacher.stop()


if __name__ == "__main__":
    run_test(main)
