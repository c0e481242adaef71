"""Unit files: parsed like fleet parses them, serialized and hashed in fleet's canonical form,
and their [X-Fleet] scheduling requirements.

Pure. The parser follows the go-systemd lexer fleet uses, so that a file gives the same options,
hence the same canonical text and the same SHA1, in Flotilla as in fleet. It is stricter where
fleet silently dropped input (an option before any section, a nameless option, an empty file).
One departure: a value ending in a backslash always keeps a line break after it, so that the
canonical text of every parsed unit reads back as the same unit with the same hash.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fleetd.metadata_match import (
    MetadataClause,
    MetadataExpression,
    MetadataExpressionError,
    clauses,
    first_mismatch,
    parse_expression,
)
from fleetd.unitname import UnitName, go_quote

FLEET_SECTION = "X-Fleet"
METADATA_OPTIONS = ("X-ConditionMachineMetadata", "MachineMetadata")
# go-systemd refuses lines of 2048 bytes or more: systemd silently truncated them (LINE_MAX).
LINE_MAX = 2048
SHORT_HASH_LENGTH = 7
SHORT_MACHINE_ID_LENGTH = 8
TRUTHY = frozenset({"true", "yes", "1", "on", "t"})
# Go's unicode.IsSpace, which go-systemd trims with; Python's str.strip() would also take \x1c-\x1f.
GO_WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_JSON_FIELDS = ("section", "name", "value")
_FIELDS = re.compile(f"[^{re.escape(GO_WHITESPACE)}]+")


class UnitFileError(ValueError):
    """A unit file (or its [X-Fleet] options) fleet would refuse.

    The message names the source (a file or unit name) and, where it applies, the 1-based line.
    """

    def __init__(self, source: str, reason: str, line: int | None = None) -> None:
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class UnitOption:
    section: str
    name: str
    value: str


@dataclass(frozen=True)
class UnitFile:
    """A unit as fleet stores it: the ordered list of its options."""

    options: tuple[UnitOption, ...]

    def serialize(self) -> str:
        """fleet's canonical text: sections in first-seen order, each `[Section]` then its
        `Name=Value` lines in order, one blank line between sections and none at the end."""
        sections: dict[str, list[str]] = {}
        for option in self.options:
            sections.setdefault(option.section, []).append(f"{option.name}={option.value}\n")
        return "\n".join(f"[{section}]\n" + "".join(lines) for section, lines in sections.items())

    @property
    def hash(self) -> str:
        """SHA1 of the canonical text, 40 hex digits: the unit's identity in fleet."""
        return hashlib.sha1(self.serialize().encode(), usedforsecurity=False).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.hash[:SHORT_HASH_LENGTH]

    def values(self, section: str, name: str) -> list[str]:
        """Every value of option `name` in `section`, in file order."""
        return [o.value for o in self.options if o.section == section and o.name == name]

    def has_section(self, section: str) -> bool:
        return any(option.section == section for option in self.options)

    @classmethod
    def from_options(
        cls, options: Iterable[Mapping[str, object]], source: str = "<unit>"
    ) -> UnitFile:
        """Build a unit from the API's JSON shape: a list of {"section", "name", "value"}.

        Only the shape is checked. fleet's API also re-parses the serialization to reject
        what a file could not hold; do that with parse_unit_file(unit.serialize(), name).
        """
        return cls(
            tuple(
                _option_from_json(option, number, source)
                for number, option in enumerate(options, start=1)
            )
        )

    def to_options(self) -> list[dict[str, str]]:
        """The API's JSON shape of this unit's options."""
        return [{"section": o.section, "name": o.name, "value": o.value} for o in self.options]


def _option_from_json(option: object, number: int, source: str) -> UnitOption:
    fields = [option.get(key) for key in _JSON_FIELDS] if isinstance(option, Mapping) else []
    if fields and all(isinstance(field, str) and _encodable(field) for field in fields):
        return UnitOption(*map(str, fields))
    reason = f'option {number} must be an object with text "section", "name" and "value"'
    raise UnitFileError(source, reason)


def _encodable(text: str) -> bool:
    # A lone surrogate (possible from JSON) has no UTF-8 form, so the unit could have no hash.
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_unit_file(text: str, source: str = "<unit>") -> UnitFile:
    """Parse a unit file the way fleet (go-systemd's lexer) does.

    Comments (`#`, `;`) and blank lines are dropped, whitespace around keys and values trimmed,
    repeated keys kept in order. A value continued with a trailing backslash keeps the backslash
    and the line breaks, as fleet keeps them, so systemd still sees the lines split. Raises
    UnitFileError naming `source` and the line.
    """
    lines = _physical_lines(text)
    _check_lines(lines, source)
    options: list[UnitOption] = []
    section: str | None = None
    index = 0
    while index < len(lines):
        content = lines[index].lstrip(GO_WHITESPACE)
        if not content:
            index += 1
        elif content[0] in "#;":
            index = _skip_comment(lines, index)
        elif content[0] == "[":
            section = _section_name(content, source, index + 1)
            index += 1
        else:
            option, index = _read_option(lines, index, section, source)
            options.append(option)
    if not options:
        raise UnitFileError(source, "unit file is empty: it has no Key=Value options")
    return UnitFile(tuple(options))


