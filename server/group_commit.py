"""Group commit: callers hand in items one at a time and each awaits its own answer, while
one flush at a time carries out every item handed in so far together (one thread hop, one
round trip). An item handed in while a flush runs goes in the next one, which starts as soon
as that flush ends: nothing waits for a timer, and a lone item costs what it cost alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class GroupCommit(Generic[Item, Answer]):
    """``flush(items)`` returns one answer per item, in order; if it raises, every caller of
    that flush gets the exception (the items' own code decides what a failure means)."""

    def __init__(self, flush: Callable[[Sequence[Item]], Awaitable[Sequence[Answer]]]) -> None:
        self._flush = flush
        self._pending: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    answers = await self._flush([item for item, _ in batch])
                    if len(answers) != len(batch):
                        raise RuntimeError(f"{len(answers)} answers for {len(batch)} items")
                except BaseException as exc:  # noqa: BLE001 - handed to every caller
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), answer in zip(batch, answers, strict=True):
                    if not future.done():  # its caller may have been cancelled
                        future.set_result(answer)
        finally:
            self._flusher = None
            for _, future in self._pending:  # cancelled with items still waiting
                if not future.done():
                    future.cancel()
            self._pending = []
