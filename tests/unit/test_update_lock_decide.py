"""The reboot lock's decisions and records (pure): take a slot, refuse when full, unlock."""

from __future__ import annotations

import pytest

from flotilla.update.lock_decide import (
    DEFAULT_MAX,
    Holder,
    LockKeys,
    LockRefused,
    Semaphore,
    check_max,
    decide_acquire,
    decode_holder,
    decode_max,
    describe_lease,
    encode_holder,
    encode_semaphore,
    holder_to_release,
)

A = Holder("aaaa", "2024-05-16T04:00:00+00:00", 0x1A)
B = Holder("bbbb", "2024-05-16T04:01:00+00:00", 0)


def test_keys() -> None:
    keys = LockKeys()
    assert keys.semaphore == b"/flotilla/reboot-lock/semaphore"
    assert keys.holder("aaaa") == b"/flotilla/reboot-lock/holders/aaaa"
    assert keys.machine_of(keys.holder("aaaa")) == "aaaa"
    with pytest.raises(ValueError):
        LockKeys("no-slash")


def test_free_slot_is_taken() -> None:
    assert decide_acquire(Semaphore(2, (A,), 5), "cccc").action == "take"
    assert decide_acquire(Semaphore(1, (), 0), "cccc").action == "take"


def test_full_says_who_holds_it() -> None:
    decision = decide_acquire(Semaphore(1, (A,), 5), "cccc")
    assert decision.action == "full"
    assert "held by aaaa (since 2024-05-16T04:00:00+00:00, lease 1a)" in decision.reason
    assert "max 1" in decision.reason


def test_a_holder_asking_again_keeps_its_hold_even_over_a_lowered_max() -> None:
    decision = decide_acquire(Semaphore(1, (A, B), 5), "bbbb")
    assert decision.action == "already held" and decision.holder == B


def test_unlock_of_a_machine_holding_nothing_is_refused() -> None:
    assert holder_to_release(Semaphore(1, (A,), 5), "aaaa") == A
    with pytest.raises(LockRefused, match="machine cccc holds no reboot lock \\(held by: aaaa\\)"):
        holder_to_release(Semaphore(1, (A,), 5), "cccc")
    with pytest.raises(LockRefused, match="held by: nobody"):
        holder_to_release(Semaphore(1, (), 0), "cccc")


def test_max_below_one_is_refused() -> None:
    assert check_max(3) == 3
    with pytest.raises(LockRefused, match="at least 1"):
        check_max(0)


def test_records_round_trip_and_damage_errs_small() -> None:
    assert decode_max(encode_semaphore(4)) == 4
    assert decode_max(None) == DEFAULT_MAX
    assert decode_max(b"garbage") == DEFAULT_MAX
    assert decode_max(b'{"max": 0}') == DEFAULT_MAX
    assert decode_holder("aaaa", encode_holder("aaaa", A.since), 0x1A, 7) == Holder(
        "aaaa", A.since, 0x1A, 7
    )
    assert decode_holder("x", b"garbage", 3, 1) == Holder("x", "", 3, 1)


def test_lease_descriptions_tell_a_dead_holder_apart() -> None:
    assert "no lease" in describe_lease(B, None)
    assert "ended" in describe_lease(A, None)
    renewing = describe_lease(A, (550, 600))  # renewed 50 s ago: every 200 s is normal
    assert "ends in 550 s" in renewing and "not renewed" not in renewing
    silent = describe_lease(A, (300, 600))
    assert "not renewed for 300 s" in silent and "flotilla-lockctl unlock aaaa" in silent
