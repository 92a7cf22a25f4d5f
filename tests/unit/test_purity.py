"""The core stays sans-I/O: every module outside the shell imports without Twisted."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

ROOT = Path(__file__).resolve().parents[2]
SHELL = ("sbc.net", "sbc.service", "sbc.__main__")

# Runs in a fresh interpreter: Twisted is made unimportable, then each module is
# imported and the failures reported as JSON {module: "Error: message"}.
PROBE = """
import importlib, json, sys
sys.modules["twisted"] = None
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except BaseException as e:
        failed[name] = f"{type(e).__name__}: {e}"
leaked = sorted(m for m in sys.modules if m.startswith("twisted.") and sys.modules[m] is not None)
print(json.dumps({"failed": failed, "leaked": leaked}))
"""


def core_modules():
    """Every module under sbc/ except the shell, found on disk without importing."""
    found = []

    def walk(path, prefix):
        for info in pkgutil.iter_modules([str(path)]):
            name = prefix + info.name
            if name in SHELL or any(name.startswith(s + ".") for s in SHELL):
                continue
            found.append(name)
            if info.ispkg:
                walk(path / info.name, name + ".")

    found.append("sbc")
    walk(ROOT / "sbc", "sbc.")
    return sorted(found)


class PurityTests(unittest.TestCase):
    def test_enumeration_covers_the_core(self):
        """The walk finds the known core modules and skips the shell."""
        modules = core_modules()
        for name in ("sbc", "sbc.errors", "sbc.config", "sbc.sip", "sbc.sip.message",
                     "sbc.sip.headers", "sbc.sip.uri", "sbc.sip.framing"):
            self.assertIn(name, modules)
        for name in modules:
            self.assertFalse(name == "sbc.net" or name.startswith("sbc.net."), name)
            self.assertNotIn(name, ("sbc.service", "sbc.__main__"))

    def test_core_imports_without_twisted(self):
        """Each core module imports in an interpreter where Twisted cannot be imported."""
        modules = core_modules()
        result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(modules)],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual(report["failed"], {})
        self.assertEqual(report["leaked"], [])

    def test_probe_detects_twisted(self):
        """The probe really blocks Twisted: a shell module fails to import."""
        result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(["sbc.net.notify"])],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertIn("sbc.net.notify", report["failed"])
        self.assertIn("ModuleNotFoundError", report["failed"]["sbc.net.notify"])
