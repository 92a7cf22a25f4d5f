"""SIPp (Debian sip-tester) pings a running `sbc run` with OPTIONS over UDP, TCP and TLS.

Debian's SIPp is built without TLS, so for TLS it talks TCP to a socat
client tunnel that verifies sbc's self-signed certificate and speaks TLS on.
Each run must succeed for all its calls, and sbc's /metrics must have counted
exactly those requests and answers on the right transport.
"""

import csv
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from twisted.trial import unittest

from .harness import SBCProcess, free_port, value

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "options.xml"
CALLS = 10
EXIT_BIND_FAILED = 254  # SIPp's -2: "fatal error binding a socket"


def need(tool, package):
    path = shutil.which(tool)
    if path is None:
        raise AssertionError(f"`{tool}` is not installed: apt-get install {package} (.ci/run does)")
    return path


def stats(path):
    """The cumulative counters of SIPp's -trace_stat CSV, from its last row."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, last = rows[0], rows[-1]
    return {name[:-3]: value for name, value in zip(header, last) if name.endswith("(C)")}


class SIPpTests(unittest.TestCase):
    proc = None

    @classmethod
    def setUpClass(cls):
        cls.proc = SBCProcess().start()

    @classmethod
    def tearDownClass(cls):
        cls.proc.stop()

    def setUp(self):
        self.sipp = need("sipp", "sip-tester")
        self.directory = Path(tempfile.mkdtemp(prefix="sbc-sipp-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    def run_sipp(self, target, transport):
        """SIPp's OPTIONS scenario against `target`, `CALLS` calls; its stats."""
        for attempt in range(5):
            kind = socket.SOCK_DGRAM if transport == "u1" else socket.SOCK_STREAM
            port = free_port(kind)  # free a moment ago; SIPp exits 254 if taken since
            stat = self.directory / f"stat-{transport}-{attempt}.csv"
            errors = self.directory / f"errors-{transport}-{attempt}.log"
            command = [
                self.sipp, "-sf", str(SCENARIO), f"{target[0]}:{target[1]}",
                "-t", transport, "-m", str(CALLS), "-r", "20",
                "-i", "127.0.0.1", "-p", str(port),
                "-timeout", "20s", "-timeout_error", "-max_recv_loops", "1000", "-nostdin",
                "-trace_stat", "-stf", str(stat), "-trace_err", "-error_file", str(errors),
            ]
            run = subprocess.run(command, cwd=self.directory, capture_output=True, text=True,
                                 errors="replace", timeout=60)
            if run.returncode == EXIT_BIND_FAILED:
                continue
            report = (f"{' '.join(command)}\nexit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
                      + (errors.read_text(errors="replace")[-3000:] if errors.exists() else "")
                      + self.proc.output())
            self.assertEqual(run.returncode, 0, report)
            counters = stats(stat)
            self.assertEqual((counters["SuccessfulCall"], counters["FailedCall"]), (str(CALLS), "0"), report)
            return counters
        self.fail(f"SIPp could not bind a free local port in 5 attempts\n{run.stderr}")

    def assert_counted(self, before, transport, retransmissions):
        """sbc counted CALLS more OPTIONS in and CALLS more 200s out on `transport`
        (SIPp's own UDP retransmissions included, as the metrics do)."""
        after = self.proc.scrape()

        def grew(name, **labels):
            return value(after, name, transport=transport, **labels) - value(before, name, transport=transport,
                                                                               **labels)
        self.assertEqual(grew("sbc_sip_requests_received_total", method="OPTIONS"), CALLS + retransmissions)
        self.assertEqual(grew("sbc_sip_responses_sent_total", status="200"), CALLS + retransmissions)

    def check(self, transport, sipp_transport, target):
        before = self.proc.scrape()
        counters = self.run_sipp(target, sipp_transport)
        self.assert_counted(before, transport, int(counters["Retransmissions"]))

    def test_udp(self):
        """SIPp's OPTIONS over UDP are all answered 200 and counted as udp."""
        self.check("udp", "u1", self.proc.addresses["udp"])

    def test_tcp(self):
        """SIPp's OPTIONS over one TCP connection are all answered 200 and counted as tcp."""
        self.check("tcp", "t1", self.proc.addresses["tcp"])

    def test_tls(self):
        """SIPp's OPTIONS through a verifying TLS tunnel are all answered 200 and counted as tls."""
        tunnel = self.tunnel()
        self.check("tls", "t1", tunnel)

    def tunnel(self):
        """A socat TCP listener on a free loopback port that relays each connection
        over TLS to sbc, verifying its certificate (IP SAN 127.0.0.1); its address."""
        socat = need("socat", "socat")
        host, port = self.proc.addresses["tls"]
        proc = subprocess.Popen(
            [socat, "-d", "-d", "TCP-LISTEN:0,bind=127.0.0.1,reuseaddr,fork",
             f"OPENSSL:{host}:{port},cafile={self.proc.cert},verify=1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, errors="replace", start_new_session=True)
        lines, log = queue.Queue(), []

        def drain():
            for line in proc.stderr:
                log.append(line)
                lines.put(line)
            lines.put(None)
        threading.Thread(target=drain, daemon=True).start()
        # socat names the port it bound (port 0) once it listens.
        while True:
            try:
                line = lines.get(timeout=10)
            except queue.Empty:
                self.fail("socat printed no 'listening on' line within 10 s:\n" + "".join(log))
            if line is None:
                self.fail("socat exited before listening:\n" + "".join(log))
            found = re.search(r"listening on \S+ (\d+\.\d+\.\d+\.\d+):(\d+)", line)
            if found:
                break
        # That line follows listen(2): from here on the backlog holds any
        # connection. No probe connection, which sbc would count as a TLS
        # handshake failure when it closes mid-handshake.
        return (found[1], int(found[2]))

    @staticmethod
    def end_tunnel(proc):
        """Stop socat and the children it forked per connection (its own session)."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        proc.wait(10)
