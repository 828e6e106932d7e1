"""The environment is the lock file: every package installed is pinned there, at that
version, with hashes (a fresh machine installs exactly this tree)."""

from __future__ import annotations

import re
from importlib import metadata

from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
_INSTALLER_TOOLS = {"pip", "setuptools", "wheel"}  # come with the venv, not the project


def _locked() -> dict[str, tuple[str, bool]]:
    """name -> (version, applies on this machine)."""
    pins: dict[str, tuple[str, bool]] = {}
    text = (ROOT / "requirements.lock").read_text()
    for block in re.split(r"\n(?=\S)", text):
        first = block.splitlines()[0]
        match = _PIN.match(first)
        if match is None:
            continue
        name, version, marker = match.groups()
        assert "--hash=sha256:" in block, f"{name} is pinned without a hash"
        applies = Marker(marker).evaluate() if marker else True
        name = canonicalize_name(name)
        if applies or name not in pins:  # a universal lock may pin per Python version
            pins[name] = (version, applies)
    return pins


def test_every_installed_package_is_locked_at_its_version() -> None:
    locked = _locked()
    assert len(locked) > 20
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    for name, version in installed.items():
        if name in _INSTALLER_TOOLS:
            continue
        assert name in locked, f"{name} {version} is installed but not in requirements.lock"
        assert locked[name][0] == version, (name, version, locked[name][0])
    for name, (version, applies) in locked.items():
        if applies:
            assert installed.get(name) == version, f"{name}=={version} is locked, not installed"


def test_every_direct_dependency_is_in_the_lock() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    locked = _locked()
    for requirement in wanted:
        name = canonicalize_name(re.split(r"[\[<>=~!; ]", requirement, maxsplit=1)[0])
        assert name in locked, f"{requirement} is not in requirements.lock: run dev.py lock"
