"""Reading the fields of a spec: each value checked for its type, errors naming its line. (pure)

Shared by the spec (podunits/spec.py) and its placement (podunits/placement.py).
"""

from __future__ import annotations

import re
from typing import TypeVar

from flotilla.manifest import Location, Manifest

T = TypeVar("T")
TYPE_NAMES: dict[type, str] = {str: "a string", int: "a number", bool: "true or false"}
TYPE_NAMES |= {list: "a list", dict: "a mapping"}


def value_of(manifest: Manifest, key: str, default: object = None) -> object:
    # An empty `key:` in YAML means "not given", not null.
    value = manifest.data.get(key)
    return default if value is None else value


def typed(manifest: Manifest, where: Location, value: object, kind: type[T]) -> T:
    """`value` if it is of `kind`; raise naming the line otherwise."""
    # bool is an int in Python, but `stop_timeout: yes` is not a number.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise manifest.error(where, f"must be {TYPE_NAMES[kind]}, not {type(value).__name__}")
    return value


def optional(manifest: Manifest, where: Location, value: object, kind: type[T]) -> T | None:
    return None if value is None else typed(manifest, where, value, kind)


def text_of(manifest: Manifest, where: Location, item: object) -> str:
    """A string, or an integer taken as it is written."""
    if isinstance(item, int) and not isinstance(item, bool):
        return str(item)
    return typed(manifest, where, item, str)


def check_keys(
    manifest: Manifest, where: Location, raw: dict[object, object], known: tuple[str, ...]
) -> None:
    for key in raw:
        if key not in known:
            raise manifest.error((*where, str(key)), f"unknown key (known: {', '.join(known)})")


def check_specifiers(
    manifest: Manifest, where: Location, text: str, allowed: frozenset[str]
) -> None:
    for match in re.finditer(r"%(.?)", text, re.DOTALL):
        if match[1] not in allowed:
            known = " ".join(f"%{letter}" for letter in sorted(allowed))
            raise manifest.error(where, f"{match[0]!r} is not a specifier here (known: {known})")
