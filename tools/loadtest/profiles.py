"""Summarise a py-spy profile in collapsed-stack form (``py-spy record --format raw``).

    python -m tools.loadtest.profiles hub0.txt [--top 25] [--match server/]

Prints, per function, the share of samples where it is on top of the stack (self) and where it
is anywhere on it (inclusive). Pure functions over the text; the loadtest's ``--profile``
writes the input.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_LINE = re.compile(r":\d+\)$")
# Frames of a thread waiting (``py-spy record --native``): such samples are not CPU time.
WAITS = (
    "epoll_wait (",
    "epoll_pwait (",
    "select (",
    "poll (",
    "pthread_cond_wait (",
    "pthread_cond_timedwait (",
    "sem_timedwait (",
    "sem_clockwait (",
    "PyThread_acquire_lock_timed (",
)


@dataclass(frozen=True, slots=True)
class Profile:
    total: int  # samples on CPU (idle ones are counted apart)
    self_samples: Counter[str]
    inclusive: Counter[str]
    idle: int = 0


def frame_name(frame: str) -> str:
    """``func (path/file.py:123)`` -> ``func (path/file.py)``: lines of one function merge."""
    return _LINE.sub(")", frame.strip())


def parse(lines: Iterable[str]) -> Profile:
    total = idle = 0
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")]
        if any(frame.startswith(WAITS) for frame in frames[-4:]):
            idle += count
            continue
        total += count
        self_samples[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return Profile(total, self_samples, inclusive, idle)


def table(profile: Profile, top: int, match: str = "") -> list[str]:
    rows = [
        f"{'self %':>7} {'incl %':>7}  function ({profile.total} samples on CPU, "
        f"{profile.idle} idle)"
    ]
    ranked = sorted(profile.inclusive, key=lambda n: (-profile.inclusive[n], n))
    shown = [n for n in ranked if match in n][:top]
    for name in shown:
        rows.append(
            f"{100 * profile.self_samples[name] / profile.total:7.1f} "
            f"{100 * profile.inclusive[name] / profile.total:7.1f}  {name}"
        )
    rows.append("")
    rows.append(f"{'self %':>7}  top self time")
    for name, count in profile.self_samples.most_common(top):
        rows.append(f"{100 * count / profile.total:7.1f}  {name}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.loadtest.profiles")
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="only functions whose name contains this")
    args = parser.parse_args(argv)
    with open(args.path) as f:
        profile = parse(f)
    if not profile.total:
        print("no samples", file=sys.stderr)
        return 1
    print("\n".join(table(profile, args.top, args.match)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
