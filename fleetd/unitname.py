"""Unit names: parsed and validated the way fleet's API does it, with fleet's error messages.

Pure. fleet's rules are narrowed to the names a machine can really manage, each refused with a
message in fleet's style:
- at most 255 bytes, suffix included (systemd's limit, which is also a file name's);
- only the unit types systemd 252 loads from a file (fleet's `busname` and `snapshot` are gone
  from systemd, a `scope` only exists when a running process creates it);
- no leading "." (systemd skips hidden files in its unit directories, and so did the agent);
- no name a machine ships itself (fleetd, etcd, ssh, D-Bus, systemd's and the image's units):
  a fleet unit of that name would be linked over the machine's own.

A name that passes `parse_unit_name` can be used as a file name as it is: it never contains
'/' and is never '.' or '..', so it cannot point outside the directory it is written to.
"""

from __future__ import annotations

import fnmatch
import string
from dataclasses import dataclass

MAX_NAME_BYTES = 255  # systemd's UNIT_NAME_MAX - 1; fleet allowed 256, which no file can have
UNIT_TYPES = frozenset(
    {
        "automount",
        "device",
        "mount",
        "path",
        "service",
        "slice",
        "socket",
        "swap",
        "target",
        "timer",
    }
)
# fleet's types that no machine can load from a file; names with them are refused, but a file
# an older agent wrote under such a name is still recognised (and cleaned up) as a unit file.
RETIRED_UNIT_TYPES = frozenset({"busname", "scope", "snapshot"})
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


# Units the machines ship (flotilla/data/units, imagebuild/*.yaml, the image's and rootfs'
# files) and those systemd runs the machine with, as globs on the name without its type, keyed
# by the words the refusal uses: a fleet unit under one of these names would be linked into
# /run/systemd/system, over the machine's own. On a machine, the agent also refuses any name
# systemd has a unit file for, whatever this table says (tests/unit/test_unitname.py checks the
# table against the image's units).
MACHINE_UNITS = {
    "fleetd itself": ("fleetd", "fleetd-*", "fleet"),  # fleet.service (alias), fleet.socket
    "the machine's etcd member": ("etcd",),
    "the SSH server": ("ssh", "sshd", "ssh-host-keys"),
    "the system bus": ("dbus", "dbus-*"),
    "part of systemd": ("systemd-*",),
    "part of the Flotilla image": ("flotilla-*",),
    "part of podman": ("podman", "podman-*"),
    "one of Debian's units the machines mask": (
        *("apt-daily", "apt-daily-upgrade", "console-getty", "dpkg-db-backup"),
        *("e2scrub@*", "e2scrub_all", "e2scrub_reap", "fstrim"),
    ),
    # systemd.special(7): what the machine boots, shuts down and slices itself with.
    "one of systemd's special units": (
        *("-", "init", "system", "user", "user@*", "getty", "getty@*"),
        *("basic", "default", "emergency", "graphical", "halt", "local-fs", "multi-user"),
        *("network", "network-online", "poweroff", "reboot", "rescue", "shutdown"),
        *("sockets", "sysinit", "timers"),
    ),
}


class UnitNameError(ValueError):
    """A unit name fleet's API would refuse; the message is fleet's own, or in its style."""


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
    """Raise UnitNameError unless `name` is a valid unit name; fleet's checks run in fleet's
    order, then ours (a leading ".", a name the machines ship)."""
    if not name:
        raise UnitNameError("unit name cannot be empty")
    # Bytes, as systemd and the file system count, not characters.
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
    if name.startswith("."):
        raise UnitNameError('unit name cannot start in "."')
    if (owner := machine_unit(name)) is not None:
        raise UnitNameError(
            f"unit name {go_quote(name)} is reserved: the machines ship a unit of that name "
            f"({owner}), which a fleet unit would replace"
        )


def machine_unit(name: str) -> str | None:
    """Whose unit of that name the machines ship (the words of MACHINE_UNITS), or None."""
    stem = name.rpartition(".")[0] if "." in name else name
    for owner, patterns in MACHINE_UNITS.items():
        if any(fnmatch.fnmatchcase(stem, pattern) for pattern in patterns):
            return owner
    return None


def looks_like_unit_file(name: str) -> bool:
    """Whether a file name in the agent's directory can be a unit it wrote, under today's rules
    or an older agent's (a hidden name, a retired type); never one of its temporary files."""
    stem, dot, suffix = name.rpartition(".")
    return bool(dot and stem) and suffix in UNIT_TYPES | RETIRED_UNIT_TYPES


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
