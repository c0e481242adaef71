"""After a slot is written: the one place that decides how the machine gets into it (I/O).

Strategies: `reboot` reboots now; `off` leaves it to the operator (and says so in
/run/reboot-required, as Flatcar does). The cluster's reboot coordinator (an etcd semaphore,
drain before, undrain after) is meant to become the `etcd-lock` strategy here: one more entry
in STRATEGIES, nothing else in the agent changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flotilla.process import run

REBOOT_REQUIRED = Path("/run/reboot-required")


def reboot_now(reason: str) -> str:
    REBOOT_REQUIRED.write_text(reason + "\n")
    # --no-block: the job is queued and this command returns; systemd stops us with the rest.
    run(["systemctl", "reboot", "--no-block"])
    return "rebooting now"


def leave_it(reason: str) -> str:
    REBOOT_REQUIRED.write_text(reason + "\n")
    return f"reboot strategy off: reboot when it suits ({REBOOT_REQUIRED} says one is due)"


STRATEGIES: dict[str, Callable[[str], str]] = {"reboot": reboot_now, "off": leave_it}


def request_reboot(strategy: str, reason: str) -> str:
    """Hand the reboot to the strategy; returns what it did, for the user."""
    return STRATEGIES[strategy](reason)
