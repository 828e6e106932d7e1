"""The squad session's decisions without a socket or Redis: resume, sequencing, the arrival
geofence, pending acknowledgements."""

from __future__ import annotations

import msgspec
import pytest

from dispatch_field import protocol
from server.actions import StepWindow, check_step_time
from server.field.core import Geofence, PendingAck, Sequencer, Step, decode_error, plan_resume


@pytest.mark.parametrize(
    ("last_seq", "seq", "trimmed", "sent", "resync"),
    [
        (0, 0, 0, 0, None),  # a new phone, nothing sent yet
        (5, 9, 3, 5, None),  # within the outbox: frames 6..9 are replayed
        (9, 9, 3, 9, None),  # saw everything
        (3, 9, 3, 3, None),  # exactly at the trimmed edge: 4..9 are all there
        (2, 9, 3, 9, "outbox_trimmed"),  # 3 was dropped unacknowledged: resync
        (12, 9, 3, 9, "hub_behind"),  # the phone saw more than Redis holds: resync
    ],
)
def test_resume_replays_exactly_or_says_why_it_cannot(
    last_seq: int, seq: int, trimmed: int, sent: int, resync: str | None
) -> None:
    plan = plan_resume(last_seq, seq, trimmed)
    assert (plan.sent_seq, plan.resync) == (sent, resync)


def test_sequencer_sends_in_order_once_and_fills_gaps() -> None:
    sequencer = Sequencer(sent=4)
    assert sequencer.step(3) is Step.SKIP
    assert sequencer.step(4) is Step.SKIP
    assert sequencer.step(5) is Step.SEND
    assert sequencer.step(7) is Step.FILL  # 6 came another way, or not yet
    assert sequencer.sent_up_to(5) and sequencer.sent == 5
    assert not sequencer.sent_up_to(5)  # never twice
    assert sequencer.sent_up_to(7) and sequencer.step(6) is Step.SKIP


def test_geofence_arrives_once_within_the_radius_only() -> None:
    fence = Geofence(radius_m=50)
    assert not fence
    fence.track("a1", "r1", 34.6200, 112.4500)
    fence.track("a2", "r2", 34.7000, 112.5000)
    assert fence
    assert fence.arrived(34.6210, 112.4500) == []  # about 111 m north: not there yet
    assert fence.arrived(34.6203, 112.4501) == ["a1"]  # about 35 m: arrived
    assert fence.arrived(34.6200, 112.4500) == []  # once only
    fence.forget("a2")
    assert not fence


def test_pending_ack_keeps_the_highest_until_taken() -> None:
    ack = PendingAck()
    ack.note(3)
    ack.note(7)
    ack.note(5)
    assert ack.take() == 7
    assert ack.take() == 0


@pytest.mark.parametrize(
    "data",
    [
        msgspec.msgpack.encode([1, 2, 3]),  # not a map
        msgspec.msgpack.encode({1: 2, "t": "pos"}),  # a map, but with a number for a key
    ],
)
def test_a_frame_that_is_no_map_of_text_keys_is_malformed_saying_so(data: bytes) -> None:
    with pytest.raises(msgspec.ValidationError) as failed:
        protocol.decode_phone(data)
    error = decode_error(data, failed.value)
    assert (error.code, error.message) == ("malformed", "a frame must be a map with text keys")


# ---- when a step can have been taken -----------------------------------------------------

BOUNDS = {"delay_max_s": 30.0, "skew_s": 300.0, "offline_after_s": 45.0}


def test_a_step_taken_online_reaches_the_hub_at_once() -> None:
    now = 10_000.0
    window = StepWindow(connected_at=now - 600)
    window.saw_position(now - 5 - 120.0, now - 5)  # the phone's clock is 2 minutes slow
    assert window.offset == pytest.approx(120.0)
    assert check_step_time(now - 120 - 10, now, window, **BOUNDS) is None  # 10 s ago
    late = check_step_time(now - 120 - 60, now, window, **BOUNDS)  # a minute ago, online
    assert late is not None and "connected" in late
    # Without a position, the phone's clock may be off by the whole skew.
    unknown = StepWindow(connected_at=now - 600)
    assert check_step_time(now - 300, now, unknown, **BOUNDS) is None
    assert check_step_time(now - 400, now, unknown, **BOUNDS) is not None


def test_a_step_taken_offline_is_no_older_than_the_last_connection() -> None:
    now = 10_000.0
    window = StepWindow(connected_at=now - 5, offline_since=now - 3600)  # an hour in a tunnel
    window.saw_position(now - 1, now - 1)
    assert check_step_time(now - 1800, now, window, **BOUNDS) is None  # in the tunnel
    assert check_step_time(now - 3600 - 40, now, window, **BOUNDS) is None  # a dying socket
    before = check_step_time(now - 3600 - 120, now, window, **BOUNDS)  # connected then
    assert before is not None and "connection ended" in before
    # Still online elsewhere at the hello, or never seen offline: no bound can be set.
    unknown = StepWindow(connected_at=now - 5)
    unknown.saw_position(now - 1, now - 1)
    assert check_step_time(now - 86_400, now, unknown, **BOUNDS) is None
