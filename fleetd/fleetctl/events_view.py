"""`fleetctl events` output: a table row or a JSON line per event (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from .tables import tabwrite

COLUMNS = ("TIME", "KIND", "UNIT", "MACHINE", "DETAIL")
# --follow prints each row as it comes, so its columns have fixed widths instead of the tab
# writer's (which needs every row first); a longer cell just pushes the rest of its row.
FOLLOW_WIDTHS = (25, 20, 24, 9)


def short(machine: object) -> str:
    return str(machine)[:8] if machine else "-"


def detail(event: Mapping[str, object]) -> str:
    """The reason, with where a unit moved from and to."""
    reason = str(event.get("reason") or "")
    if event.get("from") or event.get("to"):
        where = f"{short(event.get('from'))} -> {short(event.get('to'))}"
        return f"{where}: {reason}" if reason else where
    return reason or "-"


def event_row(event: Mapping[str, object]) -> list[str]:
    return [
        str(event.get("time", "-")),
        str(event.get("kind", "-")),
        str(event.get("unit") or "-"),
        short(event.get("machine")),
        detail(event),
    ]


def event_table(events: Sequence[Mapping[str, object]]) -> str:
    return tabwrite([list(COLUMNS), *(event_row(event) for event in events)])


def fixed_line(cells: Sequence[str]) -> str:
    padded = [cell.ljust(width) for cell, width in zip(cells, FOLLOW_WIDTHS, strict=False)]
    return " ".join([*padded, *cells[len(FOLLOW_WIDTHS) :]])


def json_line(event: Mapping[str, object]) -> str:
    return json.dumps(event, separators=(",", ":"))
