"""The `x-fleet` key of a spec: where fleet may place the unit, read into FleetOptions. (pure)

The values become the unit's [X-Fleet] section, so each one is checked as fleet will read it:
one word each (fleet splits on spaces, '=', ',' and quotes) and only fleet's own specifiers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleetd.metadata_match import MetadataExpressionError, parse_expression
from fleetd.unitname import UnitNameError, check_unit_name, mangle_name
from flotilla.manifest import Location, Manifest

from .fields import check_keys, check_specifiers, optional, text_of, typed, value_of

FLEET_KEYS = ("machine_id", "machine_of", "machine_metadata", "conflicts", "global", "replaces")
# fleet matches a MachineID in full or by its first 8 characters.
MACHINE_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}")
# fleet splits metadata on '=', ',' and quotes, and Conflicts on whitespace.
FLEET_WORD = re.compile(r"[^\s=,\"]+")
# fleet expands only these in [X-Fleet] values, and has no escape for a literal '%'.
FLEET_SPECIFIERS = frozenset("nNpi")


@dataclass(frozen=True)
class FleetOptions:
    """The [X-Fleet] placement of the unit; names are full unit names, conflicts are globs."""

    machine_id: str | None = None
    machine_of: tuple[str, ...] = ()
    machine_metadata: tuple[str, ...] = ()  # expressions: `key=value`, `key>=4`, ...
    conflicts: tuple[str, ...] = ()
    is_global: bool = False
    replaces: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return self == FleetOptions()


def read_placement(manifest: Manifest) -> FleetOptions:
    """Read a spec's `x-fleet` key (empty options without it); ManifestError names the line."""
    raw = typed(manifest, ("x-fleet",), value_of(manifest, "x-fleet", {}), dict)
    check_keys(manifest, ("x-fleet",), raw, FLEET_KEYS)
    machine_id = optional(manifest, ("x-fleet", "machine_id"), raw.get("machine_id"), str)
    if machine_id is not None and not MACHINE_ID.fullmatch(machine_id):
        reason = "is not a machine id (32 lower-case hex digits, or the first 8)"
        raise manifest.error(("x-fleet", "machine_id"), f"{machine_id!r} {reason}")
    is_global = typed(manifest, ("x-fleet", "global"), raw.get("global", False), bool)
    return FleetOptions(
        machine_id=machine_id,
        machine_of=tuple(map(mangle_name, _fleet_words(manifest, raw, "machine_of", units=True))),
        machine_metadata=_fleet_metadata(manifest, raw),
        conflicts=_fleet_words(manifest, raw, "conflicts"),
        is_global=is_global,
        replaces=tuple(map(mangle_name, _fleet_words(manifest, raw, "replaces", units=True))),
    )


def _fleet_words(
    manifest: Manifest, raw: dict[str, object], key: str, units: bool = False
) -> tuple[str, ...]:
    """A string or a list of strings, each one fleet word; `units`: each names a unit."""
    value = raw.get(key, [])
    items = [value] if isinstance(value, str) else typed(manifest, ("x-fleet", key), value, list)
    for index, item in enumerate(items):
        where = ("x-fleet", key, index) if isinstance(value, list) else ("x-fleet", key)
        _fleet_word(manifest, where, item)
        # A name with specifiers is only known once fleet expands it.
        if units and "%" not in item:
            try:
                check_unit_name(mangle_name(item))
            except UnitNameError as error:
                raise manifest.error(where, str(error)) from error
    return tuple(items)


def _fleet_metadata(manifest: Manifest, raw: dict[str, object]) -> tuple[str, ...]:
    """`[expression, ...]` (`key=value`, `key!=value`, numeric `key>=4` ...: fleetd's
    operators) or `{key: value}` / `{key: [values]}` (equality; any of the values will do)."""
    value = raw.get("machine_metadata", [])
    where: Location = ("x-fleet", "machine_metadata")
    found: list[tuple[Location, str, str, str]] = []  # where, key, operator, value
    if isinstance(value, dict):
        for key, allowed in value.items():
            for item in allowed if isinstance(allowed, list) else [allowed]:
                location = (*where, str(key))
                found.append((location, key, "=", text_of(manifest, location, item)))
    else:
        for index, item in enumerate(typed(manifest, where, value, list)):
            text = typed(manifest, (*where, index), item, str)
            try:
                expression = parse_expression(text)
            except MetadataExpressionError as error:
                raise manifest.error((*where, index), f"{text!r}: {error}") from error
            found.append(
                ((*where, index), expression.key, expression.operator.value, expression.value)
            )
    for location, key, _, item in found:
        _fleet_word(manifest, location, key)
        _fleet_word(manifest, location, item)
    return tuple(f"{key}{op}{item}" for _, key, op, item in found)


def _fleet_word(manifest: Manifest, where: Location, word: object) -> None:
    if not (isinstance(word, str) and FLEET_WORD.fullmatch(word)):
        reason = "must be a word without spaces, quotes, '=' or ','"
        raise manifest.error(where, f"{word!r} {reason}")
    check_specifiers(manifest, where, word, FLEET_SPECIFIERS)
