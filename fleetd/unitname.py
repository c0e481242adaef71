"""Unit names: parsed and validated the way fleet's API does it, with fleet's error messages.

Pure. A name that passes `parse_unit_name` can be used as a file name as it is: it never contains
'/' and is never '.' or '..', so it cannot point outside the directory it is written to.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

MAX_NAME_BYTES = 256
UNIT_TYPES = frozenset(
    {
        "automount",
        "busname",
        "device",
        "mount",
        "path",
        "scope",
        "service",
        "slice",
        "snapshot",
        "socket",
        "swap",
        "target",
        "timer",
    }
)
# Only these types may be templates or instances (names with '@').
TEMPLATE_TYPES = frozenset({"path", "service", "socket", "target", "timer"})
NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + ":-_.\\@")
# fleetctl only recognises these suffixes; any other name gets ".service" appended, so
# `fleetctl start foo.target` means foo.target.service (fleet's unit.RecognizedUnitType).
RECOGNIZED_SUFFIXES = ("service", "socket", "timer", "path", "device", "mount", "automount")
DEFAULT_SUFFIX = "service"

# Go's strconv escapes, so that messages quote names exactly as fleet's %q does.
_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
}


class UnitNameError(ValueError):
    """A unit name fleet's API would refuse; the message is fleet's own."""


@dataclass(frozen=True)
class UnitName:
    """A valid unit name, split as fleet splits it: `prefix@instance.suffix`.

    `instance` is None for a plain name and "" for a template (`foo@.service`).
    """

    full: str
    prefix: str
    instance: str | None
    suffix: str

    @property
    def is_template(self) -> bool:
        return self.instance == ""

    @property
    def is_instance(self) -> bool:
        return bool(self.instance)

    @property
    def template(self) -> str | None:
        """The template an instance is made from (`foo@bar.service` -> `foo@.service`)."""
        if not self.is_instance:
            return None
        return f"{self.prefix}@.{self.suffix}"

    @property
    def without_suffix(self) -> str:
        """The name without its type, which the `%N` specifier stands for."""
        return self.full[: -len(self.suffix) - 1]

    def __str__(self) -> str:
        return self.full


def parse_unit_name(name: str) -> UnitName:
    """Validate `name` like fleet's API (ValidateName) and split it into its parts.

    Raises UnitNameError with fleet's message for the first problem found. The prefix is
    everything before the first '@', the instance lies between that '@' and the last '.'.
    """
    check_unit_name(name)
    stem, _, suffix = name.rpartition(".")
    prefix, at, instance = stem.partition("@")
    return UnitName(full=name, prefix=prefix, instance=instance if at else None, suffix=suffix)


def check_unit_name(name: str) -> None:
    """Raise UnitNameError unless `name` is a valid unit name; checks run in fleet's order."""
    if not name:
        raise UnitNameError("unit name cannot be empty")
    # fleet counts bytes, as systemd does, not characters.
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise UnitNameError(f"unit name exceeds maximum length ({MAX_NAME_BYTES})")
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        raise UnitNameError('unit name must contain "."')
    if not suffix:
        raise UnitNameError('unit name cannot end in "."')
    if suffix not in UNIT_TYPES:
        raise UnitNameError(f"invalid unit type: {go_quote(suffix)}")
    if "@" in stem and suffix not in TEMPLATE_TYPES:
        raise UnitNameError(f"invalid unit type for template: {go_quote(suffix)}")
    for character in stem:
        if character not in NAME_CHARACTERS:
            quoted = go_quote(character, quote="'")
            raise UnitNameError(f"invalid character {quoted} in unit name")
    if name.startswith("@"):
        raise UnitNameError('unit name cannot start in "@"')


def mangle_name(name: str) -> str:
    """Turn a fleetctl argument into a unit name, as fleetctl does.

    The directory part is dropped (Go's path.Base, so `units/web.service` -> `web.service`) and
    ".service" is appended unless the name ends in a suffix fleetctl recognises. The result is
    not validated; pass it to parse_unit_name. An empty argument stays empty so that validation
    reports it (fleetctl would turn it into "..service").
    """
    if not name:
        return name
    base = _path_base(name)
    if any(base.endswith("." + suffix) for suffix in RECOGNIZED_SUFFIXES):
        return base
    return f"{base}.{DEFAULT_SUFFIX}"


def _path_base(path: str) -> str:
    # Go's path.Base differs from os.path.basename: "a/b/" -> "b" and "///" -> "/".
    trimmed = path.rstrip("/")
    if not trimmed:
        return "/"
    return trimmed.rpartition("/")[2]


def go_quote(text: str, quote: str = '"') -> str:
    """Quote `text` like Go's %q (a string with '"', a single character with "'")."""
    return quote + "".join(_go_escape(character, quote) for character in text) + quote


def _go_escape(character: str, quote: str) -> str:
    if character == quote:
        return "\\" + character
    if character in _GO_ESCAPES:
        return _GO_ESCAPES[character]
    if character.isprintable():
        return character
    code = ord(character)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