def _physical_lines(text: str) -> list[str]:
    # Like go-systemd, only the final line (read up to EOF, not to a "\n") loses a trailing
    # "\r"; elsewhere a "\r" stays until values and names are trimmed.
    lines = text.split("\n")
    lines[-1] = lines[-1].removesuffix("\r")
    return lines


def _check_lines(lines: list[str], source: str) -> None:
    for number, line in enumerate(lines, start=1):
        try:
            size = len(line.removesuffix("\r").encode())
        except UnicodeEncodeError as error:
            # A lone surrogate: the unit would have no canonical bytes, hence no hash.
            reason = f"character {error.start + 1} is not text (it has no UTF-8 form)"
            raise UnitFileError(source, reason, number) from None
        if size >= LINE_MAX:
            reason = f"line too long ({size} bytes; the limit is {LINE_MAX - 1} plus the newline)"
            reason += ": wrap it with a backslash at the end of a line"
            raise UnitFileError(source, reason, number)


def _skip_comment(lines: list[str], index: int) -> int:
    # go-systemd lets a comment ending in a backslash (one trailing space allowed) swallow the
    # next line too, so a line after such a comment is not an option.
    while index + 1 < len(lines) and lines[index].removesuffix(" ").endswith("\\"):
        index += 1
    return index + 1


def _section_name(content: str, source: str, number: int) -> str:
    close = content.find("]")
    if close == -1:
        reason = f"section header {go_quote(content)} has no closing ']'"
        raise UnitFileError(source, reason, number)
    name, garbage = content[1:close], content[close + 1 :]
    if garbage.strip(GO_WHITESPACE):
        reason = f"unexpected {go_quote(garbage.strip(GO_WHITESPACE))} after [{name}]"
        raise UnitFileError(source, reason, number)
    if not name:
        raise UnitFileError(source, "section name cannot be empty", number)
    return name


def _read_option(
    lines: list[str], index: int, section: str | None, source: str
) -> tuple[UnitOption, int]:
    key, equals, rest = lines[index].partition("=")
    if not equals:
        got = go_quote(lines[index].strip(GO_WHITESPACE))
        raise UnitFileError(source, f'expected "Key=Value" or "[Section]", got {got}', index + 1)
    name = key.strip(GO_WHITESPACE)
    if not name:
        raise UnitFileError(source, 'option has no name before "="', index + 1)
    if section is None:
        raise UnitFileError(
            source, f"option {name} comes before any [Section]; move it under one", index + 1
        )
    value, index = _read_value(lines, index, rest)
    return UnitOption(section, name, value), index


def _read_value(lines: list[str], index: int, text: str) -> tuple[str, int]:
    """Read the value starting with `text` (the rest of lines[index] after '=').

    Returns the value and the index of the line after it.
    """
    value = ""
    while True:
        index += 1
        # A blank line ends a continued value, as does a line without a trailing backslash.
        if not text.strip(GO_WHITESPACE):
            break
        value += text
        if not text.endswith("\\") or index == len(lines):
            break
        value += "\n"
        text = lines[index]
    # go-systemd keeps the line break of a continuation that ran into a blank line. A value
    # ending in a backslash gets one too (go-systemd leaves it off at the end of the file, or
    # when whitespace follows the backslash): in the canonical text the next line follows that
    # backslash, so without it the text would read back as another unit with another hash.
    if value.endswith("\n") or value.strip(GO_WHITESPACE).endswith("\\"):
        return value.strip(GO_WHITESPACE) + "\n", index
    return value.strip(GO_WHITESPACE), index


