"""An :class:`asyncio.Queue` that knows its event loop from the start.

On Python 3.11 ``Queue.get`` asks for the running loop each time it has to wait, and asking
for the running loop costs a ``getpid`` system call (3.11 checks that the loop belongs to
this process; 3.12 dropped the check). A connection's receive queue waits for nearly every
frame, so a hub paid a system call per position fix: in a profile of a hub taking 3,000
fixes a second, ``getpid`` from ``Queue.get`` was one sample in ten of its CPU. A queue made
for one loop, and used only on it, needs no such question."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

T = TypeVar("T")


class LoopQueue(asyncio.Queue[T]):
    """A queue of ``loop`` (default: the running loop), to be used on that loop only."""

    def __init__(self, maxsize: int = 0, loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(maxsize)
        self._loop: Any = loop or asyncio.get_running_loop()

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop  # type: ignore[no-any-return]
