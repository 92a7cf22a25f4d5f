"""Calls to a carrier whose gateway is a host name: RFC 3263 server location
against a DNS server on 127.0.0.1, then SIP to the addresses it gave.

Each test starts its own DNS server, a twisted.names authority in a process
of its own (the script below, written into the test's directory) so that sbc
can query it while the test blocks on SIPp. It serves UDP on a port the
kernel picks and prints "listening PORT"; it counts the queries it receives
per (name, type) and prints them as "asked {JSON}" on SIGUSR1 and at exit.
Then `sbc run` starts on the loopback lab config with the carrier's only
gateway a host name and `[dns] servers` pointing at that server. The carrier's
SIPp gateways sit at 127.0.0.3 and 127.0.0.4 on the port the SRV records give.

Every count is read after the call it belongs to has ended: sbc sends a B-leg
INVITE only once all its queries were answered, so the server has counted
them all by then; no wait ends on a clock.
"""

import json
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from twisted.trial import unittest

from .harness import SAFETY, value
from .lab import GW1, GW2, PAUSE, PBX, POLL, Lab, SIPp, lab_config, lab_port

NUMBER = "2125551234"           # a national number the PBX dials; the carrier sees +1...
REQUEST_URI = f"sip:+1{NUMBER}@carrier.test"

DNS_SCRIPT = '''\
"""A DNS server for one test: the zone in argv[1] (JSON {name: [[type, fields...]]}),
over UDP on 127.0.0.1, a port picked by the kernel."""

import json
import signal
import sys

from twisted.internet import reactor
from twisted.names import authority, common, dns, server

TTL = 3600  # as long as sbc keeps anything: a cached answer never expires during a test


def record(kind, *fields):
    if kind == "NAPTR":
        order, preference, flags, service, regexp, replacement = fields
        return dns.Record_NAPTR(order, preference, flags.encode(), service.encode(),
                                regexp.encode(), replacement, ttl=TTL)
    if kind == "SRV":
        priority, weight, port, target = fields
        return dns.Record_SRV(priority, weight, port, target, ttl=TTL)
    if kind == "A":
        return dns.Record_A(fields[0], ttl=TTL)
    if kind == "AAAA":
        return dns.Record_AAAA(fields[0], ttl=TTL)
    raise ValueError(kind)


class Zone(authority.FileAuthority):
    """The authority for "test." from the records given; other names in it are NXDOMAIN."""

    def __init__(self, zone):
        common.ResolverBase.__init__(self)
        self.soa = (b"test", dns.Record_SOA(mname="ns.test", rname="root.test", serial=1,
                                            refresh=3600, retry=600, expire=86400,
                                            minimum=TTL, ttl=TTL))
        self.records = {name.encode(): [record(*rr) for rr in rrs] for name, rrs in zone.items()}
        self._cache = {}


class Counting(server.DNSServerFactory):
    """Counts questions per "name TYPE"; a retransmission (same message id) counts once."""

    def __init__(self, zone):
        super().__init__(authorities=[zone])
        self.asked = {}

    def handleQuery(self, message, protocol, address):
        for q in message.queries:
            key = f"{q.name.name.decode().lower()} {dns.QUERY_TYPES.get(q.type, q.type)}"
            self.asked.setdefault(key, set()).add(message.id)
        return super().handleQuery(message, protocol, address)


def report():
    counts = {key: len(ids) for key, ids in sorted(factory.asked.items())}
    print("asked " + json.dumps(counts), flush=True)


factory = Counting(Zone(json.loads(sys.argv[1])))
port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(report))
reactor.addSystemEventTrigger("after", "shutdown", report)
print(f"listening {port.getHost().port}", flush=True)
reactor.run()
'''


def carrier_zone(port, aaaa=False):
    """carrier.test: a NAPTR to its UDP SRV name, two SRV records (gw1 first by
    priority) at `port`, gw1 at 127.0.0.3 and gw2 at 127.0.0.4. With `aaaa`
    each gateway also has an AAAA record (never reached: its A comes first)."""
    zone = {
        "carrier.test": [["NAPTR", 10, 10, "s", "SIP+D2U", "", "_sip._udp.carrier.test"]],
        "_sip._udp.carrier.test": [["SRV", 10, 1, port, "gw1.carrier.test"],
                                   ["SRV", 20, 1, port, "gw2.carrier.test"]],
        "gw1.carrier.test": [["A", GW1]],
        "gw2.carrier.test": [["A", GW2]],
    }
    if aaaa:
        zone["gw1.carrier.test"].append(["AAAA", "2001:db8::3"])
        zone["gw2.carrier.test"].append(["AAAA", "2001:db8::4"])
    return zone


