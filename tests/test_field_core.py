"""The squad session's decisions without a socket or Redis: resume, sequencing, the arrival
geofence, pending acknowledgements."""

from __future__ import annotations

import msgspec
import pytest

from dispatch_field import protocol
from server.actions import StepWindow, step_time
from server.field.core import Geofence, PendingAck, Sequencer, Step, decode_error, plan_resume


@pytest.mark.parametrize(
    ("last_seq", "seq", "trimmed", "acked", "sent", "resync"),
    [
        (0, 0, 0, 0, 0, None),  # a new squad's phone, nothing sent yet
        (5, 9, 3, 3, 5, None),  # within the outbox: frames 6..9 are replayed
        (9, 9, 3, 9, 9, None),  # saw everything
        (3, 9, 3, 3, 3, None),  # exactly at the trimmed edge: 4..9 are all there
        (5, 9, 0, 5, 5, None),  # acknowledged all it saw: 6..9 are replayed
        (2, 9, 3, 0, 9, "outbox_trimmed"),  # 3 was dropped unacknowledged: resync
        (12, 9, 3, 9, 9, "hub_behind"),  # the phone saw more than Redis holds: resync
        # A new phone for a squad whose lost one acknowledged its offers (gone from the
        # outbox): it would be told nothing of the work it holds. Resync.
        (0, 7, 0, 7, 7, "phone_behind"),
        (4, 9, 0, 7, 9, "phone_behind"),
    ],
)
def test_resume_replays_exactly_or_says_why_it_cannot(
    last_seq: int, seq: int, trimmed: int, acked: int, sent: int, resync: str | None
) -> None:
    plan = plan_resume(last_seq, seq, trimmed, acked)
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


def test_a_step_taken_online_counts_on_the_hubs_clock_if_at_most_the_delay_old() -> None:
    now = 10_000.0
    window = StepWindow(connected_at=now - 600)
    window.saw_position(now - 5 - 120.0, now - 5)  # the phone's clock is 2 minutes slow
    assert window.offset == pytest.approx(120.0)
    ten_s_ago = step_time(now - 120 - 10, now, window, **BOUNDS)
    assert ten_s_ago == pytest.approx(now - 10)  # on the hub's clock
    # A minute ago, connected all along: it would have been sent then. It counts now.
    assert step_time(now - 120 - 60, now, window, **BOUNDS) == now
    # Without a position the phone's clock is taken as the hub's, with the same bound.
    unknown = StepWindow(connected_at=now - 600)
    assert step_time(now - 20, now, unknown, **BOUNDS) == pytest.approx(now - 20)
    assert step_time(now - 300, now, unknown, **BOUNDS) == now


def test_no_clock_a_phone_claims_in_its_positions_backdates_a_step() -> None:
    """An attacker's trial: positions dated an hour back made the hub read the phone's clock
    as an hour slow, and an arrival dated to just after the acceptance, 195 s before, passed
    as taken online a moment ago, and was recorded at its (raw) date."""
    now = 10_000.0
    accepted = now - 195
    for claimed in (-3600.0, 3600.0):  # an hour slow, an hour fast
        window = StepWindow(connected_at=now - 600)
        window.saw_position(now - 3 + claimed, now - 3)
        at = step_time(accepted + 2, now, window, **BOUNDS)
        assert at >= now - BOUNDS["delay_max_s"] - 2, claimed  # never the date it claimed


def test_a_step_held_offline_counts_no_earlier_than_the_last_connection() -> None:
    now = 10_000.0
    window = StepWindow(connected_at=now - 5, offline_since=now - 3600)  # an hour in a tunnel
    window.saw_position(now - 1, now - 1)
    assert step_time(now - 1800, now, window, **BOUNDS) == pytest.approx(now - 1800)  # tunnel
    dying = step_time(now - 3600 - 40, now, window, **BOUNDS)  # on a socket not yet noticed
    assert dying == pytest.approx(now - 3600 - 40)
    assert step_time(now - 3600 - 120, now, window, **BOUNDS) == now  # it was connected then
    # Held steps come right after the hello: a minute into the connection, the same date is
    # a step taken online long ago, and counts when it came.
    later = StepWindow(connected_at=now - 60, offline_since=now - 3600)
    assert step_time(now - 1800, now, later, **BOUNDS) == now


def test_a_second_connection_is_no_way_around_the_bound() -> None:
    """An attacker's trial: with its first socket still open, a squad said hello again and
    dated a step 343 s back; the hub knew no end of a previous connection, so set no bound.
    A connection still open at the hello was heard from within ``offline_after_s``."""
    now = 10_000.0
    window = StepWindow(connected_at=now - 1)  # the old one still online: no offline_since
    window.saw_position(now - 1, now - 1)
    assert step_time(now - 343, now, window, **BOUNDS) == now
    assert step_time(now - 30, now, window, **BOUNDS) == pytest.approx(now - 30)
