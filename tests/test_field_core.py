"""The squad session's decisions without a socket or Redis: resume, sequencing, the arrival
geofence, pending acknowledgements."""

from __future__ import annotations

import msgspec
import pytest

from dispatch_field import protocol
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
