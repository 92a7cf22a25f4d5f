"""Set up bench/.venv (sippy pinned, sbc editable) and run the benchmarks in it.

The comparison needs sippy, which must not leak into the test venv, so this
script (run by any Python >= 3.11, e.g. from `make bench`) keeps a separate
venv and runs the benchmarks with its Python. The venv is rebuilt when
bench/requirements.txt or pyproject.toml changes.

    python bench/run.py [--only parse|callpath|b2bua|relay] [ARGS...]

runs bench/parse.py, bench/callpath.py, bench/b2bua.py, then bench/relay.py (or
only the one named), each with ARGS (all know --strict and --profile). The exit
status is the worst of theirs.
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


BENCHES = ("parse", "callpath", "b2bua", "relay")


def split_only(argv):
    """(benches to run, the other arguments) from --only NAME / --only=NAME."""
    only, rest, args = None, [], iter(argv)
    for arg in args:
        if arg == "--only" or arg.startswith("--only="):
            only = arg.partition("=")[2] or next(args, "")
            if only not in BENCHES:
                sys.exit(f"bench: --only takes one of {', '.join(BENCHES)}, not {only!r}")
        else:
            rest.append(arg)
    return ([only] if only else list(BENCHES)), rest


def main():
    benches, args = split_only(sys.argv[1:])
    stamp = wanted()
    if installed() != stamp or not os.path.exists(PYTHON):
        setup(stamp)
    worst = 0
    for i, name in enumerate(benches):
        if i:
            print(flush=True)
        script = os.path.join(BENCH, f"{name}.py")
        code = subprocess.run([PYTHON, script, *args]).returncode
        worst = max(worst, code if code >= 0 else 1)  # < 0: killed by a signal
    sys.exit(worst)


if __name__ == "__main__":
    main()
