"""A real rtpengine (Debian package rtpengine-daemon) for tests and benchmarks.

    engine = start_rtpengine()      # blocks until its ng port answers a ping
    engine.ng_address               # ("127.0.0.1", port): for sbc.net.ng.NG
    engine.port_min, .port_max      # its RTP range, free when it started
    engine.pid, engine.log()        # the process, its log so far
    engine.stop()                   # SIGTERM to that PID (SIGKILL if it lingers)

It runs in the foreground, in userspace only (--table=-1: no kernel module,
no root), on one interface, with no config file (--config-file=none, so
/etc/rtpengine is never read) and its log in a temporary file. Every port is
picked free when it starts; if the ng port is taken meanwhile rtpengine exits
and another one is tried.

When rtpengine is not installed, start_rtpengine raises AssertionError
saying to install rtpengine-daemon: a missing peer fails the test, it does
not skip it.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time

INSTALL = ("rtpengine is not installed: install the Debian package rtpengine-daemon "
           "(apt-get install rtpengine-daemon)")
START = 15.0    # s: the most rtpengine may take until its ng port answers
PING = 0.2      # s: one ping's wait for its pong (a safety bound, not a pass/fail)
STOP = 10.0     # s: the most it may take to exit after SIGTERM


def require():
    """rtpengine's path; AssertionError telling to install it when there is none."""
    path = shutil.which("rtpengine")
    if path is None:
        raise AssertionError(INSTALL)
    return path


def free_udp_port(host="127.0.0.1"):
    """A UDP port the kernel just handed out: free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_range(size, host="127.0.0.1", low=10000, high=20000):
    """(port_min, port_max): `size` UDP ports starting even, all bindable on `host` now.

    Drawn below the kernel's ephemeral range (32768 and up on Linux), where
    test sockets bound to port 0 land, and below 20000-30000, sbc's default
    relay range that other tests' sbc processes use.
    """
    for _ in range(50):
        start = low + 2 * secrets.randbelow((high - low - size) // 2)
        socks = []
        try:
            for port in range(start, start + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((host, port))
            return start, start + size - 1
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError(f"no {size} free UDP ports on {host} between {low} and {high}")


def ping(sock, cookie):
    """True when rtpengine answers one ng ping on the connected `sock` within PING s."""
    try:
        sock.send(cookie + b" d7:command4:pinge")
        sock.settimeout(PING)
        while True:
            reply = sock.recv(65536)
            if reply.startswith(cookie + b" ") and b"4:pong" in reply:
                return True
    except (socket.timeout, ConnectionRefusedError):
        return False  # not listening yet: a refusal comes back at once, a drop after PING


class RTPEngine:
    """One rtpengine process started by start_rtpengine()."""

    def __init__(self, proc, directory, host, ng_port, port_min, port_max):
        self.proc = proc
        self.pid = proc.pid
        self.directory = directory
        self.host = host
        self.ng_address = (host, ng_port)
        self.port_min = port_min
        self.port_max = port_max
        self.log_path = os.path.join(directory.name, "rtpengine.log")
        self._final_log = None

    def log(self):
        """Everything rtpengine logged so far (kept after stop())."""
        if self._final_log is not None:
            return self._final_log
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def threads(self):
        """The thread ids of the process (for CPU pinning)."""
        return [int(t) for t in os.listdir(f"/proc/{self.pid}/task")]

    def stop(self):
        """Stop this rtpengine by its PID; twice is harmless. Its exit status."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        if self._final_log is None:
            self._final_log = self.log()
            self.directory.cleanup()
        return self.proc.returncode


def start_rtpengine(ports=64, host="127.0.0.1", log_level=6, extra=()):
    """A running rtpengine on `host` with `ports` RTP ports; see the module docstring."""
    binary = require()
    last = ""
    for _ in range(3):
        directory = tempfile.TemporaryDirectory(prefix="rtpengine-")
        ng_port = free_udp_port(host)
        port_min, port_max = free_range(ports, host)
        cmd = [binary, "--config-file=none", "--foreground", "--log-stderr",
               "--no-log-timestamps", f"--log-level={log_level}", "--table=-1",
               f"--interface={host}", f"--listen-ng={host}:{ng_port}",
               f"--port-min={port_min}", f"--port-max={port_max}",
               "--delete-delay=0", *extra]
        with open(os.path.join(directory.name, "rtpengine.log"), "wb") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=directory.name)
        engine = RTPEngine(proc, directory, host, ng_port, port_min, port_max)
        if _answers(engine):
            return engine
        exited = proc.poll() is not None
        last = engine.log()
        code = engine.stop()
        if not exited:
            break  # alive but deaf: trying again would not help
        # It exited: most likely the ng port was taken meanwhile; try other ports.
    raise AssertionError(f"rtpengine did not answer a ng ping within {START:g} s "
                         f"(exit status {code}); its log:\n{last[-2000:]}")


def _answers(engine):
    """Ping until it answers (True), exits or START passes (False)."""
    deadline = time.monotonic() + START
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(engine.ng_address)
        n = 0
        while time.monotonic() < deadline and engine.proc.poll() is None:
            n += 1
            if ping(sock, b"ready%d" % n):
                return True
    return False
