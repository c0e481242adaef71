"""fleetd's side of the lease deadline (deadline.py): renewed on every keepalive etcd
acknowledged, extended by the fence guard while nobody could take our units over, removed when
fleetd leaves the cluster. The backstop (backstop.py) enforces it when fleetd goes quiet.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from . import deadline as dl
from .agent import Agent
from .heart import Heart

log = logging.getLogger(__name__)


class DeadlineKeeper:
    def __init__(
        self,
        path: Path,
        heart: Heart,
        agent: Agent,
        units_directory: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.heart = heart
        self.agent = agent
        self.units_directory = str(units_directory)  # the backstop stops the units it holds
        self.clock = clock
        self.current = read_deadline(path)  # a previous fleetd's, until we write ours
        self.retired = False
        self.write_failed = False

    async def renew(self) -> None:
        """After a keepalive etcd acknowledged (the heart's on_contact)."""
        if self.retired:
            return
        now = self.clock()
        self.replace(dl.renewed(self.heart.last_contact, self.heart.ttl, now, self.units_directory))

    def extend(self, asked_at: float, why: str) -> None:
        """The guard asked the peers at `asked_at` and found that nobody can take our units
        over: keep them running a little longer (the guard decides again on its next tick)."""
        if self.retired:
            return
        now, ttl = self.clock(), self.heart.ttl
        self.replace(dl.extended(self.current, asked_at, ttl, now, self.units_directory, why))

    def replace(self, deadline: dl.Deadline) -> None:
        if dl.passed(self.current, deadline.renewed_at):
            self.start_again()
        try:
            write_deadline(self.path, deadline)
        except OSError as error:
            # The backstop keeps the last deadline written: the safe side.
            if not self.write_failed:
                log.warning("cannot write the lease deadline to %s: %s", self.path, error)
            self.write_failed = True
            return
        self.current = deadline
        if self.write_failed:
            log.info("writing the lease deadline to %s again", self.path)
        self.write_failed = False

    def start_again(self) -> None:
        """The deadline passed, so the backstop may have stopped our units: the agent starts
        again those still assigned here (it does not restart a unit it started that has
        stopped, taking that for the unit's own doing)."""
        forgotten = self.agent.restart_fenced()
        if forgotten:
            log.info(
                "the lease deadline passed; the backstop may have stopped %s: starting them again "
                "where they are still assigned here",
                " ".join(forgotten),
            )

    def retire(self) -> None:
        """fleetd left the cluster: no deadline to keep (the backstop does nothing)."""
        self.retired = True
        discard_deadline(self.path)


def read_deadline(path: Path) -> dl.Deadline | None:
    try:
        return dl.decode(path.read_text())
    except (OSError, ValueError):
        return None


def write_deadline(path: Path, deadline: dl.Deadline) -> None:
    """Atomically: the backstop never reads half a file."""
    partial = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text(dl.encode(deadline))
    os.replace(partial, path)


def discard_deadline(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        log.warning("cannot remove the lease deadline %s: %s", path, error)
