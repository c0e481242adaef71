"""fleet's HTTP API v1 entities and page tokens (pure).

Entities are JSON with empty fields left out, as fleet's API does; a collection that is empty
is `{}`. Page tokens are fleet's: URL-safe base64 of (uint16 limit, uint16 page), little-endian.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Collection, Mapping, Sequence

from .model import DrainOutcome, Machine, UnitState, UnitStatus
from .unitfile import UnitFile

TOKEN_LIMIT = 100


class ApiError(Exception):
    """An HTTP error with fleet's JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, object]:
        return {"error": {"code": self.status, "message": self.message}}


def without_empty(entity: Mapping[str, object]) -> dict[str, object]:
    return {key: value for key, value in entity.items() if value not in (None, "", [], {})}


def unit_entity(status: UnitStatus, unit: UnitFile, current: str) -> dict[str, object]:
    return without_empty(
        {
            "name": status.name,
            "options": unit.to_options(),
            "desiredState": status.desired.value,
            "currentState": current,
            "machineID": status.machine or "",
        }
    )


def state_entity(unit: str, machine: str, state: UnitState) -> dict[str, object]:
    return without_empty(
        {
            "name": unit,
            "hash": state.hash,
            "machineID": machine,
            "systemdLoadState": state.load,
            "systemdActiveState": state.active,
            "systemdSubState": state.sub,
        }
    )


def machine_entity(machine: Machine, state: str) -> dict[str, object]:
    """fleet's machine, and its drain state (schedulable, draining, drained: drain_state.py)."""
    return without_empty(
        {
            "id": machine.id,
            "primaryIP": machine.ip,
            "metadata": dict(machine.metadata),
            "state": state,
        }
    )


def drain_entity(machine: str, outcome: DrainOutcome) -> dict[str, object]:
    """The answer to a drain: the machine, and the units that stay on it (forced) with why."""
    stays = [{"name": unit, "reason": why} for unit, why in sorted(outcome.stays.items())]
    return without_empty({"machineID": machine, "stays": stays})


def encode_token(page: int, limit: int = TOKEN_LIMIT) -> str:
    return base64.urlsafe_b64encode(struct.pack("<HH", limit, page)).decode()


def decode_token(values: Sequence[str], limit: int = TOKEN_LIMIT) -> int:
    """The page a `nextPageToken` asks for (0 when there is none); ApiError 400 otherwise."""
    if not values:
        return 0
    if len(values) > 1:
        raise ApiError(400, "too many values for page token")
    try:
        token_limit, page = struct.unpack("<HH", base64.urlsafe_b64decode(values[0]))
    except (binascii.Error, struct.error, ValueError) as error:
        raise ApiError(400, f"invalid page token: {error}") from error
    if token_limit != limit:
        raise ApiError(400, f"token limit must be {limit}")
    if page == 0:
        raise ApiError(400, "token page must be greater than zero")
    return page


def page_of(
    items: Sequence[object], page: int, key: str, limit: int = TOKEN_LIMIT
) -> dict[str, object]:
    """One page of a collection, with the token for the next one when there is more."""
    chunk = list(items[page * limit : (page + 1) * limit])
    body: dict[str, object] = {key: chunk} if chunk else {}
    if len(items) > (page + 1) * limit:
        body["nextPageToken"] = encode_token(page + 1, limit)
    return body


METHOD_ORDER = ("GET", "PUT", "PATCH", "DELETE", "POST")


def method_not_allowed_message(allowed: Collection[str]) -> str:
    """fleet's words for a 405: "only GET supported against this resource", "only GET and
    PATCH ...", "only GET, PUT and DELETE ..." (HEAD, which goes with GET, left unsaid)."""
    methods = sorted(set(allowed) - {"HEAD"}, key=method_rank) or ["no method"]
    listed = methods[0] if len(methods) == 1 else f"{', '.join(methods[:-1])} and {methods[-1]}"
    return f"only {listed} supported against this resource"


def method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)
