"""The `x-fleet` key of a spec: where fleet may place the unit, read into FleetOptions. (pure)

The values become the unit's [X-Fleet] section, so each one is checked as fleet will read it:
one word each (fleet splits on spaces, '=', ',' and quotes) and only fleet's own specifiers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    machine_metadata: tuple[tuple[str, str], ...] = ()
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


def _fleet_metadata(manifest: Manifest, raw: dict[str, object]) -> tuple[tuple[str, str], ...]:
    """`[key=value, ...]` or `{key: value}` / `{key: [values]}` (any of the values will do)."""
    value = raw.get("machine_metadata", [])
    where: Location = ("x-fleet", "machine_metadata")
    pairs: list[tuple[Location, object, object]] = []
    if isinstance(value, dict):
        for key, allowed in value.items():
            for item in allowed if isinstance(allowed, list) else [allowed]:
                pairs.append(((*where, str(key)), key, item))
    else:
        for index, item in enumerate(typed(manifest, where, value, list)):
            text = typed(manifest, (*where, index), item, str)
            if text.count("=") != 1:
                raise manifest.error((*where, index), f"{text!r}: write key=value")
            pairs.append(((*where, index), *text.split("=")))
    for location, key, item in pairs:
        _fleet_word(manifest, location, key)
        _fleet_word(manifest, location, text_of(manifest, location, item))
    return tuple((str(key), str(item)) for _, key, item in pairs)


def _fleet_word(manifest: Manifest, where: Location, word: object) -> None:
    if not (isinstance(word, str) and FLEET_WORD.fullmatch(word)):
        reason = "must be a word without spaces, quotes, '=' or ','"
        raise manifest.error(where, f"{word!r} {reason}")
    check_specifiers(manifest, where, word, FLEET_SPECIFIERS)
