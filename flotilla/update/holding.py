"""The record of this machine's reboot-lock hold, kept on ROOT across its reboot (I/O).

/var/lib/flotilla-update/reboot-lock.json: the machine, the lease its holder key lives under,
when it took the slot, and whether fleet drained it. Written before the slot is taken (so a
crash in between leaves a record of a lease that holds nothing, which the post-boot step
finds and clears) and removed once the slot is given back. Its presence is what starts the
post-boot step (flotilla-update-after-reboot.service's ConditionPathExists=).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

RECORD = Path("/var/lib/flotilla-update/reboot-lock.json")


@dataclass(frozen=True)
class Hold:
    machine: str
    lease: int
    since: str
    drained: bool = False

    def with_drained(self, drained: bool) -> Hold:
        return replace(self, drained=drained)


class HoldRecord:
    def __init__(self, path: Path = RECORD) -> None:
        self.path = path

    def load(self) -> Hold | None:
        """The stored hold; None without one (or an unreadable one, which holds nothing we
        could act on: its lease, if any, runs out by itself)."""
        try:
            value = json.loads(self.path.read_text())
            return Hold(str(value["machine"]), int(value["lease"]), str(value["since"]),
                        bool(value.get("drained", False)))  # fmt: skip
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, hold: Hold) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        aside = self.path.with_name(self.path.name + ".new")
        with open(aside, "w") as handle:
            json.dump(asdict(hold), handle)
            handle.flush()
            os.fsync(handle.fileno())
        aside.replace(self.path)  # the reboot may come right after: whole or not at all

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
