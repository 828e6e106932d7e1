"""Every page the hub serves needs a sign-in, and loads without a console error, a failed
request or an uncaught exception, in Chinese and in English, at a phone's and a wall's size
(screenshots of each are saved as artifacts: look at them)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.browser.harness import LANGS, SIZES, STATIC, LiveHub

# Pages anyone may open (the sign-in page itself).
PUBLIC_PAGES = {"signin.html"}
# Who looks at a page in this test (default: the admin). A page for one role says so here.
PAGE_ROLES = {"wall.html": "wall"}
# How long a page may take to settle after its load event (first API answers, feed hello).
SETTLE_MS = 1500

# Folders of pages that open without a person's session: the squad phone app signs in with
# the squad's token (tests/browser/test_phone.py).
PUBLIC_FOLDERS = {"phone"}

PAGES = sorted(
    path.relative_to(STATIC).as_posix()
    for path in STATIC.rglob("*.html")
    if "vendor" not in path.parts
    and path.name not in PUBLIC_PAGES
    and path.relative_to(STATIC).parts[0] not in PUBLIC_FOLDERS
)


def test_the_pages_are_found() -> None:
    assert "wall.html" in PAGES and "index.html" in PAGES


@pytest.mark.parametrize("page", [*PAGES, ""])
def test_a_page_without_a_session_goes_to_sign_in(live_hub: LiveHub, page: str) -> None:
    answer = httpx.get(f"{live_hub.url}/{page}?lang=en", follow_redirects=False)
    assert answer.status_code == 303
    location = urlsplit(answer.headers["location"])
    assert location.path == "/signin.html"
    assert parse_qs(location.query)["next"] == [f"/{page}?lang=en"]


@pytest.mark.parametrize("page", PAGES)
def test_a_browser_without_a_session_is_shown_the_sign_in_page(pages: Any, page: str) -> None:
    opened = pages.anonymous(f"/{page}", lang="en", size="phone")
    assert urlsplit(opened.url).path == "/signin.html"
    # the sign-in page speaks the language the page was asked in
    assert opened.locator("button[type=submit]").inner_text() == "Sign in"


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("page", PAGES)
def test_a_page_loads_cleanly(pages: Any, page: str, lang: str, size: str) -> None:
    role = PAGE_ROLES.get(page, "admin")
    opened = pages.signed_in(role, f"/{page}", lang=lang, size=size)
    opened.wait_for_timeout(SETTLE_MS)
    assert opened.evaluate("document.documentElement.lang") == ("zh-CN" if lang == "zh" else "en")
    pages.shot(opened, full_page=size == "phone")


@pytest.mark.parametrize("page", PAGES)
def test_every_page_signs_out(pages: Any, live_hub: LiveHub, page: str) -> None:
    """Each page has a sign-out button (``#signout``, Page.signOut): it ends the session on
    the hub, and the page then asks for a sign-in again."""
    role = PAGE_ROLES.get(page, "admin")
    opened = pages.signed_in(role, f"/{page}", lang="en", size="phone")
    cookie = next(c for c in opened.context.cookies() if c["name"] == "ld_session")
    opened.click("#signout")
    opened.wait_for_url(lambda url: urlsplit(url).path == "/signin.html")
    assert not [c for c in opened.context.cookies() if c["name"] == "ld_session"]
    # the old cookie is dead on the hub too, not just forgotten by the browser
    again = httpx.get(
        f"{live_hub.url}/{page}", cookies={"ld_session": cookie["value"]}, follow_redirects=False
    )
    assert again.status_code == 303


@pytest.mark.parametrize("lang", LANGS)
def test_the_sign_in_page_loads_cleanly(pages: Any, lang: str) -> None:
    for size in SIZES:
        opened = pages.anonymous("/signin.html", lang=lang, size=size)
        opened.wait_for_load_state("load")
        pages.shot(opened)


def test_every_page_links_the_shared_fonts() -> None:
    """The shipped CJK font reaches a page only through common/fonts.css."""
    for path in STATIC.rglob("*.html"):
        if "vendor" in path.parts:
            continue
        assert re.search(r'href="(/|\.\./)*common/fonts\.css"', path.read_text()), path.name


def test_every_page_is_told_the_city_before_its_scripts_run() -> None:
    """/city.js (the city's time zone) comes before common/page.js, which reads it once."""
    for page in PAGES:
        text = (STATIC / page).read_text()
        city = text.find('<script src="/city.js"></script>')
        assert 0 <= city < text.find('common/page.js"></script>'), page


@pytest.mark.parametrize(
    ("asked", "lands_on"),
    [
        ("/signin.html?next=%2Fcenter.html", "/center.html"),
        ("/signin.html?next=%2Freports%2Fevaluation.html%3Fmonth%3D2026-02%26lang%3Dzh", None),
        ("/signin.html", "/"),
        ("/signin.html?next=%2F%2Fevil.example%2Fx", "/"),
        ("/signin.html?next=https%3A%2F%2Fevil.example%2Fx", "/"),
    ],
)
def test_the_language_asked_on_the_sign_in_page_carries_on(
    pages: Any, live_hub: LiveHub, asked: str, lands_on: str | None
) -> None:
    """Opened with ?lang=en (a link, the demo's URL), the sign-in page leads on to ?next= in
    English, and ?next= stays a path on this site whatever it says."""
    page = pages.anonymous(asked, lang="en")
    assert page.locator("button[type=submit]").inner_text() == "Sign in"
    pages.type_sign_in(page, "center")
    wanted = lands_on or "/reports/evaluation.html"
    page.wait_for_url(lambda url: urlsplit(url).path == wanted)
    page.wait_for_function("() => document.documentElement.lang === 'en'")
    landed = urlsplit(page.url)
    assert f"{landed.scheme}://{landed.netloc}" == live_hub.url
    query = parse_qs(landed.query)
    assert query["lang"] == ["en"]
    if lands_on is None:  # the page's own parameters are kept; its language is the one asked
        assert query["month"] == ["2026-02"]


def test_the_front_page_names_a_desks_unit_and_links_its_pages(pages: Any) -> None:
    """The water desk is shown its unit's name (it read "unit desk · water"), and the pages
    it may open: the console, the reports, its squads."""
    page = pages.signed_in("unit", "/", lang="zh", size="phone")
    page.wait_for_function("() => document.getElementById('who').textContent.includes('自来水')")
    assert "water" not in page.locator("#who").inner_text()
    links = page.locator("#cards a")
    hrefs = {links.nth(i).get_attribute("href") for i in range(links.count())}
    assert hrefs == {"center.html", "reports/index.html", "squads.html"}, hrefs
