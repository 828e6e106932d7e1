"""Copy the front-end libraries from ``node_modules`` into ``server/static/vendor/``.

    npm install && python3 tools/vendor_assets.py     (or: npm run vendor)

The hub serves its pages with no CDN (wall displays often have no internet), so the library
files it needs are copied next to its pages and committed: a fresh machine needs no npm.
Run this after changing a version in ``package.json``. Standard library only.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "server" / "static" / "vendor"

# package -> files under node_modules/<package> to copy (folders copied whole)
ASSETS: dict[str, tuple[str, ...]] = {
    "leaflet": ("dist/leaflet.js", "dist/leaflet.css", "dist/images", "LICENSE"),
    # the phone app's codec of the field protocol (UMD build: the global MessagePack)
    "@msgpack/msgpack": ("dist.umd/msgpack.min.js", "LICENSE"),
}


def copy_package(package: str, files: tuple[str, ...], node_modules: Path, vendor: Path) -> str:
    """Copy one package's files flat into ``vendor/<name>`` (a scoped package's name without
    its scope: ``@msgpack/msgpack`` -> ``msgpack``); returns its version."""
    source = node_modules / package
    manifest = json.loads((source / "package.json").read_text())
    target = vendor / package.rsplit("/", 1)[-1]
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in files:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / path.name)
        else:
            shutil.copy2(path, target / path.name)
    version = str(manifest["version"])
    (target / "VERSION").write_text(version + "\n")
    return version


def main() -> int:
    node_modules = ROOT / "node_modules"
    if not node_modules.is_dir():
        print("no node_modules: run `npm install` first", file=sys.stderr)
        return 1
    for package, files in ASSETS.items():
        version = copy_package(package, files, node_modules, VENDOR)
        print(f"{package} {version} -> {VENDOR / package.rsplit('/', 1)[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
