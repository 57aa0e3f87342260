#!/usr/bin/python3
"""Security of distill-rtsp and of the teacher link, with real servers on loopback and a CA made
here by openssl: RTSPS (a viewer that checks the certificate decodes frames, one without the CA
is refused, passwords still asked), clear errors for bad certificates and keys, the bearer token
never printed (the element and distill-rtsp against an https teacher that requires it, every
debug category at level 9), /metrics without secrets, and every listening socket on loopback
unless --bind says otherwise (read from /proc/net). TAP output."""
import glob
import ipaddress
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.request

from harness import (BUILD, VTEST, Process, diag, ffmpeg_frames, free_port, ok, replay_teacher,
                     run_test)

DISTILL_RTSP = os.path.join(BUILD, "pipelines", "distill-rtsp")
RTSPS_VIEW = os.path.join(BUILD, "tests", "pipelines", "rtsps-view")
# A small student input keeps each run quick on two shared cores.
SMALL = ["-o", "inference-width=160", "-o", "inference-height=120"]


def openssl(folder, *args):
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def make_certificates(folder):
    """A CA, a server certificate it signs for 127.0.0.1, and a key of another certificate."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(folder, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=gst-distill test CA")
    openssl(folder, "req", *ec, "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    with open(os.path.join(folder, "san"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(folder, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san")
    openssl(folder, "req", *ec, "-keyout", "other.key", "-out", "other.csr", "-subj", "/CN=other")
    for key in glob.glob(os.path.join(folder, "*.key")):
        os.chmod(key, 0o600)
    return {name: os.path.join(folder, name)
            for name in ("ca.pem", "server.pem", "server.key", "other.key")}


def write_secret(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def _address(hex_address):
    """/proc/net/{tcp,udp}{,6} addresses: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)
    return getattr(address, "ipv4_mapped", None) or address


def sockets(pid):
    """The process's TCP listeners and UDP sockets: [(protocol, address, port)]."""
    inodes = set()
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        try:
            m = re.match(r"socket:\[(\d+)\]", os.readlink(fd))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    found = []
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/net/{protocol}") as f:
            next(f)
            for line in f:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if inode not in inodes or (protocol.startswith("tcp") and state != "0A"):
                    continue
                address, port = local.split(":")
                found.append((protocol, _address(address), int(port, 16)))
    return found


def listeners_text(found):
    return ", ".join(f"{p} {a}:{port}" for p, a, port in found) or "none"


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def wait_for_queries(metrics_url, camera, timeout=60):
    """distill-rtsp's teacher counters once it has queried the teacher twice (or the timeout)."""
    deadline = time.monotonic() + timeout
    queries = errors = 0
    while time.monotonic() < deadline:
        text = fetch(metrics_url)
        q = re.search(rf'^distill_teacher_queries_total\{{camera="{camera}"\}} (\S+)', text, re.M)
        e = re.search(rf'^distill_teacher_errors_total\{{camera="{camera}"\}} (\S+)', text, re.M)
        queries, errors = float(q.group(1)) if q else 0, float(e.group(1)) if e else 0
        if queries >= 2:
            break
        time.sleep(0.5)
    return queries, errors


def rtsps_view(url, ca, frames=20):
    r = subprocess.run([RTSPS_VIEW, url, ca, str(frames)], capture_output=True, text=True,
                       timeout=60)
    got = re.search(r"decoded (\d+) frames", r.stdout)
    return (int(got.group(1)) if got and r.returncode == 0 else 0), r.stderr


def test_rtsps(files, work):
    auth = write_secret(os.path.join(work, "viewers"), "alice:s3cret\n")
    rtsp = Process([DISTILL_RTSP, "--input", f"door={VTEST}", "--port", "0", "--metrics-port",
                    "-1", "--tls-cert", files["server.pem"], "--tls-key", files["server.key"],
                    "--auth-file", auth, *SMALL], r"door at (\S+)")
    url = rtsp.match.group(1)
    ok(url.startswith("rtsps://127.0.0.1:"), f"with --tls-cert the stream is rtsps:// ({url})")
    viewer = url.replace("rtsps://", "rtsps://alice:s3cret@")
    frames, log = rtsps_view(viewer, files["ca.pem"])
    if not ok(frames >= 20, f"a viewer trusting the test CA decodes 20 frames over RTSPS "
              f"({frames})"):
        diag(log[-1500:])
        diag(rtsp.stderr()[-1500:])
    frames, log = rtsps_view(viewer, "-")
    ok(frames == 0 and "certificate refused" in log and "unknown CA" in log,
       "a viewer without the CA refuses the server's certificate")
    frames, log = rtsps_view(url.replace("rtsps://", "rtsps://alice:wrong@"), files["ca.pem"])
    ok(frames == 0 and "401" in log, "over TLS a wrong password is still refused (401)")
    # The time is ffmpeg's start and TLS handshake beside a sanitized server on 2 busy cores.
    frames, log = ffmpeg_frames(viewer, 10, timeout=90)
    if not ok(frames >= 10, f"ffmpeg reads the rtsps:// stream too ({frames} frames)"):
        diag(log[-1500:])
        diag(rtsp.stderr()[-1500:])
    frames, _ = ffmpeg_frames(viewer.replace("rtsps://", "rtsp://"), 5, timeout=20)
    ok(frames == 0, "plain rtsp:// on the TLS port gets nothing")
    rtsp.signal(signal.SIGTERM)
    ok(rtsp.wait(20) == 0, "it stops cleanly")

    # Without --auth-file anyone with the CA may watch, still over TLS.
    rtsp = Process([DISTILL_RTSP, "--input", f"door={VTEST}", "--port", "0", "--metrics-port",
                    "-1", "--tls-cert", files["server.pem"], "--tls-key", files["server.key"],
                    *SMALL], r"door at (\S+)")
    frames, log = rtsps_view(rtsp.match.group(1), files["ca.pem"], 5)
    ok(frames >= 5, f"RTSPS without passwords ({frames} frames)")
    rtsp.stop()


