"""Group commit (``server.group_commit``) and the log-file sender that stands on it."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from server.citizen.compose import Message
from server.citizen.delivery import Outcome
from server.citizen.senders import LogFileSender
from server.group_commit import GroupCommit


class Recorder:
    def __init__(self, fail_on: str = "") -> None:
        self.flushes: list[list[str]] = []
        self.fail_on = fail_on
        self.gate: asyncio.Event | None = None

    async def flush(self, items: Sequence[str]) -> list[str]:
        self.flushes.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_on in items:
            raise ValueError(f"refused {self.fail_on}")
        return [item.upper() for item in items]


async def test_items_handed_in_together_go_in_one_flush_and_each_gets_its_answer() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.flush)
    answers = await asyncio.gather(*(commit.submit(x) for x in ("a", "b", "c")))
    assert answers == ["A", "B", "C"]
    assert recorder.flushes == [["a", "b", "c"]]


async def test_a_lone_item_is_flushed_at_once_and_the_next_in_a_flush_of_its_own() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.flush)
    assert await commit.submit("a") == "A"
    assert await commit.submit("b") == "B"
    assert recorder.flushes == [["a"], ["b"]]


async def test_items_handed_in_during_a_flush_go_in_the_next() -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    commit = GroupCommit(recorder.flush)
    first = asyncio.create_task(commit.submit("a"))
    await asyncio.sleep(0)  # the flusher starts and waits at the gate with ["a"]
    await asyncio.sleep(0)
    later = [asyncio.create_task(commit.submit(x)) for x in ("b", "c")]
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await asyncio.gather(first, *later) == ["A", "B", "C"]
    assert recorder.flushes == [["a"], ["b", "c"]]


async def test_a_failed_flush_raises_to_each_of_its_callers_and_the_next_flush_goes_on() -> None:
    recorder = Recorder(fail_on="b")
    commit = GroupCommit(recorder.flush)
    results = await asyncio.gather(*(commit.submit(x) for x in ("a", "b")), return_exceptions=True)
    assert [type(r) for r in results] == [ValueError, ValueError]
    assert await commit.submit("c") == "C"


async def test_a_cancelled_caller_does_not_stop_the_others() -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    commit = GroupCommit(recorder.flush)
    gone = asyncio.create_task(commit.submit("a"))
    kept = asyncio.create_task(commit.submit("b"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gone.cancel()
    recorder.gate.set()
    assert await kept == "B"
    with pytest.raises(asyncio.CancelledError):
        await gone


def _message(n: int) -> Message:
    return Message(
        id=f"m{n}",
        key=f"R{n}:received:1",
        request=f"R{n}",
        unit="water",
        event="received",
        lang="zh",
        phone="13800000000",
        text=f"您的诉求 R{n} 已受理",
        queued_at=1.0,
    )


async def test_the_log_sender_writes_messages_sent_together_in_one_append(
    tmp_path: Path,
) -> None:
    appends: list[bytes] = []

    class Counting(LogFileSender):
        def _append(self, data: bytes) -> None:
            appends.append(data)
            super()._append(data)

    path = tmp_path / "out" / "citizen-messages.log"
    sender = Counting(path)
    attempts = await asyncio.gather(*(sender.send(_message(n)) for n in range(5)))
    assert [a.outcome for a in attempts] == [Outcome.DELIVERED] * 5
    assert len(appends) == 1
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["request"] for line in lines] == [f"R{n}" for n in range(5)]
    assert lines[0]["text"] == "您的诉求 R0 已受理" and lines[0]["phone"] == "13800000000"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert (await sender.send(_message(9))).outcome is Outcome.DELIVERED
    assert len(appends) == 2 and len(path.read_text().splitlines()) == 6


async def test_a_log_file_that_cannot_be_written_is_a_retry_for_each_message(
    tmp_path: Path,
) -> None:
    sender = LogFileSender(tmp_path / "citizen-messages.log")
    (tmp_path / "citizen-messages.log").mkdir()  # a directory where the file should be
    attempts = await asyncio.gather(*(sender.send(_message(n)) for n in range(3)))
    assert [a.outcome for a in attempts] == [Outcome.RETRY] * 3
    assert all(a.error.startswith("log file: ") for a in attempts)
