"""Fuzz: unit files parse or raise UnitFileError, and a unit's hash is stable (Hypothesis).

The hash is a unit's identity in the cluster: fleetctl computes it from the file, fleetd stores
the canonical text under it, and the engine, the agent and the API read that text back. So the
canonical text of any parsed unit must read back as the same unit, with the same hash.
"""

from __future__ import annotations

import json
import re

from hypothesis import example, given
from hypothesis import strategies as st

from fleetd.unitfile import (
    GO_WHITESPACE,
    LINE_MAX,
    Requirements,
    UnitFile,
    UnitFileError,
    UnitOption,
    glob_match,
    parse_unit_file,
    requirements,
)
from fleetd.unitname import parse_unit_name

from .fuzzing import AWKWARD, any_character, fuzz, soup

UNIT_TOKENS = ["\n", "\n", "\r\n", "\r", "=", "[", "]", "\\", "\\\n", "\\ \n", "#", ";", " ", "\t"]
UNIT_TOKENS += ["[Unit]\n", "[Service]\n", "[X-Fleet]\n", "Description=", "ExecStart=", " = "]
UNIT_TOKENS += ["x" * 1100, "é" * 700]  # two of these make a line systemd would truncate
_line_piece = soup(["=", "[", "]", "\\", "#", ";", " ", "x", "Key", "[Service]"], max_size=6)
_line_end = st.sampled_from(["", "", " ", "\\", "\\ ", "\\\r", "\r", "\t\\"])


@st.composite
def _line_files(draw: st.DrawFn) -> str:
    """Files of lines that look like a unit's: a section header, then options, comments and
    blank lines, with odd endings (a backslash, whitespace after it, a carriage return)."""
    lines = [draw(st.sampled_from(["[Service]", " [X-Fleet] ", "[S]\r"]))]
    for _ in range(draw(st.integers(0, 6))):
        start = draw(st.sampled_from(["", "", " ", "#", ";", "Key=", " Key = ", "[Unit]"]))
        lines.append(start + draw(_line_piece) + draw(_line_end))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines) + draw(st.sampled_from(["", "\n"]))


unit_texts = st.one_of(soup(UNIT_TOKENS, max_size=40), _line_files())


@fuzz(600)
@given(unit_texts)
@example("[Service]\nExecStart=\ud800\n")
@example("[Service]\nA=" + "x" * LINE_MAX)
def test_any_text_parses_or_raises_unit_file_error(text: str) -> None:
    try:
        unit = parse_unit_file(text, "fuzz.service")
    except UnitFileError as error:
        assert str(error).startswith("fuzz.service")
        return
    assert unit.options
    for option in unit.options:
        assert option.section
        assert option.name == option.name.strip(GO_WHITESPACE) != ""
    assert re.fullmatch("[0-9a-f]{40}", unit.hash)


@fuzz(600)
@given(unit_texts)
# A value ending in a backslash at the end of the file, or with a space after the backslash:
# its canonical text used to put the next line after the backslash, so the unit read back had
# another value (and swallowed the next option) and another hash.
@example("[S]\nK=a\\")
@example("[S]\nK=a\\ \nL=b\n")
@example("[S]\nK=a\\\r\nL=b\n")
def test_the_canonical_text_reads_back_as_the_same_unit(text: str) -> None:
    try:
        unit = parse_unit_file(text)
    except UnitFileError:
        return
    again = parse_unit_file(unit.serialize())
    assert again == unit
    assert again.hash == unit.hash


# Options a file can hold as they are: no line breaks, nothing trimmed away, a name that does
# not read as a comment or a section, a value that does not continue onto the next line.
_plain = st.text(st.one_of(st.sampled_from('aZ09 =[]#;\\"%-_.é☃'), any_character), max_size=12)
_trimmed = _plain.filter(lambda text: text == text.strip(GO_WHITESPACE) and "\n" not in text)
_encodable = _trimmed.filter(lambda text: not re.search("[\ud800-\udfff]", text))
_sections = _encodable.filter(lambda text: text and "]" not in text and "\r" not in text)
_names = _encodable.filter(lambda text: text and "=" not in text and text[0] not in "#;[")
_values = _encodable.filter(lambda text: not text.endswith("\\") and "\r" not in text)
_options = st.lists(st.builds(UnitOption, _sections, _names, _values), min_size=1, max_size=6)
_blank = st.sampled_from(["", " ", "\t", "\xa0", "\u3000"])
_comments = st.lists(
    st.builds(str.__add__, st.sampled_from(["#", ";", " #", "\t;"]), _values), max_size=2
)


