"""SIPVicious against a running sbc: what a scanner on the internet learns.

sbc runs the loopback lab config plus a PBX `branch` that has no fixed
address and authenticates with a digest account (`users`). The attackers are
sipvicious 0.3.8's own tools (svmap, svwar, svcrack from .venv, bound to an
unknown loopback address with -b) and, where a tool cannot do the job, a
small client of ours that speaks the same requests (`Phone`). Each test uses
source addresses of its own, so bans in one test never touch another.

User-Agent: sipvicious has no option to change it, but with -c (compact
headers) it sends none at all; that is how these tests play a scanner that
no longer says `friendly-scanner`, so that what stops it is the ACL, digest
authentication and bans and not the User-Agent filter (left at its
default). Only svmap is also run with its default User-Agent, to show that
drop.

"Nothing came back" is decided without waiting on a clock: the drop counter
in /metrics shows sbc has handled the request, sbc's single-threaded reactor
would have sent any answer before it served that scrape, and loopback
delivers a datagram within sendto(2); so an empty socket then means no
answer. The tools' own socket timeouts (svmap waits 3 s for answers) are
theirs. The one wait on time is a ban running out, the feature under test,
polled through `sbc bans list` with a bounded deadline.
"""

import ast
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from unittest import mock

from twisted.trial import unittest

from sbc.admission.bans import LOG_LINE
from sbc.sip.digest import answer_challenge, parse_challenge

from .harness import ROOT, SAFETY, response, value
from .lab import PAUSE, Lab, lab_config, lab_port

TOOLS = ROOT / ".venv" / "bin"
USER, PASSWORD = "branch1", "Tr1cky-branch-pass"
ALLOWED = "127.0.0.77"   # in [admission] allow: the operator's own probe
EXPIRY = 20.0            # seconds: the most a short ban may take to run out
TOOL_TIMEOUT = 60        # seconds: safety bound on one sipvicious run
DROPPED = "sbc_sip_dropped_total"

# A PBX that registers and calls from anywhere, known only by its account.
BRANCH = f"""
[[peer]]
name = "branch"
kind = "pbx"
users = [{{ username = "{USER}", password = "{PASSWORD}" }}]
"""


class ScanLab(Lab):
    """The lab config with `admission` TOML before the peers, plus `branch`."""

    def __init__(self, port, admission):
        super().__init__(port)
        self.config_text = lab_config(port, self.routes_dir, extra=admission) + BRANCH

    def bans(self, *args):
        """`sbc bans ARGS` against this sbc; its stdout (AssertionError unless exit 0)."""
        run = self.sbc("bans", *args, "--state-dir", self.state_dir)
        if run.returncode != 0:
            raise AssertionError(f"sbc bans {' '.join(args)} exited {run.returncode}: "
                                 f"{run.stderr}{run.stdout}")
        return run.stdout

    def banned(self):
        """The addresses `sbc bans list` shows, with the rest of their line."""
        rows = self.bans("list").splitlines()
        return {row.split()[0]: row for row in rows[1:]} if rows[0].startswith("address") else {}

    def lines(self, text):
        """Every line sbc printed so far containing `text`."""
        return [line for line in list(self._stdout) + list(self._stderr) if text in line]

    def logged(self, text):
        """The lines containing `text`, polled for until there is one (bounded)."""
        deadline = time.monotonic() + SAFETY
        while not (found := self.lines(text)):
            if time.monotonic() > deadline:
                raise AssertionError(f"sbc never logged {text!r}\n{self.output()}")
            time.sleep(PAUSE)
        return found

    def grown(self, before, by, name, **labels):
        """Poll /metrics until `name` has grown `by` over `before`; the samples."""
        want = value(before, name, **labels) + by
        return self.until(lambda s: value(s, name, **labels) >= want,
                          f"{name}{labels} reaching {want}")

    def restart(self):
        """SIGTERM, a clean exit, then `sbc run` again on the same config and
        state dir (the harness makes a fresh directory per start, so it is
        handed the old one)."""
        proc = self.proc
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        for thread in self._threads:
            thread.join(SAFETY)
        if code != 0 or self.tracebacks():
            raise AssertionError(f"sbc exited {code} on SIGTERM\n{self.output()}")
        self._lines = queue.Queue()  # the old process's end-of-output marker
        with mock.patch.object(tempfile, "mkdtemp", return_value=str(self.directory)):
            return super().start()


