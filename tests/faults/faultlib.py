"""Shared by tests/faults and bench/faults: the replay teacher started (and restarted) on a fixed
loopback port with fault flags, and a distillseg pipeline watched by stream-watch, whose JSON
lines are kept with the time they arrived."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.environ["DISTILL_SOURCE_ROOT"], "tests", "pipelines"))
from harness import BUILD, LABELS, VTEST  # noqa: E402
from teacher_process import TeacherProcess  # noqa: E402  (harness puts teacher-server/ on the path)

STREAM_WATCH = os.path.join(BUILD, "tests", "faults", "stream-watch")


class Teacher:
    """The replay teacher on one port, restarted with other flags to make faults; stop() leaves
    the port with nothing listening (refused connections)."""

    def __init__(self, port, token_file=None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.token_file = token_file
        self.process = None

    def start(self, *flags, token_file=None, ready=True):
        """(Re)starts the teacher; ready: waits until it has loaded the video (not for a teacher
        that may go down first, --down-after)."""
        self.stop()
        token_file = token_file or self.token_file
        token = ["--token-file", token_file] if token_file else []
        self.process = TeacherProcess("--model", "replay", "--video", VTEST, "--labels", LABELS,
                                      *token, *flags, port=self.port, ready=ready)

    def stop(self):
        if self.process:
            self.process.stop()
            self.process = None


def distill_pipeline(teacher_url, *props, video=VTEST, sink_sync=True, size=(320, 240)):
    """vtest decoded -> distillseg -> fakesink named sink, paced at the video's rate. size: the
    student's input, small by default so that two shared cores keep the video's rate while
    training; None for the element's own."""
    if size:
        props = (f"inference-width={size[0]}", f"inference-height={size[1]}") + props
    return (f"filesrc location={video} ! decodebin ! videoconvert ! distillseg name=seg "
            f"teacher-url={teacher_url} stats-interval=250 {' '.join(props)} ! "
            f"fakesink name=sink sync={'true' if sink_sync else 'false'}")


class Watch:
    """stream-watch running a pipeline; every JSON line it prints, with its arrival time."""

    def __init__(self, pipeline, loop=True, env=None):
        argv = [STREAM_WATCH] + (["--loop"] if loop else []) + [pipeline]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, start_new_session=True)
        self.events = []  # (monotonic time, dict)
        self.lock = threading.Condition()
        self.stderr = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"unparsed": line}
            with self.lock:
                self.events.append((time.monotonic(), event))
                self.lock.notify_all()
        with self.lock:
            self.events.append((time.monotonic(), {"closed": True}))
            self.lock.notify_all()

    def stats(self):
        """The last distill-stats counters (zeros before the first)."""
        with self.lock:
            for _, e in reversed(self.events):
                if "stats" in e:
                    return e["stats"]
        return {"frames": 0, "teacher-queries": 0, "teacher-errors": 0, "updates": 0,
                "rollbacks": 0}

    def wait(self, predicate, timeout):
        """Waits until predicate(stats) holds; False at the timeout or when the pipeline ended."""
        return self.wait_for(lambda: predicate(self.stats()), timeout)

    def wait_for(self, condition, timeout):
        """Waits until condition() holds, checked at each line the pipeline prints; False at the
        timeout or when the pipeline ended."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                if condition():
                    return True
                if self.ended() or time.monotonic() >= deadline:
                    return False
                self.lock.wait(min(1.0, max(0.0, deadline - time.monotonic())))

    def ended(self):
        return any("end" in e or "closed" in e for _, e in self.events)

    def between(self, start, end, key):
        with self.lock:
            return [e for t, e in self.events if start <= t <= end and key in e]

    def flow(self, start, end):
        """(frames out, longest gap in ms) between two moments, from the tick lines."""
        ticks = [e["tick"] for e in self.between(start, end, "tick")]
        if len(ticks) < 2:
            return 0, 0.0
        return ticks[-1]["frames"] - ticks[0]["frames"], max(t["gap_ms"] for t in ticks[1:])

    def stop(self, timeout=60):
        """EOS, then the end line (dict) or None when it did not end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(10)
        with self.lock:
            ends = [e for _, e in self.events if "end" in e]
        return ends[-1] if ends else None