@dataclass(frozen=True)
class Requirements:
    """What a unit's [X-Fleet] section asks of the machine it runs on.

    `metadata` holds clauses that must all hold (see metadata_match), sorted by key. Names in
    `machine_of` are peers (fleet calls them Peers); `conflicts` and `replaces` are Go
    path.Match globs.
    """

    name: str
    machine_id: str | None = None
    machine_of: tuple[str, ...] = ()
    metadata: tuple[MetadataClause, ...] = ()
    conflicts: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    is_global: bool = False

    def metadata_matches(self, machine_metadata: Mapping[str, str]) -> bool:
        """True if the machine's metadata satisfies every MachineMetadata clause."""
        return self.metadata_mismatch(machine_metadata) is None

    def metadata_mismatch(
        self, machine_metadata: Mapping[str, str]
    ) -> tuple[MetadataClause, str] | None:
        """The first clause the machine does not satisfy and what it has instead, or None."""
        return first_mismatch(self.metadata, machine_metadata)

    def conflicts_with(self, other_name: str, other: Requirements) -> bool:
        """True if either unit's Conflicts globs match the other's name.

        A unit without Conflicts is still kept away from one whose globs match it.
        """
        if other_name == self.name:
            return False
        mine = any(glob_match(pattern, other_name) for pattern in self.conflicts)
        return mine or any(glob_match(pattern, self.name) for pattern in other.conflicts)

    def machine_id_matches(self, machine_id: str) -> bool:
        """True if there is no MachineID, or it is `machine_id` in full or in short (8 chars)."""
        if self.machine_id is None:
            return True
        return self.machine_id in (machine_id, machine_id[:SHORT_MACHINE_ID_LENGTH])


def requirements(unit: UnitFile, name: UnitName) -> Requirements:
    """Read the [X-Fleet] requirements of `unit` under `name`, with the legacy option names.

    `%n %N %p %i` are replaced in every value. Raises UnitFileError (naming the unit) with
    fleet's message for a combination of options fleet refuses.
    """
    fleet = _fleet_values(unit, name)
    machine_ids = _values(fleet, "MachineID") or _values(fleet, "X-ConditionMachineID")
    # The legacy boot-ID form still counts as a target, so such a unit never finds a machine.
    machine_ids = machine_ids or _values(fleet, "X-ConditionMachineBootID")
    conflicts = _values(fleet, "X-Conflicts", "Conflicts")
    global_values = _values(fleet, "Global")
    found = Requirements(
        name=name.full,
        machine_id=machine_ids[0] if machine_ids else None,
        machine_of=_values(fleet, "X-ConditionMachineOf", "MachineOf"),
        metadata=clauses(_metadata_expressions(unit, name)),
        conflicts=tuple(field for value in conflicts for field in _FIELDS.findall(value)),
        replaces=_values(fleet, "Replaces"),
        # The last Global value wins.
        is_global=bool(global_values) and global_values[-1].lower() in TRUTHY,
    )
    _check_combinations(found)
    return found


def _fleet_values(unit: UnitFile, name: UnitName) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for option in unit.options:
        if option.section == FLEET_SECTION:
            tokens = [_substitute(token, name) for token in split_multivalue(option.value)]
            values.setdefault(option.name, []).extend(tokens)
    return values


def _values(fleet: dict[str, list[str]], *keys: str) -> tuple[str, ...]:
    return tuple(value for key in keys for value in fleet.get(key, ()))


def _substitute(value: str, name: UnitName) -> str:
    # One specifier after the other, like fleet; a unit name cannot contain '%' to confuse it.
    value = value.replace("%n", name.full).replace("%N", name.without_suffix)
    return value.replace("%p", name.prefix).replace("%i", name.instance or "")


def split_multivalue(value: str) -> list[str]:
    """Split fleet's multi-value form `"a=b" "c=d"` into its tokens; other values are one token.

    Like fleet, quotes only group: they are dropped wherever they are, and only a space
    outside quotes separates tokens (so `"a"  "b"` holds an empty token).
    """
    if not (value.startswith('"') and value.endswith('"')):
        return [value]
    tokens, current, quoted = [], [], False
    for character in value:
        if character == '"':
            quoted = not quoted
        elif character == " " and not quoted:
            tokens.append("".join(current))
            current = []
        else:
            current.append(character)
    tokens.append("".join(current))
    return tokens


def _metadata_expressions(unit: UnitFile, name: UnitName) -> list[MetadataExpression]:
    """Every MachineMetadata token read as an expression; a malformed one raises UnitFileError
    naming the unit, the option, the expression and the character at fault."""
    found = []
    for option in unit.options:
        if option.section != FLEET_SECTION or option.name not in METADATA_OPTIONS:
            continue
        for token in split_multivalue(option.value):
            # A template's %i is empty; each instance is checked with its own when created.
            if not token or (name.is_template and "%i" in token):
                continue
            expression = _substitute(token, name)
            try:
                found.append(parse_expression(expression))
            except MetadataExpressionError as error:
                reason = f"{option.name} {go_quote(expression)}: {error}"
                raise UnitFileError(name.full, reason) from None
    return found


