"""Finding a name as a call-taker types it: in Chinese characters, pinyin, pinyin initials
or English ("gs", "gongshui", "供水", "water" all find 供水管道爆裂). Pure.

The rule, applied to the keys of a name (:class:`SearchKeys`) after :func:`normalise`:

* rank 0: a key starts with the query;
* rank 1: the Chinese name contains it, or a key starts with it from a later syllable
  (pinyin, initials) or a later word (English): "shui" finds 停水, "burst" finds
  "Water main burst";
* no match otherwise. Ties keep the caller's order.

The pages apply the same rule in the browser (``Page.search`` in
server/static/common/page.js: the intake console's category picker);
tests/browser/test_intake.py checks that both find the same names in the same order.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# CJK Unified Ideographs, extension A and the compatibility block: one syllable each.
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Spaces, apostrophes (xi'an) and the separators people type between words.
_SEPARATORS = re.compile(r"[\s'’·\-_/.,]+")


def han_count(text: str) -> int:
    """Han characters in ``text`` (each has one syllable of pinyin)."""
    return len(_HAN.findall(text))


def syllables_match(name_zh: str, pinyin: str) -> bool:
    """``pinyin`` has one syllable per Han character of ``name_zh``."""
    return len(pinyin.split()) == han_count(name_zh)


def initials(pinyin: str) -> str:
    """First letters of the syllables: ``"gong shui"`` -> ``"gs"``."""
    return "".join(syllable[0] for syllable in pinyin.split())


def normalise(query: str) -> str:
    """Lower case, full-width forms folded (an input method's ``ｇｓ``), separators dropped,
    u-umlaut as ``v`` (as in the stored pinyin)."""
    folded = unicodedata.normalize("NFKC", query).lower().replace("ü", "v")
    return _SEPARATORS.sub("", folded)


@dataclass(frozen=True, slots=True)
class SearchKeys:
    """What a name is found by; ``*_from`` are the keys cut at each later syllable / word."""

    name_zh: str
    initials: str
    pinyin: str  # syllables joined: "gongshui"
    name_en: str  # lower case, words joined
    pinyin_from: tuple[str, ...]
    initials_from: tuple[str, ...]
    name_en_from: tuple[str, ...]


def keys_of(name_zh: str, pinyin: str, name_en: str) -> SearchKeys:
    syllables = pinyin.split()
    words = _SEPARATORS.split(unicodedata.normalize("NFKC", name_en).lower().strip())
    words = [w for w in words if w]
    return SearchKeys(
        name_zh=name_zh,
        initials=initials(pinyin),
        pinyin="".join(syllables),
        name_en="".join(words),
        pinyin_from=tuple("".join(syllables[i:]) for i in range(1, len(syllables))),
        initials_from=tuple(initials(pinyin)[i:] for i in range(1, len(syllables))),
        name_en_from=tuple("".join(words[i:]) for i in range(1, len(words))),
    )


def match_rank(query: str, keys: SearchKeys) -> int | None:
    """0 (a key starts with the normalised ``query``), 1 (a later part does, or the Chinese
    name contains it) or None. An empty query matches nothing."""
    if not query:
        return None
    starts = (keys.name_zh, keys.initials, keys.pinyin, keys.name_en)
    if any(key.startswith(query) for key in starts):
        return 0
    later = (*keys.pinyin_from, *keys.initials_from, *keys.name_en_from)
    if query in keys.name_zh or any(key.startswith(query) for key in later):
        return 1
    return None


def search(query: str, items: Sequence[T], keys: Callable[[T], SearchKeys], limit: int) -> list[T]:
    """The items matching ``query``, best first, at most ``limit``."""
    wanted = normalise(query)
    ranked: list[tuple[int, int, T]] = []
    for index, item in enumerate(items):
        rank = match_rank(wanted, keys(item))
        if rank is not None:
            ranked.append((rank, index, item))
    ranked.sort(key=lambda entry: (entry[0], entry[1]))
    return [item for _, _, item in ranked[:limit]]
