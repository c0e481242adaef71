"""The lease deadline: by when a machine whose fleetd went quiet must have stopped its units.

Pure. The fence guard (guard.py) stops units only while fleetd's event loop runs. A fleetd that
is frozen (SIGSTOP), starved of CPU, wedged, crash-looping or given up on by systemd runs no
guard, yet its lease expires all the same and the engine starts its units elsewhere. So fleetd
keeps pushing a deadline forward in /run/fleet/deadline, and a process of its own, the backstop
(backstop.py, fleetd-backstop.service), stops the agent's units when the deadline passes. Which
units: those whose files are in the agent's units directory, less global ones (they run nowhere
else). The agent writes a unit's file before it starts the unit, so the backstop never misses
one that started after the last renewal.

Times are on CLOCK_MONOTONIC (`time.monotonic()`), one clock for every process of a machine,
unmoved by changes of the wall clock. With TTL = agent_ttl:

* On every keepalive etcd acknowledged, the deadline is renewed from `last_contact` (when that
  keepalive was *sent*): stop at last_contact + 0.85·TTL (fencing's stop deadline), SIGKILL what
  still runs at last_contact + 0.95·TTL. etcd restarts the lease's TTL when it *receives* the
  keepalive, so the lease cannot expire, and no other machine can start our units, before
  last_contact + TTL. A healthy fleetd renews every TTL/5, so the deadline stays at least
  0.65·TTL ahead of it.
* While the guard finds that nobody could take our units over (etcd down for everyone, or no
  peers in a peer list it has read from etcd), it pushes the deadline to p + 0.4·TTL, p being
  when it asked the peers, and asks again on its next tick (every TTL/10). Why that is early
  enough: peers keep alive every TTL/5 and reconnect within 0.5 s, so etcd came back at the
  earliest at p - (0.2·TTL + 0.5 s) if no peer had heard from it at p, and (etcd renews every
  lease when it elects a leader) our lease cannot expire before that plus TTL: p + 0.8·TTL -
  0.5 s, after the kill at p + 0.5·TTL whenever TTL > 1.7 s.
* A deadline never moves backwards: an extension keeps a later renewal's deadline.

The backstop acts once per deadline: it stops the units that still run when `stop_at` passes,
SIGKILLs those still running at `kill_at`, and then waits for a new deadline.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum

from .fencing import STOP_DEADLINE_FRACTION
from .unitfile import parse_unit_file, requirements
from .unitname import parse_unit_name

KILL_FRACTION = 0.95  # of the TTL after the last contact: SIGKILL what has not stopped
EXTEND_FRACTION = 0.4  # how far a "nobody can take over" verdict pushes the deadline
# systemd's watchdog restarts a wedged fleetd this far into the TTL: with RestartSec=1s and
# about a second to start, the new fleetd renews the lease before the backstop stops anything
# (at the default TTL; a slower start leaves it to the backstop).
WATCHDOG_FRACTION = 0.4


@dataclass(frozen=True)
class Deadline:
    """What fleetd last promised: stop the units of `units_directory` at `stop_at` unless it
    writes a new deadline."""

    stop_at: float
    kill_at: float
    renewed_at: float  # when fleetd wrote it (monotonic)
    reason: str  # why fleetd could promise it
    units_directory: str  # where fleetd's agent writes the files of the units it loads


class Action(StrEnum):
    STOP = "stop"
    KILL = "kill"


@dataclass(frozen=True)
class Progress:
    """What the backstop has done, by the `stop_at` of the deadline it did it for."""

    stopped: float | None = None
    killed: float | None = None


def renewed(last_contact: float, ttl: float, now: float, units_directory: str) -> Deadline:
    """The deadline after a keepalive sent at `last_contact` was acknowledged."""
    return Deadline(
        last_contact + STOP_DEADLINE_FRACTION * ttl,
        last_contact + KILL_FRACTION * ttl,
        now,
        "etcd acknowledged a keepalive",
        units_directory,
    )


def extended(
    current: Deadline | None,
    asked_at: float,
    ttl: float,
    now: float,
    units_directory: str,
    why: str,
) -> Deadline:
    """The deadline after the guard found, asking peers at `asked_at`, that nobody can take
    our units over; never earlier than `current`."""
    stop_at = asked_at + EXTEND_FRACTION * ttl
    kill_at = stop_at + (KILL_FRACTION - STOP_DEADLINE_FRACTION) * ttl
    if current is not None and current.stop_at >= stop_at:
        return Deadline(current.stop_at, current.kill_at, now, current.reason, units_directory)
    return Deadline(stop_at, kill_at, now, why, units_directory)


def is_global_unit(name: str, text: str) -> bool:
    """Whether a unit file says Global=true; one that does not parse is not (stop it)."""
    try:
        return requirements(parse_unit_file(text, name), parse_unit_name(name)).is_global
    except ValueError:
        return False


def passed(deadline: Deadline | None, now: float) -> bool:
    """Whether the backstop may have stopped `deadline`'s units by `now`."""
    return deadline is not None and now >= deadline.stop_at


def due(now: float, deadline: Deadline | None, progress: Progress) -> Action | None:
    """What the backstop must do now, if anything (no deadline: fleetd does not fence)."""
    if deadline is None:
        return None
    if now >= deadline.stop_at and progress.stopped != deadline.stop_at:
        return Action.STOP
    if now >= deadline.kill_at and progress.killed != deadline.stop_at:
        return Action.KILL
    return None


def done(progress: Progress, deadline: Deadline, action: Action) -> Progress:
    if action is Action.STOP:
        return Progress(deadline.stop_at, progress.killed)
    return Progress(progress.stopped, deadline.stop_at)


def next_check(now: float, deadline: Deadline | None, progress: Progress, poll: float) -> float:
    """Seconds to sleep: until the next action is due, at most `poll` (to see new deadlines)."""
    if deadline is None:
        return poll
    upcoming = [
        deadline.stop_at if progress.stopped != deadline.stop_at else math.inf,
        deadline.kill_at if progress.killed != deadline.stop_at else math.inf,
    ]
    return max(0.0, min(poll, min(upcoming) - now))


def encode(deadline: Deadline) -> str:
    fields = {
        "stop_at": deadline.stop_at,
        "kill_at": deadline.kill_at,
        "renewed_at": deadline.renewed_at,
        "reason": deadline.reason,
        "units_directory": deadline.units_directory,
    }
    return json.dumps(fields) + "\n"


def decode(text: str) -> Deadline:
    """The deadline in a file's text; ValueError if it is not one."""
    try:
        fields = json.loads(text)
        deadline = Deadline(
            float(fields["stop_at"]),
            float(fields["kill_at"]),
            float(fields["renewed_at"]),
            str(fields["reason"]),
            str(fields["units_directory"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"not a deadline: {error}") from error
    if not all(map(math.isfinite, (deadline.stop_at, deadline.kill_at, deadline.renewed_at))):
        raise ValueError("not a deadline: a time is not finite")
    return deadline


def watchdog_seconds(ttl: float, configured: float) -> float:
    """systemd's watchdog for fleetd: a wedged event loop is restarted early enough in the TTL
    for the restarted fleetd to renew the lease in time; never later than the unit file says."""
    return min(configured, WATCHDOG_FRACTION * ttl)