def _check_combinations(found: Requirements) -> None:
    globs = [("conflict", p) for p in found.conflicts] + [("replace", p) for p in found.replaces]
    for peer in found.machine_of:
        for kind, pattern in globs:
            if glob_match(pattern, peer):
                reason = f"unresolvable requirements: peer {go_quote(peer)} matches {kind} "
                raise UnitFileError(found.name, reason + go_quote(pattern))
    has_id = found.machine_id is not None
    refused = [
        (has_id and bool(found.machine_of), "MachineID cannot be used with Peers"),
        (has_id and bool(found.conflicts), "MachineID cannot be used with Conflicts"),
        (has_id and found.is_global, "MachineID cannot be used with Global"),
        (has_id and bool(found.replaces), "MachineID cannot be used with Replaces"),
        (found.is_global and bool(found.machine_of), "Global cannot be used with Peers"),
        (found.is_global and bool(found.replaces), "Global cannot be used with Replaces"),
        (bool(found.conflicts and found.replaces), "Conflicts cannot be used with Replaces"),
    ]
    for broken, reason in refused:
        if broken:
            raise UnitFileError(found.name, reason)


class _BadPatternError(Exception):
    """A malformed glob; Go's path.Match returns ErrBadPattern, and fleet treats it as no match."""


@functools.lru_cache(maxsize=1 << 16)
def glob_match(pattern: str, name: str) -> bool:
    """Go's path.Match: `*` and `?` never match '/', `[...]`/`[^...]` classes, `\\` escapes.

    Like Go, a star takes the shortest match of what follows and never backtracks past it.
    A malformed pattern matches nothing. Remembered: the engine asks the same few patterns
    about the same names for every unit it places (a Conflicts= glob against every unit on
    every candidate machine).
    """
    try:
        return _glob_match(pattern, name)
    except _BadPatternError:
        return False


def _glob_match(pattern: str, name: str) -> bool:
    while pattern:
        star, chunk, pattern = _next_chunk(pattern)
        if star and not chunk:
            return "/" not in name
        rest = _match_chunk(chunk, name)
        # The last chunk must use up the name; an earlier one may leave the rest to a star.
        if rest is not None and (not rest or pattern):
            name = rest
            continue
        rest = _match_after_star(chunk, name, last=not pattern) if star else None
        if rest is None:
            return False
        name = rest
    return not name


def _next_chunk(pattern: str) -> tuple[bool, str, str]:
    """Split off the leading stars and the star-free chunk after them."""
    rest = pattern.lstrip("*")
    star = len(rest) != len(pattern)
    in_class = False
    index = 0
    while index < len(rest):
        character = rest[index]
        if character == "\\":
            index += 1
        elif character == "[":
            in_class = True
        elif character == "]":
            in_class = False
        elif character == "*" and not in_class:
            break
        index += 1
    return star, rest[:index], rest[index:]


def _match_after_star(chunk: str, name: str, last: bool) -> str | None:
    # The star skips one character more each time, but never a '/'.
    for skip in range(len(name)):
        if name[skip] == "/":
            return None
        rest = _match_chunk(chunk, name[skip + 1 :])
        if rest is not None and not (last and rest):
            return rest
    return None


def _match_chunk(chunk: str, text: str) -> str | None:
    """Match a star-free chunk at the start of `text`; return the rest of `text`, or None."""
    index = 0
    while index < len(chunk):
        if not text:
            return None
        character = chunk[index]
        if character == "[":
            index, matched = _match_class(chunk, index + 1, text[0])
        elif character == "?":
            index, matched = index + 1, text[0] != "/"
        else:
            if character == "\\":
                index += 1
                if index == len(chunk):
                    raise _BadPatternError(chunk)
            index, matched = index + 1, chunk[index] == text[0]
        if not matched:
            return None
        text = text[1:]
    return text


def _match_class(chunk: str, index: int, character: str) -> tuple[int, bool]:
    """Match `character` against the class whose body starts at chunk[index] (after '[')."""
    negated = chunk.startswith("^", index)
    if negated:
        index += 1
    matched, ranges = False, 0
    while not (chunk.startswith("]", index) and ranges):
        low, index = _class_character(chunk, index)
        high = low
        if chunk[index] == "-":
            high, index = _class_character(chunk, index + 1)
        matched = matched or low <= character <= high
        ranges += 1
    return index + 1, matched != negated


def _class_character(chunk: str, index: int) -> tuple[str, int]:
    if index >= len(chunk) or chunk[index] in "-]":
        raise _BadPatternError(chunk)
    if chunk[index] == "\\":
        index += 1
    # The class must still close after this character.
    if index + 1 >= len(chunk):
        raise _BadPatternError(chunk)
    return chunk[index], index + 1
