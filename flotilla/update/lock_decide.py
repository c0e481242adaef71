"""The reboot lock's keys, records and decisions (pure): a semaphore in etcd of N holders.

    <prefix>semaphore           {"max": N}                 set-max (the value); every taker
                                                           rewrites it unchanged (see below)
    <prefix>holders/<machine>   {"machine", "since"}       that machine's coordinator, under its
                                                           own lock lease (or `lock`: no lease)

The default prefix is /flotilla/reboot-lock/, beside fleet's keys, not under them: the lock is
the update agent's, and fleet knows nothing of it.

Why taking a slot is race-free: the count of holders and the max are read in one revision, and
the taker's transaction compares the semaphore key's mod revision with the one it read, puts the
same value back (so the key's revision moves) and creates its holder key (compared absent).
Two takers that read the same revision cannot both succeed: the second's compare fails, and it
reads again. A holder that disappears meanwhile (its lease ran out, an unlock) only lowers the
count, so a stale read errs on the side of "full". set-max writes the same key, so a max lowered
under a taker also fails its compare.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

DEFAULT_PREFIX = "/flotilla/reboot-lock/"
DEFAULT_MAX = 1
RENEWALS_PER_TTL = 3  # a holder's lease survives two missed renewals (a failover, a slow etcd)


class LockRefused(ValueError):
    """The lock cannot do what was asked; nothing was changed. The message says why."""


@dataclass(frozen=True)
class LockKeys:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise ValueError(f"a key prefix starts and ends with '/', not {self.prefix!r}")

    @property
    def semaphore(self) -> bytes:
        return (self.prefix + "semaphore").encode()

    @property
    def holders(self) -> bytes:
        return (self.prefix + "holders/").encode()

    def holder(self, machine: str) -> bytes:
        return self.holders + machine.encode()

    def machine_of(self, key: bytes) -> str:
        return key[len(self.holders) :].decode()


@dataclass(frozen=True)
class Holder:
    machine: str
    since: str  # when it took the slot: ISO 8601, UTC
    lease: int  # the etcd lease the holder key lives under; 0: held until `unlock`
    revision: int = 0  # the holder key's mod revision (for an unlock that compares it)


@dataclass(frozen=True)
class Semaphore:
    max: int
    holders: tuple[Holder, ...]
    revision: int  # the semaphore key's mod revision; 0 while it does not exist

    def holder(self, machine: str) -> Holder | None:
        return next((h for h in self.holders if h.machine == machine), None)


def encode_semaphore(maximum: int) -> bytes:
    return json.dumps({"max": maximum}).encode()


def decode_max(raw: bytes | None) -> int:
    """The stored max; a missing or unreadable value counts as the default (1): the smallest,
    so a damaged key never lets more machines reboot at once than intended."""
    if raw is None:
        return DEFAULT_MAX
    try:
        value = json.loads(raw)["max"]
    except (ValueError, KeyError, TypeError):
        return DEFAULT_MAX
    return value if isinstance(value, int) and value >= 1 else DEFAULT_MAX


def encode_holder(machine: str, since: str) -> bytes:
    return json.dumps({"machine": machine, "since": since}).encode()


def decode_holder(machine: str, raw: bytes, lease: int, revision: int) -> Holder:
    try:
        since = str(json.loads(raw).get("since", ""))
    except (ValueError, AttributeError):
        since = ""  # still a holder: the key's presence is what takes the slot
    return Holder(machine, since, lease, revision)


@dataclass(frozen=True)
class AcquireDecision:
    action: Literal["take", "already held", "full"]
    holder: Holder | None = None  # "already held": the existing hold
    reason: str = ""  # "full": who holds it


def decide_acquire(semaphore: Semaphore, machine: str) -> AcquireDecision:
    """May `machine` take a slot of `semaphore` as read?"""
    existing = semaphore.holder(machine)
    if existing is not None:
        return AcquireDecision("already held", existing)
    if len(semaphore.holders) >= semaphore.max:
        return AcquireDecision("full", reason=full_reason(semaphore))
    return AcquireDecision("take")


def full_reason(semaphore: Semaphore) -> str:
    holders = ", ".join(describe_holder(h) for h in semaphore.holders)
    return (
        f"the reboot lock is full ({len(semaphore.holders)} held, max {semaphore.max}):"
        f" held by {holders}"
    )


def describe_holder(holder: Holder) -> str:
    tied = f"lease {holder.lease:x}" if holder.lease else "no lease: until unlocked"
    return f"{holder.machine} (since {holder.since or 'an unknown time'}, {tied})"


def holder_to_release(semaphore: Semaphore, machine: str) -> Holder:
    """The hold `unlock` would end; LockRefused when `machine` holds none."""
    holder = semaphore.holder(machine)
    if holder is None:
        held = ", ".join(h.machine for h in semaphore.holders) or "nobody"
        raise LockRefused(f"machine {machine} holds no reboot lock (held by: {held})")
    return holder


def check_max(maximum: int) -> int:
    if maximum < 1:
        raise LockRefused(f"the max must be at least 1, not {maximum}")
    return maximum


def describe_lease(holder: Holder, left: tuple[int, int] | None) -> str:
    """What an operator needs to judge a hold: is its machine still renewing it? `left`:
    (seconds until it ends, seconds it was granted), None when it is gone. A running
    coordinator renews every third of the granted TTL; a lease unrenewed for longer belongs to
    a machine that is rebooting, or dead."""
    if not holder.lease:
        return "no lease: held until `flotilla-lockctl unlock`"
    if left is None:
        return f"lease {holder.lease:x} ended: the slot is free once etcd removes the key"
    remaining, granted = left
    silent = granted - remaining
    text = f"lease {holder.lease:x}: ends in {remaining} s unless renewed"
    if silent > granted / RENEWALS_PER_TTL + 5:
        text += (
            f"; not renewed for {silent} s (its machine is rebooting or down: etcd frees the"
            f" slot then, or `flotilla-lockctl unlock {holder.machine}` now)"
        )
    return text
