#!/usr/bin/env python3
"""The two commands of the README, needing only Python 3.11 on a fresh machine.

    python3 dev.py serve [--port 8000]   # hub + embedded Redis + SQLite + a small simulated city
    python3 dev.py test [pytest args]    # the whole test suite
    python3 dev.py test --fast [args]    # the fast tier only: pure + app tests (-m "pure or app"),
                                         # on two worker processes (pytest-xdist; -n 0: one)
    python3 dev.py lock [--upgrade]      # re-resolve requirements.lock after editing pyproject.toml

``serve`` and ``test`` create ``.venv`` and install the whole pinned dependency tree from
``requirements.lock`` (every package with its hashes: nothing unpinned reaches the machine)
the first time, and again whenever the lock file changes. The project itself is not built or
installed: a ``.pth`` file puts this checkout on the venv's path. Standard library only: this
file runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".installed"
LOCK = ROOT / "requirements.lock"
# Source folders on the venv's path: the server, simulations and tools, and the field protocol.
SOURCE_PATHS = (ROOT, ROOT / "fieldapp-api")


def ensure_environment() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs before the venv exists
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256(LOCK.read_bytes() + str(SOURCE_PATHS).encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing the locked dependencies into .venv ...", flush=True)
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check", "-q"]
    # --require-hashes: every package, dependencies of dependencies included, must be the
    # exact file the lock names; --no-deps: nothing outside the lock is resolved on the fly.
    subprocess.run([*pip, "install", "--require-hashes", "--no-deps", "-r", str(LOCK)], check=True)
    site = subprocess.run(
        [str(PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "city_linkage_dispatch.pth").write_text(
        "".join(f"{path}\n" for path in SOURCE_PATHS)
    )
    STAMP.write_text(wanted)


def lock(uv_args: list[str]) -> int:
    """Resolve pyproject.toml's dependencies (with the test extra) into requirements.lock,
    hashes included, for Python 3.11 on every platform (uv's universal resolution). Pins
    already in the lock are kept where they still fit; ``--upgrade`` takes the newest."""
    ensure_environment()
    command = [
        str(VENV / "bin" / "uv"),
        "pip",
        "compile",
        "pyproject.toml",
        "--extra",
        "test",
        "--generate-hashes",
        "--universal",
        "--python-version",
        "3.11",
        "-o",
        str(LOCK.name),
        *uv_args,
    ]
    return subprocess.run(command, cwd=ROOT).returncode


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("serve", "test", "lock"):
        print(__doc__)
        return 2
    if sys.argv[1] == "lock":
        return lock(sys.argv[2:])
    ensure_environment()
    command, rest = sys.argv[1], sys.argv[2:]
    os.chdir(ROOT)
    if command == "serve":
        args = [str(PYTHON), "-m", "simulations.demo", *rest]
    else:
        if "--fast" in rest:  # the tiers are pytest markers, see tests/conftest.py
            rest = [arg for arg in rest if arg != "--fast"] + ["-m", "pure or app"]
            if not any(arg.startswith(("-n", "--numprocesses")) for arg in rest):
                # Two worker processes (pytest-xdist): these tiers share nothing between tests.
                rest += ["-n", str(min(2, os.cpu_count() or 1))]
        args = [str(PYTHON), "-m", "pytest", *rest]
    os.execv(args[0], args)


if __name__ == "__main__":
    sys.exit(main())