# What sbc asks to resolve sip:carrier.test: NAPTR, the one SRV name it points
# to, then A and AAAA of both SRV targets. Each once.
CARRIER_QUERIES = {
    "carrier.test NAPTR": 1,
    "_sip._udp.carrier.test SRV": 1,
    "gw1.carrier.test A": 1, "gw1.carrier.test AAAA": 1,
    "gw2.carrier.test A": 1, "gw2.carrier.test AAAA": 1,
}


class DNSServer:
    """The DNS script as a process of its own: start() -> self with .port;
    asked() -> {"name TYPE": queries}; stop() ends it by its PID."""

    def __init__(self, directory, zone):
        self.script = Path(directory) / "dns.py"
        self.script.write_text(DNS_SCRIPT)
        self.errors = Path(directory) / "dns.err"
        self.zone = zone
        self.proc = None
        self.port = None
        self.lines = queue.Queue()

    def start(self):
        with open(self.errors, "w") as errors:
            self.proc = subprocess.Popen([sys.executable, str(self.script), json.dumps(self.zone)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=errors, text=True)
        threading.Thread(target=self._drain, daemon=True).start()
        self.port = int(self._line("listening "))
        return self

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _line(self, prefix):
        """The rest of the next stdout line, which must start with `prefix`."""
        try:
            line = self.lines.get(timeout=POLL)
        except queue.Empty:
            raise AssertionError(f"the DNS server printed no {prefix!r} line within {POLL} s\n"
                                 f"{self.report()}") from None
        if line is None or not line.startswith(prefix):
            raise AssertionError(f"the DNS server printed {line!r}, expected {prefix!r}...\n"
                                 f"{self.report()}")
        return line[len(prefix):]

    def asked(self):
        """The queries counted so far, per "name TYPE"."""
        self.proc.send_signal(signal.SIGUSR1)
        return json.loads(self._line("asked "))

    def report(self):
        return "--- DNS server stderr ---\n" + self.errors.read_text(errors="replace")[-3000:]

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=SAFETY)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class DNSLab(Lab):
    """The loopback lab with the carrier's one gateway `gateway` (a host name)
    and sbc's DNS server at 127.0.0.1:`dns_port`."""

    def __init__(self, port, dns_port, gateway):
        super().__init__(port)
        self.config_text = lab_config(port, self.routes_dir, carrier=gateway,
                                      extra=f'\n[dns]\nservers = ["127.0.0.1:{dns_port}"]\n')

    def logged(self, text):
        """The first line sbc printed containing `text`, polled for (bounded)."""
        deadline = time.monotonic() + POLL
        while True:
            for line in list(self._stdout) + list(self._stderr):
                if text in line:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"sbc never logged {text!r} within {POLL} s\n{self.output()}")
            time.sleep(PAUSE)


