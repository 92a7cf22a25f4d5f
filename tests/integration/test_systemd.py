"""The shipped systemd unit: systemd itself accepts it, and it keeps its sandbox."""

import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial import unittest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "sbc.service"


def parse_unit(text):
    """The unit as {section: {key: [values]}}; systemd allows repeated keys."""
    sections = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            raise ValueError(f"not a unit file line: {line!r}")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def local_sbc():
    """An executable that exists here, to stand in for /usr/bin/sbc."""
    script = Path(sys.executable).parent / "sbc"
    return script if os.access(script, os.X_OK) else Path(sys.executable)


class VerifyTests(unittest.TestCase):
    def setUp(self):
        self.analyze = shutil.which("systemd-analyze")
        if self.analyze is None:
            raise unittest.SkipTest("systemd-analyze not installed (Debian package systemd)")
        self.directory = Path(tempfile.mkdtemp(prefix="sbc-unit-"))
        self.addCleanup(shutil.rmtree, self.directory)

    def verify(self, text):
        """Run systemd-analyze verify on `text` saved as sbc.service; (exit code, lines about it)."""
        unit = self.directory / "sbc.service"
        unit.write_text(text)
        # --recursive-errors=no: judge our unit only, and turn its parse
        # warnings ("Unknown key ...", "Failed to parse ...") into a non-zero
        # exit, which they are not by default. Works without systemd as PID 1.
        result = subprocess.run(
            [self.analyze, "verify", "--man=no", "--recursive-errors=no", str(unit)],
            capture_output=True,
            text=True,
            env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning", "SYSTEMD_LOG_COLOR": "0"},
            timeout=60,
        )
        ours = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if "sbc.service" in line
        ]
        return result.returncode, ours

    def shipped_unit(self):
        """The shipped unit with ExecStart pointed at an executable that exists here."""
        text = UNIT.read_text()
        text, count = re.subn(
            r"^ExecStart=/usr/bin/sbc ", f"ExecStart={local_sbc()} ", text, flags=re.M
        )
        self.assertEqual(count, 1, "ExecStart=/usr/bin/sbc ... not found in the unit")
        return text

    def test_verify(self):
        """systemd-analyze verify reports nothing about the shipped unit."""
        code, ours = self.verify(self.shipped_unit())
        self.assertEqual(ours, [])
        self.assertEqual(code, 0)

    def test_verify_catches_bad_key(self):
        """The check has teeth: a misspelled sandboxing value is reported."""
        text = self.shipped_unit().replace("ProtectSystem=strict", "ProtectSystem=strcit")
        code, ours = self.verify(text)
        self.assertNotEqual(ours, [])
        self.assertIn("strcit", "\n".join(ours))


class UnitContentTests(unittest.TestCase):
    def setUp(self):
        self.unit = parse_unit(UNIT.read_text())
        self.service = self.unit["Service"]

    def assertSetting(self, key, value):
        self.assertEqual(self.service.get(key), [value], key)

    def test_startup_and_reload(self):
        """The unit starts sbc with the /etc config, waits for READY=1 and reloads by SIGHUP."""
        self.assertSetting("Type", "notify")
        self.assertSetting("NotifyAccess", "main")
        self.assertSetting("ExecStart", "/usr/bin/sbc run --config /etc/sbc/sbc.toml")
        self.assertSetting("ExecReload", "/bin/kill -HUP $MAINPID")
        self.assertSetting("WatchdogSec", "30")
        self.assertSetting("Restart", "on-failure")
        self.assertIn("TimeoutStopSec", self.service)

    def test_identity_and_directories(self):
        """sbc runs as its own user with /var/lib/sbc and /etc/sbc managed by systemd."""
        self.assertSetting("User", "sbc")
        self.assertSetting("Group", "sbc")
        self.assertSetting("StateDirectory", "sbc")
        self.assertSetting("ConfigurationDirectory", "sbc")
        self.assertSetting("ReadWritePaths", "/var/lib/sbc")

    def test_sandbox(self):
        """Every sandboxing line the deployment relies on is present."""
        self.assertSetting("ProtectSystem", "strict")
        self.assertSetting("ProtectHome", "yes")
        self.assertSetting("PrivateTmp", "yes")
        self.assertSetting("PrivateDevices", "yes")
        self.assertSetting("NoNewPrivileges", "yes")
        self.assertSetting("AmbientCapabilities", "CAP_NET_BIND_SERVICE")
        self.assertSetting("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE")
        self.assertSetting("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX")
        self.assertSetting("LockPersonality", "yes")
        self.assertSetting("RestrictRealtime", "yes")
        self.assertSetting("SystemCallArchitectures", "native")
        self.assertSetting("LimitNOFILE", "65536")

    def test_no_memory_deny_write_execute(self):
        """MemoryDenyWriteExecute stays off because cffi callbacks need W+X memory."""
        self.assertNotIn("MemoryDenyWriteExecute", self.service)

    def test_unit_parses_as_ini(self):
        """The unit is plain INI that configparser reads too (no duplicated keys)."""
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str
        parser.read_string(UNIT.read_text())
        self.assertEqual(parser["Service"]["Type"], "notify")
        self.assertEqual(parser["Install"]["WantedBy"], "multi-user.target")


