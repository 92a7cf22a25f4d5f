"""Set up bench/.venv (sippy pinned, sbc editable) and run the benchmarks in it.

The comparison needs sippy, which must not leak into the test venv, so this
script (run by any Python >= 3.11, e.g. from `make bench`) keeps a separate
venv and re-runs itself there. The venv is rebuilt when bench/requirements.txt
or pyproject.toml changes. Arguments are passed on to bench/parse.py.
"""

import hashlib
import os
import subprocess
import sys
import venv

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
VENV = os.path.join(BENCH, ".venv")
PYTHON = os.path.join(VENV, "bin", "python")
STAMP = os.path.join(VENV, ".installed")
REQUIREMENTS = os.path.join(BENCH, "requirements.txt")


def wanted():
    digest = hashlib.sha256()
    for path in (REQUIREMENTS, os.path.join(ROOT, "pyproject.toml")):
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def installed():
    try:
        with open(STAMP) as f:
            return f.read().strip()
    except OSError:
        return None


def setup(stamp):
    print("bench: setting up bench/.venv (bench/requirements.txt + sbc) ...", flush=True)
    venv.EnvBuilder(clear=True, with_pip=True).create(VENV)
    cmd = [PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "-q",
           "-r", REQUIREMENTS, "-e", ROOT]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        sys.stdout.write(done.stdout)
        sys.exit(f"bench: pip install failed (exit {done.returncode})")
    with open(STAMP, "w") as f:
        f.write(stamp + "\n")


def main():
    stamp = wanted()
    if installed() != stamp or not os.path.exists(PYTHON):
        setup(stamp)
    script = os.path.join(BENCH, "parse.py")
    os.execv(PYTHON, [PYTHON, script, *sys.argv[1:]])


if __name__ == "__main__":
    main()
