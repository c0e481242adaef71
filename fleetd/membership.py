"""Which machines the cluster recently had: the yardstick for "most machines vanished".

Pure. The engine remembers every machine it sees under member/<id> (no lease, so the record
outlives the machine's lease) and forgets one only after it has been gone for MEMBERSHIP_WINDOW
seconds of this leader's monotonic clock. A new leader starts every clock afresh: it can only
forget later than its predecessor would have, never earlier, which is the safe direction.
A machine that leaves gracefully deletes its own record at once.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field

# Longer than fencing.LONG_OUTAGE_SECONDS plus a lease: a machine that keeps its units because
# etcd looks down for everyone has stopped them before the engine stops counting it.
MEMBERSHIP_WINDOW = 900.0


@dataclass(frozen=True)
class MembershipChange:
    members: frozenset[str]  # the recent membership, live machines included
    remember: frozenset[str]  # live machines etcd has no record of yet
    forget: frozenset[str]  # records of machines gone for longer than the window


KEPT = "kept on vanished machine"  # how the reason of a unit kept in place begins


@dataclass
class Membership:
    window: float = MEMBERSHIP_WINDOW
    vanished_at: dict[str, float] = field(default_factory=dict)
    released_at: float | None = None  # when this leader saw withholding end
    withholding_seen: bool = False

    def withholding(
        self, live: int, members: int, kept: bool, now: float, grace: float
    ) -> str | None:
        """Why units of vanished machines stay put now, or None.

        When enough machines reach etcd again, the vanished ones that kept their units (etcd
        looked down to them) learn from their peers that it is up and fence themselves, which
        takes them up to a TTL: `grace`, counted from the first pass that sees the end. A new
        leader that finds units `kept` by its predecessor grants the same grace.
        """
        reason = withheld_reason(live, members)
        if reason is not None:
            self.released_at = None
            self.withholding_seen = True
            return reason
        if self.released_at is None and (self.withholding_seen or kept):
            self.released_at = now
        self.withholding_seen = False
        if self.released_at is not None and now - self.released_at < grace:
            return (
                f"most machines reach etcd again; waiting {grace:.0f}s for the others"
                " to stop their units"
            )
        return None

    def update(self, recorded: Set[str], live: Set[str], now: float) -> MembershipChange:
        """The membership after seeing `live` machines at `now`, given etcd's `recorded` set."""
        for machine in live:
            self.vanished_at.pop(machine, None)
        gone = set(recorded) - set(live)
        for machine in gone:
            self.vanished_at.setdefault(machine, now)
        for machine in set(self.vanished_at) - gone:
            del self.vanished_at[machine]  # forgotten, or left gracefully
        forget = frozenset(m for m in gone if now - self.vanished_at[m] >= self.window)
        return MembershipChange(
            members=frozenset((set(recorded) | set(live)) - forget),
            remember=frozenset(set(live) - set(recorded)),
            forget=forget,
        )


def withheld_reason(live: int, members: int) -> str | None:
    """Why the units of vanished machines must stay where they are, or None if they may move.

    The machines that vanished may be cut off from etcd together. Such a group keeps its units
    (fencing.decide: "etcd is down") only when more than half of each one's peers answer it;
    that needs at least half of the membership on its side. So units move only while at
    least half of the recent membership still reaches etcd: one stale peer list's worth of
    margin beyond the exact complement of the fencing rule.
    """
    if 2 * live >= members:
        return None
    return (
        f"only {live} of {members} recently known machines reach etcd;"
        f" the others may still run their units (rescheduling needs {(members + 1) // 2})"
    )
