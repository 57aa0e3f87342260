#!/usr/bin/python3
"""Bad input never crashes or hangs distillseg: odd (641x361), tiny (16x16) and 4K frames, a
resolution change mid-stream, a truncated and a corrupted copy of vtest.avi, and cameras that send
garbage over HTTP and RTSP. Each pipeline runs under stream-watch with a time limit, learning from
the replay teacher (sync=true, so that every teacher round happens within the run); each case
says whether it works (EOS, every frame out, the teacher queried, distill-stats counting every
frame with totals that never go back, across a size change too) or ends with a GStreamer error
naming what was wrong. TAP output."""
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading

from faultlib import STREAM_WATCH, VTEST
from harness import diag, finish, ok, replay_teacher

LIMIT = 180  # seconds; a case still running then has hung


def watch(pipeline):
    """Runs the pipeline to its end; (exit status or None when it hung, end line, every
    distill-stats in order, errors)."""
    try:
        r = subprocess.run([STREAM_WATCH, pipeline], capture_output=True, text=True,
                           timeout=LIMIT)
    except subprocess.TimeoutExpired:
        return None, None, {}, []
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    ends = [e for e in lines if "end" in e]
    stats = [e["stats"] for e in lines if "stats" in e]
    if r.returncode < 0 or not ends:
        diag(r.stderr[-2000:])
    return r.returncode, ends[-1] if ends else None, stats, [e for e in lines if "error" in e]


def distill(teacher_url, sync=True):
    """sync=true: every teacher round within the run, two steps each (each step a forward and
    backward pass at the frame's own input size, which is what odd sizes must survive; the
    default 16 steps would only repeat them); whole files go as a stream goes (async, a small
    student input), to keep them short."""
    mode = ("sync=true max-updates=2" if sync else
            "sync=false inference-width=160 inference-height=120")
    return (f"distillseg name=seg teacher-url={teacher_url} {mode} min-stride=2 max-stride=4 "
            "stats-interval=100 ! fakesink name=sink")


COUNTERS = ("frames", "teacher-queries", "teacher-errors", "updates", "rollbacks")


def went_back(stats):
    """The distill-stats counters that fell from one message to the next, with the two values:
    a total must only grow within a run, a new size (a new engine inside) included."""
    return [(key, a[key], b[key]) for a, b in zip(stats, stats[1:]) for key in COUNTERS
            if b[key] < a[key]]


def expect_works(what, source, frames, teacher_url):
    status, end, history, errors = watch(f"{source} ! {distill(teacher_url)}")
    stats = history[-1] if history else {}
    ok(status == 0 and end["end"] == "eos" and end["frames"] == frames and
       stats.get("teacher-queries", 0) > 0 and stats.get("teacher-errors", 1) == 0,
       f"{what}: works ({status=}, {end=}, {stats=}, {errors=})")
    ok(stats.get("frames") == frames and not went_back(history),
       f"{what}: distill-stats counts every frame of the run ({stats.get('frames')} of {frames}) "
       f"and its totals never go back ({went_back(history)} in {len(history)} messages)")


def expect_end(what, source, teacher_url, expected, error_words=()):
    """expected "eos": plays what it can to EOS; "error": stops with a GStreamer error holding one
    of error_words. Never a crash (killed by a signal) or a hang (LIMIT)."""
    status, end, _, errors = watch(f"{source} ! {distill(teacher_url, sync=False)}")
    ok(status is not None, f"{what}: ends within {LIMIT} s")
    ok(status is None or status >= 0, f"{what}: no crash (exit status {status})")
    if expected == "eos":
        ok(status == 0 and end["end"] == "eos" and end["frames"] > 0,
           f"{what}: plays what it can to EOS ({end and end['frames']} frames, {errors})")
    else:
        message = errors[0]["error"] if errors else ""
        ok(status == 1 and any(w in message.lower() for w in error_words),
           f"{what}: ends with a clear error ({message!r} from "
           f"{errors[0]['from'] if errors else '?'})")


def make_pngs(folder):
    """Frames of three sizes in a row, for a resolution change mid-stream (pngdec renegotiates)."""
    n = 0
    for size in ("320x240", "641x361", "16x16", "320x240"):
        for _ in range(4):
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-ss", str(n), "-i", VTEST,
                            "-frames:v", "1", "-s", size, os.path.join(folder, f"{n:02d}.png")],
                           check=True, timeout=60)
            n += 1
    return n


def garbage_server(http):
    """A camera that sends garbage: accepts connections on loopback and answers each with seeded
    random bytes (after an HTTP header when http is set)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    rng = random.Random(7)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(4096)
                    if http:
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/x-msvideo\r\n"
                                     b"Content-Length: 1048576\r\n\r\n")
                    conn.sendall(bytes(rng.getrandbits(8) for _ in range(1 << 20)))
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def main():
    work = tempfile.TemporaryDirectory(prefix="distill-badinput-")
    teacher, url = replay_teacher()

    expect_works("641x361 I420", "videotestsrc num-buffers=8 ! "
                 "video/x-raw,format=I420,width=641,height=361", 8, url)
    expect_works("641x361 RGB (rows padded to 4 bytes)", "videotestsrc num-buffers=8 ! "
                 "video/x-raw,format=RGB,width=641,height=361", 8, url)
    expect_works("16x16", "videotestsrc num-buffers=8 ! video/x-raw,width=16,height=16", 8, url)
    expect_works("3840x2160", "videotestsrc num-buffers=3 ! "
                 "video/x-raw,format=I420,width=3840,height=2160", 3, url)

    pngs = os.path.join(work.name, "png")
    os.mkdir(pngs)
    n = make_pngs(pngs)
    expect_works("resolution change mid-stream (320x240, 641x361, 16x16, 320x240)",
                 f"multifilesrc location={pngs}/%02d.png caps=image/png,framerate=10/1 ! "
                 "pngdec ! videoconvert", n, url)

    data = open(VTEST, "rb").read()
    truncated = os.path.join(work.name, "truncated.avi")
    with open(truncated, "wb") as f:
        f.write(data[:len(data) // 3])
    expect_end("truncated vtest.avi (first third)",
               f"filesrc location={truncated} ! decodebin ! videoconvert", url, "eos")

    corrupt = bytearray(data)
    rng = random.Random(1)
    for _ in range(200):  # 200 blocks of 512 random bytes, past the headers
        at = rng.randrange(64 * 1024, len(corrupt) - 512)
        corrupt[at:at + 512] = bytes(rng.getrandbits(8) for _ in range(512))
    corrupted = os.path.join(work.name, "corrupted.avi")
    with open(corrupted, "wb") as f:
        f.write(corrupt)
    expect_end("corrupted vtest.avi (200 random blocks)",
               f"filesrc location={corrupted} ! decodebin ! videoconvert", url, "eos")

    server, port = garbage_server(http=True)
    expect_end("an HTTP camera sending garbage",
               f"souphttpsrc location=http://127.0.0.1:{port}/camera.avi ! decodebin ! "
               "videoconvert", url, "error", ["type"])
    server.close()

    server, port = garbage_server(http=False)
    expect_end("an RTSP camera sending garbage",
               f"rtspsrc location=rtsp://127.0.0.1:{port}/camera protocols=tcp "
               "timeout=5000000 tcp-timeout=5000000 ! decodebin ! videoconvert", url, "error",
               ["read", "resource"])
    server.close()

    teacher.stop()
    shutil.rmtree(work.name, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
