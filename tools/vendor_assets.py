"""Copy the front-end libraries from ``node_modules`` into ``server/static/vendor/``.

    npm install && python3 tools/vendor_assets.py     (or: npm run vendor)

The hub serves its pages with no CDN (wall displays often have no internet), so the library
files it needs are copied next to its pages and committed: a fresh machine needs no npm.
Run this after changing a version in ``package.json``. Standard library only.

A package lands in ``vendor/<its name without the scope>`` (``@msgpack/msgpack`` ->
``vendor/msgpack``) with a ``VERSION`` file. The CJK web font is cut down on the way: only
the weights the pages use, only the woff2 files, only the slices that hold Chinese (and
Latin) characters; the browser fetches a slice only when a page shows one of its characters
(``unicode-range``), and only where no Chinese font is installed (see common/fonts.css).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "server" / "static" / "vendor"

# package -> files under node_modules/<package> to copy (folders copied whole)
ASSETS: dict[str, tuple[str, ...]] = {
    "leaflet": ("dist/leaflet.js", "dist/leaflet.css", "dist/images", "LICENSE"),
    # the MessagePack codec of the phone app: the browser build (global MessagePack)
    "@msgpack/msgpack": (
        "dist.umd/msgpack.min.js",
        "dist.umd/msgpack.min.js.map",
        "LICENSE",
    ),
}


# Chinese text: CJK ideographs (and extension A), CJK punctuation, full-width forms.
CHINESE = (
    range(0x3400, 0x4DC0),
    range(0x4E00, 0xA000),
    range(0x3000, 0x3040),
    range(0xFF00, 0xFFF0),
)


@dataclass(frozen=True)
class FontCut:
    """Which part of a fontsource package is served."""

    package: str
    weights: tuple[int, ...]
    # a slice is kept when its name (the part between the family and the weight: "57",
    # "latin", "cyrillic") matches; a numbered slice serves only its characters in
    # ``needed`` (symbols and emoji are left to the system's fonts: a page that shows a "✕"
    # must not need a Chinese font's file, which an offline phone may lack)
    slices: re.Pattern[str]
    needed: tuple[range, ...] = CHINESE


FONTS = (
    # Noto Sans SC in Google's slicing: the numbered slices are the Chinese characters (and
    # CJK punctuation, full-width forms) by frequency; "latin" for the Latin in Chinese text.
    # 400 for text, 700 for headings and figures (600 in the pages' CSS takes the 700).
    FontCut("@fontsource/noto-sans-sc", (400, 700), re.compile(r"^(\d+|latin)$")),
)


def unicode_range(points: list[int]) -> str:
    """The CSS ``unicode-range`` of sorted code points, runs as ``U+first-last``."""
    runs: list[list[int]] = []
    for point in points:
        if runs and point == runs[-1][1] + 1:
            runs[-1][1] = point
        else:
            runs.append([point, point])
    return ",".join(f"U+{a:x}" if a == b else f"U+{a:x}-{b:x}" for a, b in runs)


def code_points(unicode_range: str) -> set[int]:
    """The code points of a CSS ``unicode-range`` (``U+4e00-4e0f,U+3002``)."""
    points: set[int] = set()
    for part in unicode_range.split(","):
        first, _, last = part.strip().removeprefix("U+").removeprefix("u+").partition("-")
        points.update(range(int(first, 16), int(last or first, 16) + 1))
    return points


_FACE = re.compile(r"@font-face\s*\{(?P<body>[^}]*)\}", re.S)
_WOFF2 = re.compile(r"url\(\./files/(?P<file>[^)]+\.woff2)\)")


def target_of(package: str) -> Path:
    return VENDOR / package.rsplit("/", 1)[-1]


def _fresh(target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)


def copy_package(package: str, files: tuple[str, ...], node_modules: Path, vendor: Path) -> str:
    """Copy one package's files flat into ``vendor/<name>``; returns its version."""
    source = node_modules / package
    manifest = json.loads((source / "package.json").read_text())
    target = vendor / package.rsplit("/", 1)[-1]
    _fresh(target)
    for name in files:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / path.name)
        else:
            shutil.copy2(path, target / path.name)
    version = str(manifest["version"])
    (target / "VERSION").write_text(version + "\n")
    return version


def cut_font(font: FontCut, node_modules: Path, vendor: Path) -> tuple[str, int]:
    """Write ``vendor/<name>/fonts.css`` (the kept faces, woff2 only) and the kept files;
    returns the version and the bytes of font files copied."""
    source = node_modules / font.package
    manifest = json.loads((source / "package.json").read_text())
    target = vendor / font.package.rsplit("/", 1)[-1]
    _fresh(target)
    (target / "files").mkdir()
    faces: list[str] = []
    copied = 0
    for weight in font.weights:
        css = (source / f"{weight}.css").read_text()
        for face in _FACE.finditer(css):
            body = face.group("body")
            woff2 = _WOFF2.search(body)
            if woff2 is None:
                continue
            file = woff2.group("file")
            slice_name = re.sub(rf"^{re.escape(source.name)}-|-{weight}-normal\.woff2$", "", file)
            if not font.slices.match(slice_name):
                continue
            if slice_name.isdigit():
                found = re.search(r"unicode-range:\s*([^;]+);", body)
                points = code_points(found.group(1)) if found else set()
                kept = sorted(p for p in points if any(p in wanted for wanted in font.needed))
                if found is None or not kept:
                    continue
                body = body.replace(found.group(0), f"unicode-range: {unicode_range(kept)};")
            shutil.copy2(source / "files" / file, target / "files" / file)
            copied += (target / "files" / file).stat().st_size
            src = f"src: url(./files/{file}) format('woff2');"
            body = re.sub(r"src:[^;]+;", src, body)
            faces.append("@font-face {" + body + "}")
    header = (
        f"/* {font.package} {manifest['version']} (SIL Open Font License 1.1, see LICENSE), "
        f"weights {', '.join(map(str, font.weights))}: written by tools/vendor_assets.py */\n"
    )
    (target / "fonts.css").write_text(header + "\n".join(faces) + "\n")
    shutil.copy2(source / "LICENSE", target / "LICENSE")
    version = str(manifest["version"])
    (target / "VERSION").write_text(version + "\n")
    return version, copied


def main() -> int:
    node_modules = ROOT / "node_modules"
    if not node_modules.is_dir():
        print("no node_modules: run `npm install` first", file=sys.stderr)
        return 1
    for package, files in ASSETS.items():
        version = copy_package(package, files, node_modules, VENDOR)
        print(f"{package} {version} -> {target_of(package)}")
    for font in FONTS:
        version, size = cut_font(font, node_modules, VENDOR)
        print(f"{font.package} {version} -> {target_of(font.package)} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
