"""Which unit bodies no job or assignment references any more: the engine deletes those.

Pure. unit/<sha1> keys are content-addressed and written before the job that names them (in
another transaction), so a body that looks unreferenced may be one a client is about to use.
A body is collected only after it has stayed unreferenced, at the same mod revision, for
GRACE_SECONDS of this engine's clock; the delete compares that mod revision, so a client that
stored the same body again meanwhile keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field

GRACE_SECONDS = 60.0


@dataclass
class BodyCollector:
    grace: float = GRACE_SECONDS
    unreferenced_since: dict[tuple[str, int], float] = field(default_factory=dict)

    def collectable(
        self, bodies: Mapping[str, int], referenced: Set[str], now: float
    ) -> list[tuple[str, int]]:
        """(hash, mod revision) of the bodies to delete now, from every body's mod revision."""
        loose = {(h, revision) for h, revision in bodies.items() if h not in referenced}
        self.unreferenced_since = {key: self.unreferenced_since.get(key, now) for key in loose}
        return sorted(
            k for k, since in self.unreferenced_since.items() if now - since >= self.grace
        )
