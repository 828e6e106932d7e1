"""Chinese renders on a machine without any Chinese font: the pages fall back to the Noto Sans
SC shipped in server/static/vendor (common/fonts.css), fetched from the hub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Pages
from tests.browser.harness import CHROMIUM_ARGS, LiveHub, platform_fonts

LATIN_ONLY = Path("/usr/share/fonts/truetype/dejavu")


@pytest.fixture(scope="module")
def latin_only_browser(
    playwright: Any, chromium_executable: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A chromium whose fontconfig sees only the DejaVu fonts (no CJK glyph at all)."""
    if not LATIN_ONLY.is_dir():
        pytest.skip(f"{LATIN_ONLY} not found (fonts-dejavu-core)")
    tmp = tmp_path_factory.mktemp("fontconfig")
    conf = tmp / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n'
        f"<fontconfig><dir>{LATIN_ONLY}</dir><cachedir>{tmp / 'cache'}</cachedir></fontconfig>\n"
    )
    chromium = playwright.chromium.launch(
        executable_path=chromium_executable,
        args=list(CHROMIUM_ARGS),
        env={"FONTCONFIG_FILE": str(conf), "HOME": str(tmp)},
    )
    yield chromium
    chromium.close()


@pytest.fixture
def bare_pages(
    latin_only_browser: Any, live_hub: LiveHub, request: pytest.FixtureRequest
) -> Iterator[Pages]:
    opened = Pages(latin_only_browser, live_hub, request.node.originalname)
    yield opened
    problems = opened.close()
    if problems:
        pytest.fail("problems on the pages:\n" + "\n".join(problems), pytrace=False)


def _fonts_fetched(page: Any) -> list[str]:
    return page.evaluate(
        """() => performance.getEntriesByType("resource").map((e) => e.name)
            .filter((name) => name.includes("/vendor/noto-sans-sc/files/"))"""
    )


def test_without_chinese_fonts_the_page_fetches_the_shipped_one(bare_pages: Pages) -> None:
    page = bare_pages.signed_in("wall", "/wall.html", lang="zh", size="wall")
    page.wait_for_function("() => document.fonts.status === 'loaded'")
    page.wait_for_timeout(1000)  # the side panel's rows are drawn after the first answers
    page.evaluate("document.fonts.ready")
    fetched = _fonts_fetched(page)
    assert any("-400-normal.woff2" in name for name in fetched), fetched
    assert any("-700-normal.woff2" in name for name in fetched), fetched
    loaded = page.evaluate(
        """() => [...document.fonts].filter((f) => f.family.includes("Noto Sans SC")
            && f.status === "loaded").length"""
    )
    assert loaded >= 2
    bare_pages.shot(page, "no-cjk-fonts")


def test_only_the_slices_a_page_needs_are_fetched(bare_pages: Pages) -> None:
    page = bare_pages.anonymous("/signin.html", lang="zh", size="phone")
    page.wait_for_function("() => document.fonts.status === 'loaded'")
    fetched = _fonts_fetched(page)
    assert 0 < len(fetched) < 40, fetched  # of 196 files
    # the title's Chinese is drawn from the shipped font, not as boxes
    title = platform_fonts(page, "h1")  # the shipped files name themselves "Noto Sans SC Thin"
    shipped = sum(n for family, n in title.items() if family.startswith("Noto Sans SC"))
    assert shipped >= len("城市应急联动调度登录"), title
    bare_pages.shot(page, "no-cjk-fonts")


def test_symbols_do_not_fetch_the_chinese_font(bare_pages: Pages) -> None:
    """Symbols and emoji come from the system's fonts: a "✕" on an offline phone must not
    wait for (and fail to fetch) a slice of the Chinese font."""
    page = bare_pages.anonymous("/signin.html", lang="en", size="phone")
    page.wait_for_function("() => document.fonts.status === 'loaded'")
    before = _fonts_fetched(page)
    page.evaluate(
        """() => {
            const p = document.createElement("p");
            p.textContent = "✕ ✓ ☎ ● ↻ ⚠ ✈ ♥ ❶";
            document.querySelector("form").append(p);
        }"""
    )
    page.wait_for_timeout(300)
    page.wait_for_function("() => document.fonts.status === 'loaded'")
    assert _fonts_fetched(page) == before
