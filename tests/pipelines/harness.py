"""Shared by the pipelines tests: TAP output, processes that are always stopped, free ports, the
replay teacher and the file camera (real servers on loopback)."""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

BUILD = os.environ["DISTILL_BUILD_ROOT"]
SOURCE = os.environ["DISTILL_SOURCE_ROOT"]
sys.path.insert(0, os.path.join(SOURCE, "teacher-server"))
from teacher_process import TeacherProcess  # noqa: E402
VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
LABELS = os.path.join(SOURCE, "data", "vtest", "labels.mkv")

_processes = []
_count = 0
_failed = 0


def ok(condition, what):
    global _count, _failed
    _count += 1
    if not condition:
        _failed += 1
    print(f"{'ok' if condition else 'not ok'} {_count} - {what}", flush=True)
    return condition


def diag(text):
    for line in str(text).splitlines():
        print(f"# {line}", flush=True)


def finish():
    stop_all()
    print(f"1..{_count}", flush=True)
    sys.exit(1 if _failed else 0)


def run_test(main):
    """Runs a test's main: a crash is a failure, with the servers still stopped."""
    try:
        main()
    except Exception as e:
        ok(False, f"unexpected: {e!r}")
    finish()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A program whose stdout is read for a line announcing where it listens."""

    def __init__(self, argv, wait_for, timeout=60, env=None):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="stderr-", suffix=".log")
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env, start_new_session=True)
        _processes.append(self)
        self.lines = []
        self.match = None
        deadline = time.monotonic() + timeout
        while wait_for and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            self.match = re.search(wait_for, line)
            if self.match:
                break
        if wait_for and not self.match:
            self.stop()
            raise RuntimeError(f"{argv[0]} did not print /{wait_for}/: {self.stderr()[-2000:]}")

    def read_until(self, pattern, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                return None
            self.lines.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        return None

    def stderr(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            if self.wait(10) is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self in _processes:
            _processes.remove(self)


def stop_all():
    for p in list(_processes):
        p.stop()


def replay_teacher(*flags, ready=False, ca_file=None):
    """The replay teacher of vtest on a free port, with more of run's flags: (teacher, its URL).
    Returned once listening, unless ready: clients probe its health while it loads."""
    teacher = TeacherProcess("--model", "replay", "--video", VTEST, "--labels", LABELS, *flags,
                             ready=ready, ca_file=ca_file)
    return teacher, teacher.url


def file_camera(port, video=VTEST):
    p = Process([os.path.join(BUILD, "pipelines", "distill-camera"), video, "--loop", "--port",
                 str(port)], r"serving (rtsp://\S+)")
    return p, p.match.group(1)


def ffmpeg_frames(url, frames, timeout=60):
    """Decodes frames of an RTSP stream with ffmpeg (a real RTSP client); returns (frames
    decoded, stderr)."""
    try:
        r = subprocess.run(["ffmpeg", "-nostdin", "-rtsp_transport", "tcp", "-i", url,
                            "-frames:v", str(frames), "-f", "null", "-"],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return 0, (e.stderr or b"").decode(errors="replace") + "\n(timed out)"
    got = re.findall(r"frame=\s*(\d+)", r.stderr)
    return (int(got[-1]) if got and r.returncode == 0 else 0), r.stderr