class DNSCallTests(unittest.TestCase):
    """A PBX call to the carrier, whose gateway sbc finds through DNS."""

    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="sbc-dns-"))
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.port = lab_port()

    def start(self, zone, gateway):
        """The DNS server with `zone`, then sbc with the carrier's gateway `gateway`."""
        self.dns = DNSServer(self.directory, zone).start()
        self.addCleanup(self.dns.stop)
        self.lab = DNSLab(self.port, self.dns.port, gateway).start()
        self.addCleanup(self.lab.stop)  # runs first: sbc stops before its DNS server

    def uas(self, scenario, host, calls=1):
        sipp = SIPp(self.directory, scenario, host, self.port, calls=calls)
        self.addCleanup(sipp.kill)
        return sipp.start().bound()

    def uac(self, scenario, number=NUMBER):
        sipp = SIPp(self.directory, scenario, PBX, remote=self.lab.sip, service=number)
        self.addCleanup(sipp.kill)
        return sipp.start()

    def cdr(self, uac, *others):
        context = "\n".join(p.report() for p in (uac,) + others) + "\n" + self.dns.report()
        return self.lab.cdr(uac.call_id(1), context)

    def assertFields(self, row, **expected):
        self.assertEqual({k: row[k] for k in expected}, expected, row)

    def test_srv_call(self):
        """A call to sip:carrier.test follows NAPTR and SRV to gw1, keeps the name in the Request-URI, and completes."""
        self.start(carrier_zone(self.port), "sip:carrier.test")
        carrier = self.uas("uas.xml", GW1)
        pbx = self.uac("uac.xml")
        pbx.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(pbx,))
        invite = carrier.received("INVITE")[0]
        self.assertEqual(invite.start, f"INVITE {REQUEST_URI} SIP/2.0")
        self.assertEqual([m.method for m in carrier.received()], ["INVITE", "ACK", "BYE"])
        self.assertEqual(self.dns.asked(), CARRIER_QUERIES)
        self.assertFields(self.cdr(pbx, carrier), final_code=200, target_peer="carrier",
                          trunk="carrier", callee_out=f"+1{NUMBER}", attempts=1,
                          reason="normal", b_call_id=invite.get("call-id"))

    def test_failover_across_srv_records(self):
        """A 503 from the first SRV target moves the call to the second, where it completes."""
        self.start(carrier_zone(self.port), "sip:carrier.test")
        before = self.lab.scrape()
        primary = self.uas("uas_unavailable.xml", GW1)
        secondary = self.uas("uas.xml", GW2)
        pbx = self.uac("uac.xml")
        pbx.check(self, 1, others=(primary, secondary))
        primary.check(self, 1, others=(pbx,))
        secondary.check(self, 1, others=(pbx,))
        after = self.lab.scrape()
        self.assertEqual(pbx.received(503), [])
        self.assertEqual(primary.received("INVITE")[0].start, f"INVITE {REQUEST_URI} SIP/2.0")
        invite = secondary.received("INVITE")[0]
        self.assertEqual(invite.start, f"INVITE {REQUEST_URI} SIP/2.0")
        self.assertEqual([m.method for m in secondary.received()], ["INVITE", "ACK", "BYE"])
        self.assertEqual(value(after, "sbc_call_attempts_total", peer="carrier")
                         - value(before, "sbc_call_attempts_total", peer="carrier"), 2)
        self.assertEqual(self.dns.asked(), CARRIER_QUERIES)  # one resolution serves both attempts
        self.assertFields(self.cdr(pbx, primary, secondary), final_code=200, attempts=2,
                          target_peer="carrier", reason="normal",
                          b_call_id=invite.get("call-id"))

    def test_nxdomain(self):
        """A gateway name that does not exist gets the caller a 503 with no INVITE sent, and logs why."""
        self.start(carrier_zone(self.port), "sip:nowhere.test")
        before = self.lab.scrape()
        pbx = self.uac("uac_unavailable.xml")
        pbx.check(self, 1)
        after = self.lab.scrape()
        self.assertEqual(pbx.received(503)[0].start, "SIP/2.0 503 Service Unavailable")
        self.assertEqual(value(after, "sbc_call_attempts_total", peer="carrier")
                         - value(before, "sbc_call_attempts_total", peer="carrier"), 0)
        # Every RFC 3263 step was asked once and answered NXDOMAIN; no _sips._tcp
        # lookup, since this sbc has no TLS listener to send from.
        self.assertEqual(self.dns.asked(), {
            "nowhere.test NAPTR": 1, "_sip._udp.nowhere.test SRV": 1,
            "_sip._tcp.nowhere.test SRV": 1,
            "nowhere.test A": 1, "nowhere.test AAAA": 1})
        warning = self.lab.logged("no SIP server for sip:nowhere.test")
        self.assertIn("NAPTR nowhere.test: NXDOMAIN", warning)
        # The carrier was the target, its gateway unreachable: failed over to nothing.
        self.assertFields(self.cdr(pbx), final_code=503, attempts=0, source_peer="pbx",
                          callee_in=NUMBER, reason="failover_exhausted", hangup_by="sbc",
                          answer=None, b_call_id="", target_peer="carrier", trunk="carrier",
                          direction="outbound")

    def test_cache(self):
        """Two calls in a row resolve the gateway once: the second is served from sbc's cache."""
        # AAAA records too, so that no answer is an empty one (those are kept 30 s only).
        self.start(carrier_zone(self.port, aaaa=True), "sip:carrier.test")
        self.assertEqual(self.dns.asked(), {})
        carrier = self.uas("uas.xml", GW1, calls=2)
        first = self.uac("uac.xml")
        first.check(self, 1, others=(carrier,))
        self.assertEqual(self.dns.asked(), CARRIER_QUERIES)
        second = self.uac("uac.xml")
        second.check(self, 1, others=(carrier,))
        carrier.check(self, 2, others=(first, second))
        self.assertEqual(self.dns.asked(), CARRIER_QUERIES)
        self.assertEqual([m.start for m in carrier.received("INVITE")],
                         [f"INVITE {REQUEST_URI} SIP/2.0"] * 2)
        self.assertFields(self.cdr(second, carrier), final_code=200, target_peer="carrier")
