"""When a machine that lost etcd must stop its units, and when it must not.

Pure. The two cases look the same from the machine itself (etcd does not answer), so it asks
its peers, whose addresses it knew from the last machine list, when they last heard from etcd:

* a peer heard from etcd *after* this machine's requests began to fail: etcd is up and only
  this machine is cut off. Its lease will expire and the engine will place its units elsewhere,
  so it stops its non-global units first;
* no more than half of the known peers answer: this machine is cut off, alone or with a
  minority (a partition); the silent peers may be with etcd, so: same answer;
* most peers answer but none heard from etcd since this machine's failures began: etcd itself
  is down for everyone. Nothing can be rescheduled, so nothing is stopped, and the cluster carries
  on when etcd returns. (The question is asked again on every tick, so a peer that reaches etcd
  a moment later still turns the answer around.)
* no peers known (a one-machine cluster): nobody could take over; nothing is stopped.
* the third case lasts at most LONG_OUTAGE_SECONDS. Past that, the machine stops its units all
  the same: the engine forgets a vanished machine after membership.MEMBERSHIP_WINDOW, and a
  group of machines that kept its units while the rest of the cluster reached etcd (the
  engine withheld rescheduling meanwhile, membership.withheld_reason) must have stopped them
  before it is forgotten and its units move.

Comparing with the moment failures began, not with a fixed age, matters: when etcd dies, peers
whose last keepalive happened to land just before it did must not count as "reaching etcd".

Timing: the last keepalive that etcd acknowledged was *sent* at `last_contact`, and etcd resets
the lease TTL when it *receives* it, so the lease cannot expire before last_contact + ttl and
no other machine can start a unit of ours before then. Suspicion starts after SUSPECT_FRACTION
of the TTL without contact; healthy peers keep alive every ttl/5, so within that time of our
first failure they have proven etcd is up; stopping must end by STOP_DEADLINE_FRACTION of the
TTL, leaving the rest as a margin for clock rates and systemd.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

SUSPECT_FRACTION = 0.4  # two missed keepalives at one every ttl/5
PROBE_FRACTION = 0.1
STOP_DEADLINE_FRACTION = 0.85
LONG_OUTAGE_SECONDS = 600.0  # well inside membership.MEMBERSHIP_WINDOW (900 s)
# A first probe asks this many peers, chosen at random. Its fence verdicts stand: one healthy
# peer proves etcd is up, and a sample where half stay silent fences (stopping is the safe
# side). Only "etcd is down for everyone", which keeps the units running, must hold for every
# peer: a sample can miss the side of a split that reaches etcd, so that one is asked of all.
PROBE_SAMPLE = 16
PEERS_PER_REFRESH_SECOND = 20  # every machine reads all N records: N^2 / period per second


@dataclass(frozen=True)
class PeerReport:
    machine: str
    last_contact: float  # when that peer last heard from etcd, on this machine's monotonic clock


@dataclass(frozen=True)
class Verdict:
    fence: bool
    reason: str


def etcd_silence_suspicious(now: float, last_contact: float, ttl: float) -> bool:
    return now - last_contact >= SUSPECT_FRACTION * ttl


def decide(
    now: float,
    last_contact: float,
    failing_since: float,
    ttl: float,
    known_peers: int,
    reports: list[PeerReport],
) -> Verdict:
    """Whether to stop this machine's non-global units now.

    `failing_since` is when this machine first saw etcd fail since `last_contact`.
    """
    if not etcd_silence_suspicious(now, last_contact, ttl):
        return Verdict(False, "etcd answered recently")
    healthy = [r.machine for r in reports if r.last_contact > failing_since]
    if healthy:
        return Verdict(True, f"peers {', '.join(sorted(healthy))} still reach etcd")
    if not known_peers:
        return Verdict(False, "no peers could take over")
    if 2 * len(reports) <= known_peers:
        # The silent ones may be on etcd's side of a split, about to run our units.
        return Verdict(
            True, f"only {len(reports)} of {known_peers} peers answer: this machine is cut off"
        )
    # A fleetd started during the outage never had contact: its clock starts at its first
    # failure (a restart gives the machine that much longer; the engine's window allows it).
    silent_since = last_contact if math.isfinite(last_contact) else failing_since
    if now - silent_since >= LONG_OUTAGE_SECONDS:
        return Verdict(
            True,
            f"etcd unreachable for {now - silent_since:.0f}s (limit {LONG_OUTAGE_SECONDS:.0f}s):"
            " the cluster will stop counting this machine",
        )
    return Verdict(False, "no peer reaches etcd either: etcd is down, nothing can move")


def probe_sample(peers: Sequence[str], chooser: random.Random | None = None) -> list[str]:
    """The peers a first probe asks: all of them in a small cluster, else PROBE_SAMPLE."""
    if len(peers) <= PROBE_SAMPLE:
        return list(peers)
    return sorted((chooser or random).sample(list(peers), PROBE_SAMPLE))


def needs_every_peer(verdict: Verdict, asked: int, known_peers: int) -> bool:
    """Whether a verdict reached on a sample must be checked with every peer."""
    return not verdict.fence and asked < known_peers


def peer_refresh_seconds(known_peers: int, floor: float) -> float:
    """How stale the peer list may get. Every machine re-reads the whole list after it
    changed, so while machines come and go the cluster reads N^2 records per period: the
    period grows with N (5 s up to 100 machines, 15 s at 300, 50 s at 1,000). A list a
    little stale changes no verdict: a new machine has no units yet, and a first probe asks
    a sample anyway."""
    return max(floor, known_peers / PEERS_PER_REFRESH_SECOND)


def stop_deadline(last_contact: float, ttl: float) -> float:
    """Monotonic time by which fenced units must be stopped."""
    return last_contact + STOP_DEADLINE_FRACTION * ttl


def probe_timeout(ttl: float) -> float:
    return min(1.0, PROBE_FRACTION * ttl)


def keepalive_interval(ttl: float) -> float:
    return ttl / 5
