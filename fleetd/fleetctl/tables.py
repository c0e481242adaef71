"""fleetctl's listings, formatted as fleet's Go tab writer formats them (pure).

fleet writes rows through text/tabwriter with minwidth 0, tabwidth 8, padding 1 and TAB as the
pad character: a column is as wide as its widest cell plus one, rounded up to a multiple of 8,
and cells are padded with tabs. Scripts split on whitespace, people read aligned columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

TAB_WIDTH = 8
PADDING = 1


class FieldError(ValueError):
    """--fields named something that is not a column."""


def tabwrite(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells -> text aligned with tabs, as Go's tabwriter (padchar '\\t') does."""
    if not rows:
        return ""
    columns = max(len(row) for row in rows)
    widths = [0] * columns
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths[index], len(cell) + PADDING)
    lines = []
    for row in rows:
        parts = []
        for index, cell in enumerate(row):
            if index == len(row) - 1:
                parts.append(cell)
                continue
            width = -(-widths[index] // TAB_WIDTH) * TAB_WIDTH
            parts.append(cell + "\t" * -(-(width - len(cell)) // TAB_WIDTH))
        lines.append("".join(parts))
    return "\n".join(lines) + "\n"


def select_fields(spec: str, known: Sequence[str]) -> list[str]:
    fields = [field for field in spec.split(",") if field]
    if not fields:
        raise FieldError("Must define output format")
    for field in fields:
        if field not in known:
            raise FieldError(f'Invalid key in output format: "{field}"')
    return fields


def table(records: Sequence[Mapping[str, str]], fields: Sequence[str], legend: bool) -> str:
    """Records -> fleet's table: header of upper-cased field names, `-` for empty values."""
    rows = [[field.upper() for field in fields]] if legend else []
    rows += [[record.get(field) or "-" for field in fields] for record in records]
    return tabwrite(rows)


def machine_legend(machine_id: str, ip: str, full: bool) -> str:
    """`<first 8>.../<ip>` (or the full id), as fleet shows a unit's machine."""
    shown = machine_id if full else f"{machine_id[:8]}..."
    return f"{shown}/{ip}" if ip else shown
