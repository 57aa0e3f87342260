"""The reference teacher (`run` beside this file) as a child process of a test or a bench, on a
loopback port: started, waited for, stopped. A context manager:

    with TeacherProcess("--model", "replay", "--video", video, "--labels", labels) as teacher:
        ...teacher.url...  # "http://127.0.0.1:PORT"; the KServe routes are under /v2

The tools import it as they import isnet_client: with teacher-server/ on sys.path. A teacher not
stopped is stopped when the interpreter exits."""
import atexit
import os
import shlex
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request

RUN = os.path.join(os.path.dirname(os.path.realpath(__file__)), "run")
STOP_TIMEOUT_S = 10

_running = set()


class TeacherError(RuntimeError):
    """The teacher did not come up: the message names the command and says why."""


class TeacherProcess:
    def __init__(self, *flags, port=0, ready=True, ca_file=None, nice=None, quiet=True,
                 timeout=300):
        """Starts run with flags (without --port) on 127.0.0.1.

        port: 0 for a free one (self.port tells which), or one to serve on again. ready: return
        once GET /v2/health/ready answers 200 (False: once listening, the model still loading).
        ca_file: the CA that checks an https (--tls-cert) teacher while waiting for it. nice: the
        niceness it runs at. quiet: its stderr goes to a log file (its end in errors, all of it
        from stderr()) rather than to ours. timeout: seconds to listen (the first run installs
        the npm packages), then as many to be ready. TeacherError if it does not come up, the
        process stopped."""
        argv = [RUN, *flags, "--port", str(port)]
        if nice is not None:
            argv = ["nice", "-n", str(nice)] + argv
        self.command = shlex.join(argv)
        self.log = tempfile.TemporaryFile() if quiet else None
        # Its own session: stop() ends whatever it started too.
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     start_new_session=True)
        _running.add(self)
        try:
            self.url = self._listening_url(timeout)
            self.port = int(self.url.rsplit(":", 1)[1])
            if ready:
                self._wait_ready(ca_file, timeout)
        except BaseException:
            self.stop()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _listening_url(self, timeout):
        """From the one line run prints on stdout: "… listening on http://HOST:PORT/v2 (…)"."""
        found = []

        def read():
            for line in self.proc.stdout:
                if " listening on " in line and "/v2" in line:
                    found.append(line.split(" listening on ", 1)[1].split("/v2", 1)[0])
                    return
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if found:
            return found[0]
        if not reader.is_alive():  # its stdout closed: it is ending
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is not None:
            raise TeacherError(f"{self.command} ended ({self._status()}) before listening"
                               f"{self._said()}")
        raise TeacherError(f"{self.command} printed no listening line in {timeout} s"
                           f"{self._said()}")

    def _wait_ready(self, ca_file, timeout):
        context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=5,
                                            context=context) as reply:
                    if reply.status == 200:
                        return
            except OSError:  # refused, 503 while loading (HTTPError), TLS
                pass
            if self.proc.poll() is not None:
                raise TeacherError(f"{self.command} ended ({self._status()}) before it was "
                                   f"ready{self._said()}")
            if time.monotonic() > deadline:
                raise TeacherError(f"{self.command} at {self.url} is not ready after {timeout} "
                                   f"s{self._said()}")
            time.sleep(0.2)

    def _status(self):
        code = self.proc.returncode
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def _said(self):
        if self.log is None:
            return "; its messages are on stderr"
        return ": " + (self.stderr().strip()[-2000:] or "(no message)")

    def stderr(self):
        """What it wrote on stderr so far (quiet only)."""
        if self.log is None:
            return ""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        """SIGTERM to its process group, then SIGKILL if it has not exited in 10 s; reaps it.
        Does nothing the second time."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait()
        self.proc.stdout.close()
        _running.discard(self)

    def _signal_group(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


@atexit.register
def _stop_all():
    for teacher in list(_running):
        teacher.stop()