class CompanionFileTests(unittest.TestCase):
    def lines(self, name):
        text = (SYSTEMD / name).read_text()
        return [
            line for line in text.splitlines() if line.strip() and not line.startswith("#")
        ]

    def test_sysusers(self):
        """sysusers creates the sbc system user with its home in /var/lib/sbc."""
        self.assertEqual(
            self.lines("sbc.sysusers.conf"),
            ['u sbc - "SIP session border controller" /var/lib/sbc'],
        )

    def test_tmpfiles(self):
        """tmpfiles creates /var/lib/sbc private to sbc."""
        self.assertEqual(self.lines("sbc.tmpfiles.conf"), ["d /var/lib/sbc 0750 sbc sbc -"])


class InstallTests(unittest.TestCase):
    """sysusers and tmpfiles applied to an empty --root, as a package install would."""

    def setUp(self):
        self.root = Path(tempfile.mkdtemp(prefix="sbc-root-"))
        self.addCleanup(shutil.rmtree, self.root)
        (self.root / "etc").mkdir()

    def run_tool(self, name, *args):
        tool = shutil.which(name)
        if tool is None:
            raise unittest.SkipTest(f"{name} not installed (Debian package systemd)")
        result = subprocess.run(
            [tool, f"--root={self.root}", *args], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(result.returncode, 0, result.stderr)

    def sysusers(self):
        self.run_tool("systemd-sysusers", str(SYSTEMD / "sbc.sysusers.conf"))
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == "sbc":
                return fields
        self.fail("no sbc entry in passwd")

    def test_sysusers_creates_system_user(self):
        """systemd-sysusers adds a non-login system user sbc at home in /var/lib/sbc."""
        name, _, uid, gid, gecos, home, shell = self.sysusers()
        self.assertLess(int(uid), 1000)
        self.assertEqual(gecos, "SIP session border controller")
        self.assertEqual(home, "/var/lib/sbc")
        self.assertTrue(shell.endswith("nologin"), shell)
        groups = (self.root / "etc" / "group").read_text()
        self.assertIn(f"sbc:x:{gid}:", groups)

    def test_tmpfiles_creates_state_directory(self):
        """systemd-tmpfiles creates /var/lib/sbc as 0750 owned by sbc."""
        if os.geteuid() != 0:
            raise unittest.SkipTest("systemd-tmpfiles needs root to chown")
        _, _, uid, gid, *_ = self.sysusers()
        self.run_tool("systemd-tmpfiles", "--create", str(SYSTEMD / "sbc.tmpfiles.conf"))
        state = (self.root / "var" / "lib" / "sbc").stat()
        self.assertEqual(oct(state.st_mode & 0o7777), "0o750")
        self.assertEqual((state.st_uid, state.st_gid), (int(uid), int(gid)))