def test_bad_certificates(files, work):
    not_a_key = os.path.join(work, "key-folder")
    os.mkdir(not_a_key)
    cases = [
        (["--tls-cert", files["server.pem"]], "--tls-cert and --tls-key go together",
         "a certificate without a key"),
        (["--tls-cert", os.path.join(work, "none.pem"), "--tls-key", files["server.key"]],
         "--tls-cert: ", "a missing certificate"),
        (["--tls-cert", files["server.pem"], "--tls-key", not_a_key], "--tls-key: ",
         "an unreadable key"),
        (["--tls-cert", files["server.pem"], "--tls-key", files["other.key"]],
         "is it the key of that certificate?", "the key of another certificate"),
        (["--tls-cert", files["server.key"], "--tls-key", files["server.key"]],
         "No PEM-encoded certificate", "a key given as the certificate"),
    ]
    for args, message, what in cases:
        r = subprocess.run([DISTILL_RTSP, "--input", VTEST, "--port", "0", "--metrics-port", "-1",
                            *args], capture_output=True, text=True, timeout=60)
        if not ok(r.returncode == 2 and message in r.stderr, f"{what} is a clear error"):
            diag(r.stderr[-800:])


def test_listeners(teacher):
    rtsp = Process([DISTILL_RTSP, "--input", f"door={VTEST}", "--port", "0", "--metrics-port",
                    "0", *SMALL], r"door at (rtsp://\S+)")
    # A viewer over UDP makes the media bind its RTP and RTCP ports.
    viewer = subprocess.Popen(["ffmpeg", "-nostdin", "-rtsp_transport", "udp", "-i",
                               rtsp.match.group(1), "-frames:v", "300", "-f", "null", "-"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    found = sockets(rtsp.proc.pid)
    while time.monotonic() < deadline and not any(p.startswith("udp") for p, _, _ in found):
        time.sleep(0.5)
        found = sockets(rtsp.proc.pid)
    viewer.kill()
    viewer.wait()
    tcp = [s for s in found if s[0].startswith("tcp")]
    udp = [s for s in found if s[0].startswith("udp")]
    ok(len(tcp) >= 2 and udp and all(a.is_loopback for _, a, _ in found),
       f"by default distill-rtsp listens on loopback only: RTSP, /metrics and the UDP ports of "
       f"a viewer ({listeners_text(found)})")
    rtsp.stop()

    rtsp = Process([DISTILL_RTSP, "--input", f"door={VTEST}", "--port", "0", "--metrics-port",
                    "0", "--bind", "0.0.0.0", *SMALL], r"door at (rtsp://\S+)")
    found = sockets(rtsp.proc.pid)
    ok(len(found) >= 2 and all(a.is_unspecified for _, a, _ in found),
       f"with --bind 0.0.0.0 on every address ({listeners_text(found)})")
    rtsp.stop()

    found = sockets(teacher.proc.pid)
    ok(found and all(a.is_loopback for _, a, _ in found),
       f"by default teacher-server listens on loopback only ({listeners_text(found)})")


def leaks(token, texts):
    return [name for name, text in texts.items() if token in text]


def test_token(files, work, teacher_url, token):
    token_file = write_secret(os.path.join(work, "teacher-token"), token + "\n")
    debug_log = os.path.join(work, "element-debug.log")
    env = dict(os.environ, GST_DEBUG="*:9", GST_DEBUG_NO_COLOR="1", GST_DEBUG_FILE=debug_log,
               G_MESSAGES_DEBUG="all")
    r = subprocess.run(
        ["gst-launch-1.0", "-m", "-v", "filesrc", f"location={VTEST}", "!", "decodebin", "!",
         "videoconvert", "!", "identity", "eos-after=20", "!", "distillseg",
         f"teacher-url={teacher_url}", f"teacher-token-file={token_file}",
         f"teacher-ca-file={files['ca.pem']}", "sync=true", "min-stride=4",
         "inference-width=160", "inference-height=120", "stats-interval=100", "!", "fakesink"],
        capture_output=True, text=True, timeout=180, env=env)
    queries = re.findall(r"teacher-queries=\(guint64\)(\d+)", r.stdout)
    errors = re.findall(r"teacher-errors=\(guint64\)(\d+)", r.stdout)
    if not ok(r.returncode == 0 and queries and int(queries[-1]) > 0 and errors[-1] == "0",
              f"distillseg is answered by the https teacher that requires its token "
              f"({queries[-1] if queries else 0} queries, {errors[-1] if errors else '?'} "
              f"failed)"):
        diag(r.stderr[-1500:])
    with open(debug_log, errors="replace") as f:
        log = f.read()
    ok(len(log) > 1000000 and "distillseg" in log,
       f"the element ran with every debug category at level 9 ({len(log) >> 20} MiB of log)")
    found = leaks(token, {"stdout": r.stdout, "stderr": r.stderr, "debug log": log})
    ok(not found, f"gst-launch-1.0 -v -m at GST_DEBUG=*:9 never prints the token "
       f"(found in: {', '.join(found) or 'nothing'})")
    inspect = subprocess.run(["gst-inspect-1.0", "distillseg"], capture_output=True, text=True,
                             timeout=60, env=dict(os.environ, DISTILL_TEACHER_TOKEN=token))
    ok(inspect.returncode == 0 and "teacher-token-file" in inspect.stdout
       and token not in inspect.stdout + inspect.stderr,
       "no property holds the token: gst-inspect-1.0 shows the file property, never the token "
       "(even from $DISTILL_TEACHER_TOKEN)")

    # distill-rtsp with every secret at once: token, viewers' passwords, TLS key.
    password = "pa55-" + token[::-1]
    auth = write_secret(os.path.join(work, "viewers-of-door"), f"bob:{password}\n")
    debug_log = os.path.join(work, "distill-rtsp-debug.log")
    env["GST_DEBUG_FILE"] = debug_log
    rtsp = Process([DISTILL_RTSP, "--input", f"door={VTEST}", "--teacher", teacher_url,
                    "--teacher-token-file", token_file, "--teacher-ca-file", files["ca.pem"],
                    "--auth-file", auth, "--tls-cert", files["server.pem"], "--tls-key",
                    files["server.key"], "--port", "0", "--metrics-port", "0",
                    "-o", "min-stride=4", *SMALL], r"metrics at (http://\S+)", env=env)
    metrics_url = rtsp.match.group(1)
    queries, errors = wait_for_queries(metrics_url, "door")
    ok(queries >= 2 and errors == 0,
       f"distill-rtsp --teacher-token-file is answered by the https teacher ({queries:.0f} "
       f"queries, {errors:.0f} failed)")
    page = fetch(metrics_url)
    secrets = {"token": token, "password": password, "token file": token_file,
               "auth file": auth, "TLS key": files["server.key"], "work folder": work}
    found = [name for name, secret in secrets.items() if secret in page]
    ok("distill_frames_total" in page and not found,
       f"/metrics holds no token, password or secret file's path (found: "
       f"{', '.join(found) or 'nothing'})")
    rtsp.signal(signal.SIGTERM)
    ok(rtsp.wait(30) == 0, "distill-rtsp stops cleanly")
    with open(debug_log, errors="replace") as f:
        log = f.read()
    found = leaks(token, {"stdout": "".join(rtsp.lines) + (rtsp.proc.stdout.read() or ""),
                          "stderr": rtsp.stderr(), "debug log": log})
    ok(len(log) > 1000000 and not found,
       f"distill-rtsp at GST_DEBUG=*:9 ({len(log) >> 20} MiB of log) never prints the token "
       f"(found in: {', '.join(found) or 'nothing'})")


def test_camera_password():
    """A camera URL's password is not repeated in distill-rtsp's messages (a log or journal)."""
    camera = f"rtsp://viewer:cam-pa55@127.0.0.1:{free_port()}/stream1"  # nothing listens there
    rtsp = Process([DISTILL_RTSP, "--input", f"door={camera}", "--port", "0", "--metrics-port",
                    "0", *SMALL], r"metrics at (http://\S+)")
    page = fetch(rtsp.match.group(1))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "reconnecting to" not in rtsp.stderr():
        time.sleep(0.5)
    rtsp.stop()
    messages = rtsp.stderr() + "".join(rtsp.lines)
    ok("reconnecting to rtsp://viewer@127.0.0.1:" in messages and "cam-pa55" not in messages
       and "cam-pa55" not in page,
       "a camera's password is hidden in the messages about it and absent from /metrics")


def https_teacher(files, work, token):
    token_file = write_secret(os.path.join(work, "server-token"), token + "\n")
    return replay_teacher("--token-file", token_file, "--tls-cert", files["server.pem"],
                          "--tls-key", files["server.key"], ready=True, ca_file=files["ca.pem"])


def main():
    work = tempfile.TemporaryDirectory(prefix="distill-security-test-")
    files = make_certificates(work.name)
    token = "tok-" + os.urandom(12).hex()

    test_rtsps(files, work.name)
    test_bad_certificates(files, work.name)
    test_camera_password()
    teacher, teacher_url = https_teacher(files, work.name, token)
    test_listeners(teacher)
    test_token(files, work.name, teacher_url, token)
    teacher.stop()


if __name__ == "__main__":
    run_test(main)
