"""fleetd-backstop: stop this machine's fleet units when fleetd stops renewing its deadline.

A process of its own, in a unit of its own (fleetd-backstop.service), so that it keeps running
when fleetd is frozen, starved of CPU, wedged, crash-looping or given up on by systemd; the
timing is in deadline.py. While /run/fleet/deadline is absent (fencing is off, or fleetd left
the cluster) it does nothing. The units it stops are those whose files are in the agent's
units directory, read when the deadline passes, less global ones. It asks systemd through
systemctl, which as root speaks to PID 1 on systemd's private socket: no bus daemon, no
connection to lose, and nothing to import but the standard library and fleetd's pure modules,
so it starts fast and stays small.

fleetd-backstop [--deadline-file /run/fleet/deadline]
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from flotilla import __version__
from flotilla.files import PARTIAL_SUFFIX
from flotilla.process import CommandError, run

from . import deadline as dl
from .machine_plan import RUNNING_STATES

log = logging.getLogger("fleetd-backstop")
DEADLINE_FILE = Path("/run/fleet/deadline")
POLL_SECONDS = 0.2  # how soon a new deadline is seen; actions are timed to the deadline itself
SYSTEMCTL_TIMEOUT = 5.0  # a PID 1 that does not answer is asked again on the next check


class Backstop:
    def __init__(
        self,
        path: Path,
        poll: float = POLL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.poll = poll
        self.clock = clock
        self.progress = dl.Progress()
        self.complaint = ""  # the last problem with the file, logged once

    def run(self) -> None:
        log.info("watching %s: fleetd's lease deadline", self.path)
        while True:
            time.sleep(self.step())

    def step(self) -> float:
        """Act if a deadline passed; the seconds until the next check."""
        deadline = self.read()
        action = dl.due(self.clock(), deadline, self.progress)
        if deadline is not None and action is not None:
            try:
                self.act(action, deadline)
            except (CommandError, subprocess.TimeoutExpired) as error:
                log.error("%s failed: %s; trying again", action, error)
                return self.poll
            self.progress = dl.done(self.progress, deadline, action)
        return dl.next_check(self.clock(), deadline, self.progress, self.poll)

    def read(self) -> dl.Deadline | None:
        try:
            deadline = dl.decode(self.path.read_text())
        except FileNotFoundError:
            self.complain("")
            return None
        except (OSError, ValueError) as error:
            self.complain(f"ignoring {self.path}: {error}")
            return None
        self.complain("")
        return deadline

    def complain(self, complaint: str) -> None:
        if complaint and complaint != self.complaint:
            log.error("%s", complaint)
        self.complaint = complaint

    def act(self, action: dl.Action, deadline: dl.Deadline) -> None:
        running = running_units(units_to_fence(Path(deadline.units_directory)))
        if action is dl.Action.STOP:
            log.warning(
                "fencing: fleetd has not renewed its lease deadline for %.1fs (the last renewal: "
                "%s); stopping %d units before the lease can expire: %s",
                self.clock() - deadline.renewed_at,
                deadline.reason,
                len(running),
                " ".join(running) or "(none running)",
            )
            if running:
                for_each_unit(["stop", "--no-block"], running)
        elif running:
            log.warning("fencing: killing units that did not stop in time: %s", " ".join(running))
            for_each_unit(["kill", "--signal=SIGKILL"], running)


def units_to_fence(directory: Path) -> list[str]:
    """The units whose files the agent wrote, less global ones: a unit's file is there before
    the agent starts it. Partial files (being written) are not units."""
    try:
        paths = sorted(directory.iterdir())
    except OSError:
        return []
    units = []
    for path in paths:
        if path.name.endswith(PARTIAL_SUFFIX) or not path.is_file():
            continue
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            text = ""  # unreadable: stopping it is the safe side
        if not dl.is_global_unit(path.name, text):
            units.append(path.name)
    return units


def running_units(units: list[str]) -> list[str]:
    """Those of `units` that systemd runs, or is starting or stopping."""
    if not units:
        return []
    states = systemctl("is-active", "--", *units).stdout.split()
    if len(states) != len(units):  # a name systemctl refused: ask about each unit alone
        states = [systemctl("is-active", "--", unit).stdout.strip() for unit in units]
    return [unit for unit, state in zip(units, states, strict=True) if state in RUNNING_STATES]


def for_each_unit(args: list[str], units: list[str]) -> None:
    """One systemctl call for all units; one per unit if that failed (a name systemctl
    refuses, or a unit gone, must not keep the others running)."""
    if systemctl(*args, "--", *units).returncode != 0 and len(units) > 1:
        for unit in units:
            systemctl(*args, "--", unit)


def systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    """A failure about a unit (not loaded, say) is logged, not raised: trying again would not
    help. A systemctl that does not answer in time raises TimeoutExpired: that is retried."""
    result = run(["systemctl", *args], check=False, timeout=SYSTEMCTL_TIMEOUT)
    if args[0] != "is-active" and result.stderr.strip():
        log.warning("systemctl %s: %s", " ".join(args), result.stderr.strip())
    return result


def setup_logging() -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if "JOURNAL_STREAM" in os.environ:
        from flotilla.systemd_service import JournalHandler

        root.addHandler(JournalHandler(SYSLOG_IDENTIFIER="fleetd-backstop"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fleetd-backstop",
        description="stop this machine's fleet units when fleetd stops renewing its lease deadline",
    )
    parser.add_argument(
        "--deadline-file", type=Path, default=DEADLINE_FILE, help=f"[default: {DEADLINE_FILE}]"
    )
    parser.add_argument("--version", action="version", version=f"fleetd-backstop {__version__}")
    args = parser.parse_args(argv)
    setup_logging()
    Backstop(args.deadline_file).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