@st.composite
def decorated(draw: st.DrawFn) -> tuple[list[UnitOption], str]:
    """Options, and a file that holds them among comments, blank lines and odd spacing."""
    options = draw(_options)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines, section = [], None
    for option in options:
        lines += draw(_comments) + [draw(_blank) for _ in range(draw(st.integers(0, 1)))]
        if option.section != section or draw(st.booleans()):
            lines.append(f"{draw(_blank)}[{option.section}]{draw(_blank)}")
            section = option.section
        lines.append(f"{draw(_blank)}{option.name}{draw(_blank)}={draw(_blank)}{option.value}")
    return options, newline.join(lines) + draw(st.sampled_from(["", newline]))


@fuzz(300)
@given(decorated())
def test_comments_blank_lines_and_spacing_do_not_change_the_hash(
    case: tuple[list[UnitOption], str],
) -> None:
    options, text = case
    assert parse_unit_file(text).hash == UnitFile(tuple(options)).hash


@fuzz(300)
@given(unit_texts)
def test_the_api_json_shape_keeps_the_unit_and_its_hash(text: str) -> None:
    try:
        unit = parse_unit_file(text)
    except UnitFileError:
        return
    sent = json.loads(json.dumps(unit.to_options()))
    received = UnitFile.from_options(sent)
    assert received == unit
    assert received.hash == unit.hash
    # The API re-parses what it receives; that must not change the unit either.
    assert parse_unit_file(received.serialize()) == unit


FLEET_KEYS = [
    "MachineID",
    "MachineOf",
    "MachineMetadata",
    "Conflicts",
    "Replaces",
    "Global",
    "X-ConditionMachineID",
    "X-ConditionMachineBootID",
    "X-ConditionMachineOf",
    "X-ConditionMachineMetadata",
    "X-Conflicts",
]
FLEET_TOKENS = ['"', '" "', "=", "*", "?", "[", "]", "^", "-", "\\", "/", " ", "%n", "%N", "%p"]
FLEET_TOKENS += ["%i", "web.service", "a=b", "true", "yes", "0"]
_fleet_values = soup(FLEET_TOKENS, max_size=10).filter(
    lambda text: "\n" not in text and not re.search("[\ud800-\udfff]", text)
)
NAMES = ["web.service", "web@1.service", "web@.service", "a.b-c_d:e\\x.socket"]


@fuzz(250)
@given(
    st.lists(st.tuples(st.sampled_from(FLEET_KEYS), _fleet_values), min_size=1, max_size=5),
    st.sampled_from(NAMES),
)
def test_x_fleet_options_give_requirements_or_unit_file_error(
    fleet: list[tuple[str, str]], name: str
) -> None:
    unit = UnitFile(tuple(UnitOption("X-Fleet", key, value) for key, value in fleet))
    try:
        found = requirements(unit, parse_unit_name(name))
    except UnitFileError as error:
        assert error.source == name
        return
    other = Requirements(name="other.service", conflicts=found.conflicts + found.replaces)
    found.conflicts_with("other.service", other)
    found.metadata_matches({"a": "b"})
    found.machine_id_matches("0123456789abcdef")


_glob_text = soup(["*", "?", "[", "]", "^", "-", "\\", "/", "a", "b"], max_size=10)


@fuzz(400)
@given(_glob_text, _glob_text)
def test_any_glob_matches_or_not_without_raising(pattern: str, name: str) -> None:
    assert glob_match(pattern, name) in (True, False)


@fuzz(50)
@given(st.sampled_from(AWKWARD), st.integers(1, 3 * LINE_MAX))
def test_huge_lines_are_refused_by_their_size_in_bytes(character: str, count: int) -> None:
    if character in GO_WHITESPACE or character in "\x0b\x0c\ud800":
        character = "x"
    line = "A=" + character * count
    size = len(line.encode())
    try:
        unit = parse_unit_file(f"[Service]\n{line}\n")
    except UnitFileError as error:
        assert size >= LINE_MAX
        assert error.line == 2
        return
    assert size < LINE_MAX
    assert unit.values("Service", "A") == [(character * count).strip(GO_WHITESPACE)]
