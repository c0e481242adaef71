"""The cluster's event history: the record, its JSON, its ids, filters, pages and trimming.

Pure. An event is one thing that happened (a unit placed, moved, started; a machine joined or
expired; a new engine leader; a fencing verdict), written once by the machine that saw it under
`events/<machine>/<id>` (keys.py), in pages: the events one write carries share a key named
after the first one's id, so a burst (a thousand units placed) costs etcd a few keys. Ids
begin with the time in milliseconds, so sorting ids sorts events by time across every writer;
the writer and a per-process sequence number make them unique. The history is bounded twice:
each writer keeps at most `limit` events of its own (it deletes its oldest pages as it writes
new ones: `overflow`), and every event carries a lease that etcd expires between `max_age` and
1.25 `max_age` after it was written, so the events of a machine gone for good vanish too
(events_store.py). The decisions of which events a change produces are in events_decide.py."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

UNIT_PLACED = "unit.placed"
UNIT_STARTED = "unit.started"
UNIT_STOPPED = "unit.stopped"
UNIT_MOVED = "unit.moved"
UNIT_FAILED = "unit.failed"
MACHINE_JOINED = "machine.joined"
MACHINE_LEFT = "machine.left"
MACHINE_EXPIRED = "machine.expired"
MACHINE_DRAINED = "machine.drained"  # marked for draining (fleetctl drain)
MACHINE_UNDRAINED = "machine.undrained"  # the mark removed (fleetctl undrain)
ENGINE_LEADER = "engine.leader"
FENCE = "fence"
RESCHEDULE_WITHHELD = "reschedule.withheld"
KINDS = (
    UNIT_PLACED,
    UNIT_STARTED,
    UNIT_STOPPED,
    UNIT_MOVED,
    UNIT_FAILED,
    MACHINE_JOINED,
    MACHINE_LEFT,
    MACHINE_EXPIRED,
    MACHINE_DRAINED,
    MACHINE_UNDRAINED,
    ENGINE_LEADER,
    FENCE,
    RESCHEDULE_WITHHELD,
)

DEFAULT_LIMIT = 1000  # events each machine keeps
DEFAULT_MAX_AGE = 24 * 3600.0  # seconds an event is kept at least
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True)
class Draft:
    """An event as a decision produces it: what happened, not yet when or by whom written."""

    kind: str
    unit: str | None = None
    machine: str | None = None
    from_: str | None = None
    to: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Event:
    id: str
    time: str  # RFC 3339, UTC, milliseconds: "2026-11-30T22:28:09.123Z" (sorts as text)
    kind: str
    unit: str | None
    machine: str | None
    from_: str | None
    to: str | None
    reason: str

    def to_json(self) -> dict[str, object]:
        fields = asdict(self)
        fields["from"] = fields.pop("from_")
        return fields


def stamp(draft: Draft, at: datetime, writer: str, sequence: int) -> Event:
    """The event of `draft`, written by `writer` at `at` as its `sequence`-th."""
    millis = int(at.timestamp() * 1000)
    event_id = f"{millis:013d}-{writer[:12]}-{sequence:08x}"
    return Event(
        event_id,
        format_time(at),
        draft.kind,
        draft.unit,
        draft.machine,
        draft.from_,
        draft.to,
        draft.reason,
    )


def format_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (with a zone); ValueError with the text otherwise."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        example = "2026-01-02T15:04:05Z"
        raise ValueError(f"invalid time {text!r}: use RFC 3339, e.g. {example}") from None
    if at.tzinfo is None:
        raise ValueError(f"invalid time {text!r}: give a zone, e.g. Z or +02:00")
    return at.astimezone(UTC)


def encode(event: Event) -> bytes:
    return json.dumps(event.to_json(), separators=(",", ":")).encode()


def decode(raw: bytes | str) -> Event:
    """An event from its JSON; ValueError when it is not one (a bug, or a hand edit)."""
    return from_json(json.loads(raw))


def from_json(value: object) -> Event:
    """An event from its parsed JSON; ValueError when it is not one."""
    try:
        event = Event(
            str(value["id"]),  # type: ignore[index]
            str(value["time"]),  # type: ignore[index]
            str(value["kind"]),  # type: ignore[index]
            optional_text(value.get("unit")),  # type: ignore[attr-defined]
            optional_text(value.get("machine")),  # type: ignore[attr-defined]
            optional_text(value.get("from")),  # type: ignore[attr-defined]
            optional_text(value.get("to")),  # type: ignore[attr-defined]
            str(value.get("reason", "")),  # type: ignore[attr-defined]
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"malformed event: {error}") from error
    return event


def optional_text(value: object) -> str | None:
    return None if value is None else str(value)


def encode_page(events: Sequence[Event]) -> bytes:
    """Events written together, stored as one key: a JSON list."""
    return json.dumps([event.to_json() for event in events], separators=(",", ":")).encode()


def decode_page(raw: bytes) -> list[Event]:
    """The readable events of one stored page (a malformed one is skipped)."""
    try:
        items = json.loads(raw)
    except ValueError:
        return []
    events = []
    for item in items if isinstance(items, list) else [items]:
        try:
            events.append(from_json(item))
        except ValueError:
            continue
    return events


def decode_all(raws: Iterable[bytes]) -> list[Event]:
    """The readable events of every page, oldest first."""
    events = [event for raw in raws for event in decode_page(raw)]
    return sorted(events, key=lambda event: event.id)


# -- filters and pages -----------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    unit: str | None = None
    machine: str | None = None  # an id or its beginning (fleet shows 8 characters)
    since: datetime | None = None

    def matches(self, event: Event) -> bool:
        if self.unit is not None and event.unit != self.unit:
            return False
        if self.machine is not None and not any(
            m is not None and m.startswith(self.machine)
            for m in (event.machine, event.from_, event.to)
        ):
            return False
        return self.since is None or event.time >= format_time(self.since)


def encode_page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def decode_page_token(token: str) -> str:
    """The id a page token continues after; ValueError for a token we did not make."""
    try:
        last_id = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeError, ValueError) as error:
        raise ValueError(f"invalid page token: {error}") from error
    if not re.fullmatch(r"\d{13}-[0-9A-Za-z]*-[0-9a-f]{8}", last_id):
        raise ValueError("invalid page token")
    return last_id


def page(events: Sequence[Event], after: str | None, size: int) -> tuple[list[Event], str | None]:
    """The `size` events after the id `after` (all sorted by id), and the token of the next
    page (None on the last one)."""
    rest = [event for event in events if after is None or event.id > after]
    chunk = rest[:size]
    more = len(rest) > size
    return chunk, encode_page_token(chunk[-1].id) if more and chunk else None


def check_page_size(text: str | None) -> int:
    """pageSize as the API takes it; ValueError with why."""
    if text is None or text == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(text)
    except ValueError:
        raise ValueError(f"pageSize must be a whole number, not {text!r}") from None
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValueError(f"pageSize must be between 1 and {MAX_PAGE_SIZE}, not {size}")
    return size


# -- fleetctl's --since ----------------------------------------------------------------------

SINCE_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
SINCE_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a duration back from now (10m, 2h, 90s, 1h30m) or an RFC 3339 time."""
    parts = SINCE_PART.findall(text)
    if parts and "".join(a + b for a, b in parts) == text:
        seconds = sum(float(amount) * SINCE_UNITS[unit] for amount, unit in parts)
        return now - timedelta(seconds=seconds)
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(
            f"invalid --since {text!r}: give a duration such as 90s, 10m, 2h or 1h30m,"
            " or an RFC 3339 time"
        ) from None


# -- the writer's bounds ---------------------------------------------------------------------


def id_millis(event_id: str) -> int:
    head = event_id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def overflow(stored: Sequence[tuple[str, int]], adding: int, limit: int) -> list[str]:
    """Of a writer's stored pages (id, events in it; oldest first), those to delete so that,
    with `adding` more events, it keeps at most `limit` events."""
    total = sum(count for _, count in stored) + adding
    doomed = []
    for page_id, count in stored:
        if total <= limit:
            break
        doomed.append(page_id)
        total -= count
    return doomed