class Phone:
    """REGISTERs from one UDP socket on `host`, as svwar and svcrack send them
    (one account per request, Digest answers with MD5 like svcrack), but with
    an ordinary User-Agent."""

    def __init__(self, host, sbc):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(SAFETY)
        self.local = self.sock.getsockname()
        self.sbc = sbc
        self.uri = f"sip:{sbc[0]}:{sbc[1]}"
        self.call_id = f"{secrets.token_hex(8)}@{host}"
        self.cseq = 0

    def close(self):
        self.sock.close()

    def register(self, user, authorization=None, contact=None):
        """A REGISTER for `user` (next CSeq, fresh branch) as bytes."""
        self.cseq += 1
        host, port = self.local
        lines = [
            f"REGISTER {self.uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK{secrets.token_hex(8)}",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{self.sbc[0]}>;tag={secrets.token_hex(4)}",
            f"To: <sip:{user}@{self.sbc[0]}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <{contact or f'sip:{user}@{host}:{port}'}>",
            "Expires: 60",
            "User-Agent: Branch-PBX/20.1",
        ]
        if authorization is not None:
            lines.append(f"Authorization: {authorization}")
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    def send(self, data):
        self.sock.sendto(data, self.sbc)

    def answer(self, what):
        """The next response (parsed)."""
        try:
            return response(self.sock.recvfrom(65535)[0])
        except socket.timeout:
            raise AssertionError(f"no answer from sbc within {SAFETY} s to {what}") from None

    def ask(self, data, what):
        self.send(data)
        return self.answer(what)

    def pending(self):
        """Every datagram already queued on the socket, without waiting."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(65535))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(SAFETY)


def md5_credentials(challenge, user, password, uri):
    """The Authorization value answering the MD5 one of a 401's challenges."""
    lines = challenge.get_all("www-authenticate")
    offers = [v for v in lines
              if parse_challenge(v).get("algorithm", "MD5").upper() == "MD5"]
    if not offers:
        raise AssertionError(f"no MD5 challenge in {lines}")
    return answer_challenge(offers[0], "REGISTER", uri, user, password, secrets.token_hex(8))


def nonce(challenge):
    return parse_challenge(challenge.get_all("www-authenticate")[0])["nonce"]


def shape(msg):
    """What a 401 tells about the account, all of it: status, reason, header
    names in order, and every value but the request's own echoed headers,
    the To tag and the nonce (fresh each time)."""
    echoed = {"via", "from", "to", "call-id", "cseq"}
    values = [(key, re.sub(r'nonce="[^"]*"', 'nonce="..."', text))
              for key, _, text in msg.headers if key not in echoed]
    return msg.status, msg.reason, [key for key, _, _ in msg.headers], values


class ScannerCase(unittest.TestCase):
    """One sbc per class on `ADMISSION`; sipvicious runs and phones per test."""

    ADMISSION = ""
    lab = None

    @classmethod
    def setUpClass(cls):
        cls.lab = ScanLab(lab_port(), cls.ADMISSION).start()

    @classmethod
    def tearDownClass(cls):
        if cls.lab is not None:
            cls.lab.stop()

    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="sbc-scanners-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    def tool(self, name, *args):
        """Start sipvicious_NAME ARGS (the target last); the Popen."""
        proc = subprocess.Popen([str(TOOLS / f"sipvicious_{name}"), *args], cwd=self.directory,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace")
        self.addCleanup(_end, proc)
        return proc

    def finish(self, proc):
        """Wait for a tool; (exit code, stdout, stderr)."""
        try:
            out, err = proc.communicate(timeout=TOOL_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"{proc.args} still running after {TOOL_TIMEOUT} s\n{out}\n{err}")
        return proc.returncode, out, err

    def target(self):
        host, port = self.lab.sip
        return f"udp://{host}:{port}"

    def phone(self, host):
        phone = Phone(host, self.lab.sip)
        self.addCleanup(phone.close)
        return phone

    def assertDropped(self, phone, data, reason):
        """Send `data`: sbc counts it dropped for `reason` and answers nothing."""
        before = self.lab.scrape()
        phone.send(data)
        self.lab.grown(before, 1, DROPPED, reason=reason)
        self.assertEqual(phone.pending(), [], f"sbc answered a request it counted as {reason}")

    def assertAnswered(self, phone, user=USER):
        """A REGISTER from `phone` is answered again: a plain 401 challenge."""
        answer = phone.ask(phone.register(user), "a REGISTER")
        self.assertEqual(answer.status, 401, answer)
        return answer


def _end(proc):
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


class ScannerTests(ScannerCase):
    """The default scanner list; 3 authentication failures in a minute ban a
    source for 10 minutes; the rate ban is off so that every ban here is the
    one a test provokes."""

    ADMISSION = f"""
[admission]
allow = ["{ALLOWED}/32"]

[admission.bans]
max_failures = 3
find_time = 60
ban_time = 600
max_rate = 0
"""

    def test_svmap_finds_nothing(self):
        """svmap from unknown sources finds no SIP device, with its own User-Agent
        (dropped as a scanner) or with none (dropped as an unknown source), while
        from an allowed address it does see sbc."""
        host, port = self.lab.sip
        before = self.lab.scrape()
        runs = {
            "scanner": self.tool("svmap", "-b", "127.0.0.66", "-p", str(port), host),
            "unknown": self.tool("svmap", "-c", "-b", "127.0.0.67", "-p", str(port), host),
            "allowed": self.tool("svmap", "-c", "-b", ALLOWED, "-p", str(port), host),
        }
        results = {name: self.finish(proc) for name, proc in runs.items()}
        for name in ("scanner", "unknown"):
            code, out, err = results[name]
            self.assertIn("found nothing", err, name)
            self.assertNotIn(f"{host}:{port}", out, name)
        code, out, err = results["allowed"]
        self.assertEqual(code, 0, err)
        self.assertRegex(out, rf"\| {re.escape(host)}:{port} +\| sbc +\|")
        # One OPTIONS each: the scanner's User-Agent is checked first, so its
        # request counts as a scanner drop only, the other as an unknown source.
        self.lab.grown(before, 1, DROPPED, reason="scanner")
        after = self.lab.grown(before, 1, DROPPED, reason="unknown_source")
        self.assertEqual(value(after, DROPPED, reason="scanner")
                         - value(before, DROPPED, reason="scanner"), 1)
        self.assertEqual(value(after, DROPPED, reason="unknown_source")
                         - value(before, DROPPED, reason="unknown_source"), 1)

    def test_svwar_cannot_enumerate(self):
        """svwar (REGISTER, forced past its own sanity check) gets for the existing
        account the very status it got for a random name, and reports no extension."""
        dictionary = self.directory / "names.txt"
        # svwar first REGISTERs a random number to learn the "no such user"
        # answer, then the names in order; an answer equal to that reference
        # that is no 404 makes it give up ("svwar will probably not work!"),
        # so the real name goes first to be the one compared.
        dictionary.write_text(f"{USER}\nalice\n1000\nadmin\n")
        before = self.lab.scrape()
        code, out, err = self.finish(self.tool(
            "svwar", "-c", "--debug", "--force", "-m", "REGISTER", "-d", str(dictionary),
            "-b", "127.0.0.68", self.target()))
        self.assertEqual(code, 0, f"svwar (40: found extensions)\n{out}\n{err}")
        self.assertIn("found nothing", err)
        self.assertNotIn("exists", out + err)
        # --debug prints every datagram received: the 401 to svwar's random
        # name (its "no such user" reference) and the 401 to branch1.
        answers = [ast.literal_eval(line).decode() for line in out.splitlines()
                   if line.startswith("b'")]
        self.assertGreaterEqual(len(answers), 2, out)
        firsts = {answer.splitlines()[0] for answer in answers}
        self.assertEqual(firsts, {"SIP/2.0 401 Unauthorized"})
        self.assertTrue(any(f"<sip:{USER}@" in answer for answer in answers), answers)
        self.assertTrue(any(re.search(r'"\d+"<sip:\d+@', answer) for answer in answers), answers)
        after = self.lab.scrape()
        self.assertEqual(value(after, "sbc_bans_total") - value(before, "sbc_bans_total"), 0)

    def test_same_answer_for_any_user(self):
        """A REGISTER for the existing account and one for a made-up name get
        401s that differ in nothing but the nonce, with or without a (wrong)
        password."""
        phone = self.phone("127.0.0.69")
        real = phone.ask(phone.register(USER), "a REGISTER for branch1")
        made_up = phone.ask(phone.register("nosuchuser"), "a REGISTER for nosuchuser")
        self.assertEqual(real.status, 401, real)
        self.assertEqual(shape(real), shape(made_up))
        self.assertNotEqual(nonce(real), nonce(made_up))
        # A wrong password for each: again the same fresh challenge, neither stale.
        real2 = phone.ask(phone.register(USER, md5_credentials(real, USER, "guess1", phone.uri)),
                          "a wrong password for branch1")
        made_up2 = phone.ask(phone.register(
            "nosuchuser", md5_credentials(made_up, "nosuchuser", "guess1", phone.uri)),
            "a wrong password for nosuchuser")
        self.assertEqual(real2.status, 401, real2)
        self.assertEqual(shape(real2), shape(made_up2))
        self.assertEqual(shape(real2), shape(real))
        self.assertNotIn("stale", " ".join(real2.get_all("www-authenticate")).lower())

    def test_cracking_is_banned(self):
        """Wrong passwords from one source (svcrack's dictionary attack, played by
        a phone because svcrack cannot answer sbc's challenges) ban it after
        max_failures: one log line, listed by `sbc bans`, and from then on no
        answer at all, even to the right password."""
        cracker = "127.0.0.70"
        passwords = self.directory / "passwords.txt"
        passwords.write_text("123456\npassword\nbranch1\n")
        before = self.lab.scrape()
        # svcrack 0.3.8 answers the first challenge it sees, and sbc offers
        # SHA-256 first (RFC 8760): svcrack stops before sending any password.
        code, out, err = self.finish(self.tool(
            "svcrack", "-c", "-u", USER, "-d", str(passwords), "-b", cracker, self.target()))
        self.assertNotIn("The password for", out + err)
        self.assertIn("Unknown algorithm: sha-256", out,
                      f"svcrack now answers SHA-256: let it run the attack below itself\n{err}")
        self.lab.grown(before, 1, "sbc_auth_failures_total", reason="no_credentials")
        # The same attack in svcrack's manner, MD5: each guess answers the last 401.
        phone = self.phone(cracker)
        challenge = phone.ask(phone.register(USER), "the first REGISTER")
        self.assertEqual(challenge.status, 401, challenge)
        for guess in ("123456", "password"):
            challenge = phone.ask(
                phone.register(USER, md5_credentials(challenge, USER, guess, phone.uri)),
                f"the guess {guess}")
            self.assertEqual(challenge.status, 401, challenge)
        self.assertEqual(self.lab.banned().get(cracker), None)
        # The third failure bans; its challenge still goes out.
        third = phone.ask(phone.register(USER, md5_credentials(challenge, USER, "branch1",
                                                               phone.uri)), "the third guess")
        self.assertEqual(third.status, 401, third)
        line = self.lab.logged(f"sbc ban: {cracker} ")
        self.assertEqual(len(line), 1, line)
        found = LOG_LINE.search(line[0][line[0].index("sbc ban:"):].strip())
        self.assertIsNotNone(found, line)
        self.assertEqual((found["ip"], found["seconds"], found["why"]),
                         (cracker, "600", "auth_failures"))
        self.assertIn("auth_failures", self.lab.banned()[cracker])
        # Banned: nothing at all, the right password included.
        self.assertDropped(phone, phone.register(USER), "banned")
        right = phone.register(USER, md5_credentials(third, USER, PASSWORD, phone.uri))
        self.assertDropped(phone, right, "banned")
        after = self.lab.scrape()
        self.assertEqual(value(after, "sbc_bans_total", why="auth_failures")
                         - value(before, "sbc_bans_total", why="auth_failures"), 1)
        self.assertEqual(len(self.lab.lines(f"sbc ban: {cracker} ")), 1)

    def test_nonce_replay_gains_nothing(self):
        """A REGISTER that authenticated, replayed with the same Authorization in a
        new transaction (from the PBX's address or an eavesdropper's), is
        challenged again and changes no registration."""
        pbx, eavesdropper = self.phone("127.0.0.71"), self.phone("127.0.0.72")
        challenge = pbx.ask(pbx.register(USER), "the first REGISTER")
        authorization = md5_credentials(challenge, USER, PASSWORD, pbx.uri)
        ok = pbx.ask(pbx.register(USER, authorization), "the authenticated REGISTER")
        self.assertEqual(ok.status, 200, ok)
        before = self.lab.until(lambda s: value(s, "sbc_registrations_active") >= 1,
                                "the registration")
        for phone, contact in ((pbx, None), (eavesdropper, "sip:thief@127.0.0.72:5060")):
            replay = phone.ask(phone.register(USER, authorization, contact), "the replay")
            self.assertEqual(replay.status, 401, replay)
            self.assertNotEqual(nonce(replay), nonce(challenge))
        # Both seen as replays of a used nc (the digest itself was right, so the
        # challenge says stale=true: only the password holder can use it).
        after = self.lab.grown(before, 2, "sbc_auth_failures_total", reason="nc_replay")
        self.assertEqual(value(after, "sbc_registrations_active"),
                         value(before, "sbc_registrations_active"))

    def test_bans_by_hand(self):
        """`sbc bans add IP` bans a source (its requests get nothing) and
        `sbc bans lift IP` ends the ban early (they are answered again)."""
        source = "127.0.0.73"
        phone = self.phone(source)
        self.assertAnswered(phone)
        self.assertIn(f"{source} banned", self.lab.bans("add", source))
        self.assertEqual(len(self.lab.logged(f"sbc ban: {source} banned for 600s: manual")), 1)
        self.assertIn("manual", self.lab.banned()[source])
        self.assertDropped(phone, phone.register(USER), "banned")
        self.assertIn(f"{source} lifted", self.lab.bans("lift", source))
        self.assertNotIn(source, self.lab.banned())
        self.assertAnswered(phone)


class BanLifetimeTests(ScannerCase):
    """Bans of 2 s: they run out while the test watches; bans last across a restart."""

    ADMISSION = """
[admission.bans]
max_failures = 3
find_time = 60
ban_time = 2
max_rate = 0
"""

    def test_ban_expires(self):
        """An automatic ban ends after ban_time on its own: `sbc bans list`
        drops the address and its requests are answered again."""
        source = "127.0.0.74"
        phone = self.phone(source)
        challenge = self.assertAnswered(phone)
        for guess in ("123456", "password", "qwerty"):
            challenge = phone.ask(
                phone.register(USER, md5_credentials(challenge, USER, guess, phone.uri)),
                f"the guess {guess}")
        self.lab.logged(f"sbc ban: {source} banned for 2s: auth_failures")
        deadline = time.monotonic() + EXPIRY
        while source in self.lab.banned():
            if time.monotonic() > deadline:
                self.fail(f"{source} still banned {EXPIRY} s after a 2 s ban\n{self.lab.output()}")
            time.sleep(PAUSE)
        self.assertAnswered(phone)
        self.lab.logged(f"sbc ban: {source} lifted")

    def test_bans_survive_restart(self):
        """A ban made before a restart is still listed and enforced after sbc
        starts again on the same state directory."""
        source = "127.0.0.75"
        self.lab.bans("add", source, "--seconds", "600")
        self.assertIn(source, self.lab.banned())
        self.lab.restart()
        self.assertIn("manual", self.lab.banned()[source])
        phone = self.phone(source)  # sbc's new port
        self.assertDropped(phone, phone.register(USER), "banned")


class MD5CrackTests(ScannerCase):
    """sbc offering MD5 only (`digest_algorithms`), which svcrack can answer: the
    real tool runs its dictionary attack, with and without reusing nonces.
    svcrack 0.3.8 ignores -b for its socket: it sends from 127.0.0.1:5060."""

    ADMISSION = f"""
[admission]
allow = ["{ALLOWED}/32"]
digest_algorithms = ["MD5"]

[admission.bans]
max_failures = 3
find_time = 60
ban_time = 600
max_rate = 0
"""
    CRACKER = "127.0.0.1"

    def crack(self, *options):
        """svcrack against USER with four wrong passwords, then the right one; its output."""
        passwords = self.directory / "passwords.txt"
        passwords.write_text(f"123456\npassword\nqwerty\nletmein\n{PASSWORD}\n")
        _, out, err = self.finish(self.tool(
            "svcrack", "-c", *options, "-u", USER, "-d", str(passwords), self.target()))
        return (out + err).replace(str(self.directory), "")

    def test_svcrack_is_banned_before_it_finds_the_password(self):
        """svcrack's dictionary attack is banned at the third wrong password and never
        reaches the right one; with --reusenonce (every guess on one nonce) the same:
        each ban logged once and listed."""
        for run, options in enumerate(((), ("--reusenonce",))):
            before = self.lab.scrape()
            output = self.crack(*options)
            self.assertNotIn("The password for", output)
            self.assertNotIn(PASSWORD, output)
            self.lab.grown(before, 1, "sbc_bans_total", why="auth_failures")
            lines = self.lab.logged(f"sbc ban: {self.CRACKER} banned")
            deadline = time.monotonic() + SAFETY
            while len(lines) < run + 1 and time.monotonic() < deadline:
                time.sleep(PAUSE)  # the log reader may trail the metric a moment
                lines = self.lab.lines(f"sbc ban: {self.CRACKER} banned")
            self.assertEqual(len(lines), run + 1, lines)
            self.assertIn("auth_failures (3 in 60s)", lines[-1])
            self.assertIn("auth_failures", self.lab.banned()[self.CRACKER])
            after = self.lab.scrape()
            self.assertEqual(value(after, "sbc_auth_failures_total", reason="wrong_password")
                             - value(before, "sbc_auth_failures_total",
                                     reason="wrong_password"), 3)
            self.assertGreater(value(after, DROPPED, reason="banned")
                               - value(before, DROPPED, reason="banned"), 0)
            self.lab.bans("lift", self.CRACKER)
