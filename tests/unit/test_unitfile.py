"""Unit files parse, serialize and hash like fleet's, and [X-Fleet] reads like fleet's scheduler."""

from __future__ import annotations

import hashlib
import re
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.unitfile import (
    GO_WHITESPACE,
    Requirements,
    UnitFile,
    UnitFileError,
    UnitOption,
    glob_match,
    parse_unit_file,
    requirements,
    split_multivalue,
)
from fleetd.unitname import parse_unit_name


def options(text: str) -> list[tuple[str, str, str]]:
    return [(o.section, o.name, o.value) for o in parse_unit_file(text).options]


def unit(*triples: tuple[str, str, str]) -> UnitFile:
    return UnitFile(tuple(UnitOption(*triple) for triple in triples))


def fleet_requirements(fleet_lines: str, name: str = "web.service") -> Requirements:
    return requirements(parse_unit_file("[X-Fleet]\n" + fleet_lines), parse_unit_name(name))


# ---------------------------------------------------------------------------------------------
# Parsing


def test_comments_and_blank_lines_go_and_repeated_keys_stay_in_order() -> None:
    text = """
; a comment before any section
[Unit]
;ignore this
Description = Foo

[Service]
ExecStart=echo "ping";
ExecStop=echo "pong"
   # an indented comment
ExecStop=echo post

[X-Fleet]
MachineMetadata=foo=bar
MachineMetadata=baz=qux
"""
    assert options(text) == [
        ("Unit", "Description", "Foo"),
        ("Service", "ExecStart", 'echo "ping";'),
        ("Service", "ExecStop", 'echo "pong"'),
        ("Service", "ExecStop", "echo post"),
        ("X-Fleet", "MachineMetadata", "foo=bar"),
        ("X-Fleet", "MachineMetadata", "baz=qux"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[Unit]\n Description   =  words here  \n", ("Unit", "Description", "words here")),
        ("[Unit]\nSome Thing = Bar\n", ("Unit", "Some Thing", "Bar")),
        ("[Unit]\nDescription=Bar", ("Unit", "Description", "Bar")),
        ("[Service]\nEnvironment=A=B\n", ("Service", "Environment", "A=B")),
        ('[Service]\nEnvironment= "A=1" "B=2"\n', ("Service", "Environment", '"A=1" "B=2"')),
        ("[Service]\nExecStart=\n", ("Service", "ExecStart", "")),
        ("[Service]\nExecStart=   \n", ("Service", "ExecStart", "")),
        # systemd passes any key with an '=' on; so does fleet.
        ("[Service]\n<<<<<<<<=bar\n", ("Service", "<<<<<<<<", "bar")),
        # A backslash that does not end the line is just a character.
        (
            '[Service]\nExecStart=/bin/sh -c "echo \\"hi\\"; sleep 1"\n',
            ("Service", "ExecStart", '/bin/sh -c "echo \\"hi\\"; sleep 1"'),
        ),
        ("  [Unit]  \n\tDescription=x\n", ("Unit", "Description", "x")),
        ("[ Odd Name ]\nA=b\n", (" Odd Name ", "A", "b")),
        ("[©]\nµ☃=ÇôrèÕ$", ("©", "µ☃", "ÇôrèÕ$")),
        ("[Unit]\r\nDescription=crlf\r\n", ("Unit", "Description", "crlf")),
        ("[Unit]\nDescription=x # not a comment\n", ("Unit", "Description", "x # not a comment")),
    ],
)
def test_keys_and_values_are_trimmed_like_systemd(
    text: str, expected: tuple[str, str, str]
) -> None:
    assert options(text) == [expected]


@pytest.mark.parametrize(
    ("text", "values"),
    [
        # fleet keeps a continued value's backslashes, line breaks and indentation, so the
        # canonical text still wraps the line where the user did (and systemd joins it).
        ('[Service]\nExecStart=echo \\\n  "pi\\\n  ng"\n', ['echo \\\n  "pi\\\n  ng"']),
        ('[Service]\nExecStop=\\\necho "po\\\nng"\n', ['\\\necho "po\\\nng"']),
        # Comment-looking lines inside a continuation belong to the value.
        ("[Service]\nExecStopPre=echo\\\n#pang\n", ["echo\\\n#pang"]),
        ("[Service]\nExecStopPost=echo\\\n#peng\\\npung\n", ["echo\\\n#peng\\\npung"]),
        # A continuation that runs into a blank line keeps its line break.
        ("[Service]\nA=foo \\\n\nB=2\n", ["foo \\\n", "2"]),
        ("[Service]\nA=foo \\\n", ["foo \\\n"]),
        # A value ending in a backslash keeps a line break even where go-systemd drops it (at
        # the end of the file; when a space after the backslash means the line does not
        # continue): its canonical text must read back as the same value, not swallow B=2.
        ("[Service]\nA=foo \\", ["foo \\\n"]),
        ("[Service]\nA=foo \\ \nB=2\n", ["foo \\\n", "2"]),
    ],
)
def test_line_continuations_are_kept_as_fleet_keeps_them(text: str, values: list[str]) -> None:
    assert [value for _, _, value in options(text)] == values


@pytest.mark.parametrize(
    "text",
    [
        "[Service]\n# a comment \\\nA=swallowed\nB=kept\n",
        "[Service]\n; one trailing space is allowed \\ \nA=swallowed\nB=kept\n",
        "[Service]\n# two \\\n more \\\nA=swallowed\nB=kept\n",
    ],
)
def test_a_comment_ending_in_a_backslash_swallows_the_next_line(text: str) -> None:
    # go-systemd's behaviour; fleet's stored options (and hash) depend on it.
    assert options(text) == [("Service", "B", "kept")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[Unit]\nDescription=x\ngarbage\n",
            'web.service:3: expected "Key=Value" or "[Section]", got "garbage"',
        ),
        (
            "[Unit]\n  <<<<<<  \nA=b\n",
            'web.service:2: expected "Key=Value" or "[Section]", got "<<<<<<"',
        ),
        (
            "Description=x\n[Unit]\n",
            "web.service:1: option Description comes before any [Section]; move it under one",
        ),
        (
            "\n# c\nnonsense\n[Unit]\nA=b\n",
            'web.service:3: expected "Key=Value" or "[Section]", got "nonsense"',
        ),
        ("[Unit\nDescription=x\n", "web.service:1: section header \"[Unit\" has no closing ']'"),
        ("[Unit] pants\nA=b\n", 'web.service:1: unexpected "pants" after [Unit]'),
        ("[]\nA=b\n", "web.service:1: section name cannot be empty"),
        ("[Unit]\n = b\n", 'web.service:2: option has no name before "="'),
        ("", "web.service: unit file is empty: it has no Key=Value options"),
        ("\n\n  \n", "web.service: unit file is empty: it has no Key=Value options"),
        ("# only a comment\n", "web.service: unit file is empty: it has no Key=Value options"),
        ("[Unit]\n[Service]\n", "web.service: unit file is empty: it has no Key=Value options"),
    ],
)
def test_errors_name_the_file_and_line(text: str, message: str) -> None:
    with pytest.raises(UnitFileError) as caught:
        parse_unit_file(text, source="web.service")
    assert str(caught.value) == message


def test_error_carries_its_parts() -> None:
    with pytest.raises(UnitFileError) as caught:
        parse_unit_file("[Unit]\nbad\n", source="a.service")
    assert (caught.value.source, caught.value.line) == ("a.service", 2)
    assert caught.value.reason.startswith("expected")


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        ("Description=" + "x" * (2047 - 12), True),
        ("Description=" + "x" * (2048 - 12), False),
        ("Description=" + "x" * (2047 - 12) + "\r", True),
        # The limit counts bytes, not characters.
        ("Description=" + "é" * 1017, True),
        ("Description=" + "é" * 1018, False),
        ("# " + "x" * 3000, False),
    ],
)
def test_lines_systemd_would_truncate_are_refused(line: str, ok: bool) -> None:
    text = f"[Unit]\n{line}\nAfter=x.service\n"
    if ok:
        assert parse_unit_file(text).values("Unit", "After") == ["x.service"]
        return
    with pytest.raises(UnitFileError, match=r"^u:2: line too long \(\d+ bytes; the limit is 2047"):
        parse_unit_file(text, source="u")


# ---------------------------------------------------------------------------------------------
# Canonical form and hash


@pytest.mark.parametrize(
    ("unit_file", "text"),
    [
        (unit(), ""),
        (unit(("Unit", "Description", "Foo")), "[Unit]\nDescription=Foo\n"),
        (
            unit(("Unit", "Description", "Foo"), ("Unit", "Description", "Bar")),
            "[Unit]\nDescription=Foo\nDescription=Bar\n",
        ),
        (
            unit(
                ("Unit", "Description", "Foo"),
                ("Service", "ExecStart", "/usr/bin/sleep infinity"),
                ("Unit", "BindsTo", "bar.service"),
                ("X-Foo", "Bar", "baz"),
                ("Service", "ExecStop", "/usr/bin/sleep 1"),
            ),
            "[Unit]\nDescription=Foo\nBindsTo=bar.service\n\n"
            "[Service]\nExecStart=/usr/bin/sleep infinity\nExecStop=/usr/bin/sleep 1\n\n"
            "[X-Foo]\nBar=baz\n",
        ),
        (unit(("Service", "ExecStart", "")), "[Service]\nExecStart=\n"),
    ],
)
def test_serialization_groups_sections_in_first_seen_order(unit_file: UnitFile, text: str) -> None:
    assert unit_file.serialize() == text


def test_the_hash_is_the_sha1_of_the_canonical_text() -> None:
    canonical = "[Unit]\nDescription=web\n\n[Service]\nExecStart=/usr/bin/sleep 1000\n"
    parsed = parse_unit_file(
        "# web server\n[Unit]\nDescription = web\n[Service]\n  ExecStart=/usr/bin/sleep 1000  \n"
    )
    assert parsed.serialize() == canonical
    assert parsed.hash == hashlib.sha1(canonical.encode()).hexdigest()
    assert len(parsed.hash) == 40
    assert parsed.short_hash == parsed.hash[:7]


def test_the_hash_matches_fleets() -> None:
    # The value fleet's own unit test expects for this unit.
    parsed = parse_unit_file("[Service]\nExecStart=/bin/sleep 100\n")
    assert parsed.hash == "1c6fb6f3684bafb0c173d8b8b957ceff031180c1"
    assert parsed.short_hash == "1c6fb6f"


def test_continued_lines_hash_with_their_backslashes() -> None:
    parsed = parse_unit_file("[Service]\nExecStart=/bin/echo a \\\n    b\n")
    canonical = "[Service]\nExecStart=/bin/echo a \\\n    b\n"
    assert parsed.serialize() == canonical
    assert parsed.hash == hashlib.sha1(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    "text",
    [
        "[Unit]\nDescription=x\n\n[Service]\nExecStart=/bin/true\nExecStart=/bin/false\n",
        '[Service]\nExecStart=echo \\\n  "pi\\\n  ng"\n',
        "[Service]\nA=foo \\\n\nB=2\n",
        '[X-Fleet]\nMachineMetadata="a=b" "c=d"\nConflicts=x* y*\n',
    ],
)
def test_parsing_the_canonical_text_gives_the_same_unit(text: str) -> None:
    parsed = parse_unit_file(text)
    assert parse_unit_file(parsed.serialize()) == parsed


_SAFE = string.ascii_letters + string.digits + " !\"$%&'()*+,-./:<>?@^_`{|}~é☃"
_section_names = st.text(alphabet=_SAFE + "[=#;", min_size=1, max_size=8)
_option_names = st.text(alphabet=_SAFE + "[]#;", min_size=1, max_size=8).filter(
    lambda name: name == name.strip(GO_WHITESPACE) and name[0] not in "#;["
)
_values = st.text(alphabet=_SAFE + "=#;[]\\", max_size=16).filter(
    lambda value: value == value.strip(GO_WHITESPACE) and not value.endswith("\\")
)
_options = st.builds(UnitOption, _section_names, _option_names, _values)


@given(st.lists(_options, min_size=1, max_size=8))
def test_any_unit_survives_serialize_then_parse(generated: list[UnitOption]) -> None:
    original = UnitFile(tuple(generated))
    # Parsing groups options by section, as the canonical text does.
    order = list(dict.fromkeys(option.section for option in original.options))
    grouped = sorted(original.options, key=lambda option: order.index(option.section))
    assert parse_unit_file(original.serialize()).options == tuple(grouped)


@given(st.lists(st.text(alphabet=_SAFE + "#;[", max_size=10), min_size=2, max_size=4))
def test_continued_values_survive_serialize_then_parse(parts: list[str]) -> None:
    value = "\\\n".join(parts)
    if value != value.strip(GO_WHITESPACE) or not parts[-1].strip(GO_WHITESPACE):
        return
    original = unit(("Service", "ExecStart", value))
    assert parse_unit_file(original.serialize()) == original


# ---------------------------------------------------------------------------------------------
# Access and the API's JSON shape


def test_values_and_sections_are_looked_up_by_name() -> None:
    parsed = parse_unit_file("[Service]\nExecStart=a\nExecStart=b\nType=simple\n")
    assert parsed.values("Service", "ExecStart") == ["a", "b"]
    assert parsed.values("Service", "Missing") == []
    assert parsed.values("Unit", "ExecStart") == []
    assert parsed.has_section("Service")
    assert not parsed.has_section("X-Fleet")


def test_the_json_shape_round_trips() -> None:
    json_options = [
        {"section": "Unit", "name": "Description", "value": "web"},
        {"section": "Service", "name": "ExecStart", "value": "/bin/true"},
    ]
    parsed = UnitFile.from_options(json_options)
    assert parsed == unit(("Unit", "Description", "web"), ("Service", "ExecStart", "/bin/true"))
    assert parsed.to_options() == json_options


@pytest.mark.parametrize(
    "bad",
    [
        {"section": "Unit", "name": "Description"},
        {"section": "Unit", "name": "Description", "value": 3},
        {"section": "Unit", "name": "Description", "value": "\ud800"},
        ["Unit", "Description", "x"],
        "Unit",
    ],
)
def test_malformed_json_options_are_refused(bad: object) -> None:
    good = {"section": "Unit", "name": "Description", "value": "x"}
    with pytest.raises(
        UnitFileError, match=r'^web.service: option 2 must be an object with text "'
    ):
        UnitFile.from_options([good, bad], source="web.service")  # type: ignore[list-item]


# ---------------------------------------------------------------------------------------------
# [X-Fleet] requirements


def test_a_unit_without_x_fleet_has_no_requirements() -> None:
    parsed = parse_unit_file("[Service]\nExecStart=/bin/true\n")
    assert requirements(parsed, parse_unit_name("web.service")) == Requirements("web.service")


@pytest.mark.parametrize(
    ("fleet_lines", "machine_id"),
    [
        ("MachineID=123\n", "123"),
        ('MachineID="123" "456"\n', "123"),
        ("MachineID=123\nMachineID=456\n", "123"),
        ("X-ConditionMachineID=456\n", "456"),
        ("X-ConditionMachineID=456\nMachineID=123\n", "123"),
        ("MachineID=123\nX-ConditionMachineID=456\n", "123"),
        ("X-ConditionMachineBootID=789\n", "789"),
        ("X-ConditionMachineBootID=789\nX-ConditionMachineID=456\n", "456"),
        ("Other=1\n", None),
    ],
)
def test_the_first_machine_id_wins(fleet_lines: str, machine_id: str | None) -> None:
    assert fleet_requirements(fleet_lines).machine_id == machine_id


@pytest.mark.parametrize(
    ("fleet_lines", "field", "expected"),
    [
        ("MachineOf=db.service\n", "machine_of", ("db.service",)),
        ('MachineOf="a.service" "b.service"\n', "machine_of", ("a.service", "b.service")),
        (
            "MachineOf=a.service\nX-ConditionMachineOf=b.service\n",
            "machine_of",
            ("b.service", "a.service"),
        ),
        ("Conflicts=web*\n", "conflicts", ("web*",)),
        ("Conflicts=a.service  b.service\n", "conflicts", ("a.service", "b.service")),
        ('Conflicts="a.service b.service" "c*"\n', "conflicts", ("a.service", "b.service", "c*")),
        ("Conflicts=a*\nX-Conflicts=b*\n", "conflicts", ("b*", "a*")),
        ("Replaces=old.service\n", "replaces", ("old.service",)),
        ('Replaces="old.service" "older.service"\n', "replaces", ("old.service", "older.service")),
    ],
)
def test_list_options_accumulate_every_value(
    fleet_lines: str, field: str, expected: tuple[str, ...]
) -> None:
    assert getattr(fleet_requirements(fleet_lines), field) == expected


@pytest.mark.parametrize(
    ("fleet_lines", "metadata"),
    [
        ("MachineMetadata=foo=bar\n", ["foo=bar"]),
        ('MachineMetadata="foo=bar" "foo=baz"\n', ["foo=bar|baz"]),
        (
            'MachineMetadata="region=us-east-1" "diskType=SSD"\n',
            ["diskType=SSD", "region=us-east-1"],
        ),
        ("MachineMetadata=foo=bar\nX-ConditionMachineMetadata=foo=asdf\n", ["foo=asdf|bar"]),
        (
            "MachineMetadata=oh=yeah\nMachineMetadata=whynot=zoidberg\n"
            'X-ConditionMachineMetadata=oh=no\nX-ConditionMachineMetadata="one=abc" "two=def"\n',
            ["oh=no|yeah", "one=abc", "two=def", "whynot=zoidberg"],
        ),
        # An empty token (an empty value, two spaces in the quoted form) asks for nothing.
        ('MachineMetadata=\nMachineMetadata="a=b"  "c=d"\n', ["a=b", "c=d"]),
        # Only `=` on one key is ORed; the other operators each hold on their own.
        (
            'MachineMetadata="disk>=100" "disk<=500" "region!=east" "region!=west"\n',
            ["disk<=500", "disk>=100", "region!=east", "region!=west"],
        ),
        ("MachineMetadata=disk>100\nMachineMetadata=disk>100\n", ["disk>100"]),
        ("MachineMetadata=size<-1.5\n", ["size<-1.5"]),
        ("MachineMetadata=a=!b\n", ["a=!b"]),
    ],
)
def test_metadata_clauses(fleet_lines: str, metadata: list[str]) -> None:
    assert [str(clause) for clause in fleet_requirements(fleet_lines).metadata] == metadata


@pytest.mark.parametrize(
    ("fleet_lines", "message"),
    [
        # fleet ignored these silently, so the unit ran anywhere; we refuse them.
        ("MachineMetadata=disk>=\n", 'MachineMetadata "disk>=": character 7: a number must follow'),
        ("MachineMetadata=>=5\n", "MachineMetadata \">=5\": character 1: unexpected '>'"),
        ("MachineMetadata=ram<=abc\n", "character 6: 'abc' is not a number"),
        ("MachineMetadata=a<<3\n", "\"a<<3\": character 3: unexpected '<'"),
        ("MachineMetadata=foo=\n", "character 5: a value must follow '='"),
        ("MachineMetadata==asdf\n", "character 1: unexpected '='"),
        ("MachineMetadata=foo=asdf=WHAT\n", "character 9: unexpected '='"),
        ("MachineMetadata=novalue\n", "character 8: nothing after the key 'novalue'"),
        ("MachineMetadata=a b=c\n", "character 2: unexpected ' ' after the key 'a'"),
        ("MachineMetadata=a!b\n", "character 2: unexpected '!'"),
        ('MachineMetadata="a=b" "c= d"\n', '"c= d": character 3: a value cannot start or end'),
        (
            "X-ConditionMachineMetadata=disk>1e3\n",
            "X-ConditionMachineMetadata \"disk>1e3\": character 6: '1e3' is not a number",
        ),
    ],
)
def test_malformed_metadata_is_refused_naming_unit_option_and_position(
    fleet_lines: str, message: str
) -> None:
    with pytest.raises(UnitFileError) as caught:
        fleet_requirements(fleet_lines)
    assert str(caught.value).startswith("web.service: ")
    assert message in str(caught.value)


def test_a_template_leaves_metadata_with_its_instance_to_the_instance() -> None:
    text = "[X-Fleet]\nMachineMetadata=disk>=%i\nMachineMetadata=region=eu\n"
    template = requirements(parse_unit_file(text), parse_unit_name("big@.service"))
    assert [str(clause) for clause in template.metadata] == ["region=eu"]
    instance = requirements(parse_unit_file(text), parse_unit_name("big@100.service"))
    assert [str(clause) for clause in instance.metadata] == ["disk>=100", "region=eu"]
    with pytest.raises(UnitFileError, match=r"big@x\.service: .*'x' is not a number"):
        requirements(parse_unit_file(text), parse_unit_name("big@x.service"))


@pytest.mark.parametrize(
    ("fleet_lines", "is_global"),
    [
        ("Global=true\n", True),
        ("Global=TRUE\n", True),
        ("Global=True\n", True),
        ("Global=yes\n", True),
        ("Global=1\n", True),
        ("Global=on\n", True),
        ("Global=t\n", True),
        ('Global="true"\n', True),
        ("Global=false\n", False),
        ("Global=no\n", False),
        ("Global=0\n", False),
        ("Global=what\n", False),
        ("Global=\n", False),
        ("X-Global=true\n", False),
        ("global=true\n", False),
        ("Global=true\nGlobal=false\n", False),
        ("Global=false\nGlobal=true\n", True),
    ],
)
def test_global_takes_the_last_value(fleet_lines: str, is_global: bool) -> None:
    assert fleet_requirements(fleet_lines).is_global is is_global


def test_global_outside_x_fleet_is_ignored() -> None:
    parsed = parse_unit_file("[Service]\nGlobal=true\n")
    assert not requirements(parsed, parse_unit_name("a.service")).is_global


@pytest.mark.parametrize(
    ("name", "machine_of", "conflicts", "metadata"),
    [
        ("ssh@2.service", "ssh-agent@2.service", ("ssh@2-old*", "ssh@2.service"), "ssh"),
        ("test.service", "test-agent@.service", ("test-old*", "test.service"), "test"),
    ],
)
def test_specifiers_are_replaced_in_x_fleet_values(
    name: str, machine_of: str, conflicts: tuple[str, ...], metadata: str
) -> None:
    fleet_lines = "MachineOf=%p-agent@%i.service\nConflicts=%N-old* %n\nMachineMetadata=role=%p\n"
    found = fleet_requirements(fleet_lines, name=name)
    assert found.machine_of == (machine_of,)
    assert found.conflicts == conflicts
    assert [str(clause) for clause in found.metadata] == [f"role={metadata}"]


def test_specifiers_are_left_alone_outside_x_fleet() -> None:
    parsed = parse_unit_file("[Service]\nExecStart=/bin/echo %n\n")
    assert parsed.values("Service", "ExecStart") == ["/bin/echo %n"]


@pytest.mark.parametrize(
    ("fleet_lines", "message"),
    [
        ("MachineID=a\nMachineOf=b.service\n", "MachineID cannot be used with Peers"),
        ("MachineID=a\nConflicts=b*\n", "MachineID cannot be used with Conflicts"),
        ("MachineID=a\nGlobal=true\n", "MachineID cannot be used with Global"),
        ("MachineID=a\nReplaces=b.service\n", "MachineID cannot be used with Replaces"),
        (
            "X-ConditionMachineID=a\nX-ConditionMachineOf=b.service\n",
            "MachineID cannot be used with Peers",
        ),
        ("Global=yes\nMachineOf=b.service\n", "Global cannot be used with Peers"),
        ("Global=true\nReplaces=b.service\n", "Global cannot be used with Replaces"),
        ("Conflicts=a*\nReplaces=b.service\n", "Conflicts cannot be used with Replaces"),
        (
            "MachineOf=db.service\nConflicts=db*\n",
            'unresolvable requirements: peer "db.service" matches conflict "db*"',
        ),
        (
            "MachineOf=db.service\nReplaces=db.service\n",
            'unresolvable requirements: peer "db.service" matches replace "db.service"',
        ),
    ],
)
def test_combinations_fleet_refuses_are_refused(fleet_lines: str, message: str) -> None:
    with pytest.raises(UnitFileError) as caught:
        fleet_requirements(fleet_lines)
    assert str(caught.value) == f"web.service: {message}"


@pytest.mark.parametrize(
    "fleet_lines",
    [
        "Global=true\nConflicts=web*\nMachineMetadata=role=web\n",
        "Global=false\nMachineID=abc\n",
        "MachineOf=db.service\nConflicts=cache*\n",
        "MachineOf=db.service\nReplaces=old*\n",
        "MachineID=abc\nMachineMetadata=role=web\n",
    ],
)
def test_combinations_fleet_allows_are_allowed(fleet_lines: str) -> None:
    fleet_requirements(fleet_lines)


@pytest.mark.parametrize(
    ("machine_metadata", "matches"),
    [
        ({"region": "us-east", "disk": "ssd"}, True),
        ({"region": "us-west", "disk": "ssd", "extra": "x"}, True),
        ({"region": "eu", "disk": "ssd"}, False),
        ({"region": "us-east"}, False),
        ({"region": "US-EAST", "disk": "ssd"}, False),
        ({}, False),
    ],
)
def test_metadata_ors_values_and_ands_keys(machine_metadata: dict[str, str], matches: bool) -> None:
    found = fleet_requirements('MachineMetadata="region=us-east" "region=us-west" "disk=ssd"\n')
    assert found.metadata_matches(machine_metadata) is matches


def test_no_metadata_matches_any_machine() -> None:
    assert Requirements("a.service").metadata_matches({})


@pytest.mark.parametrize(
    ("machine_metadata", "mismatch"),
    [
        ({"disk": "100", "region": "west"}, None),
        ({"disk": "250.5"}, None),  # a machine without region is not in region east
        ({"disk": "99.99", "region": "west"}, ("disk>=100", "has disk=99.99")),
        ({"region": "west"}, ("disk>=100", "has no disk")),
        ({"disk": "ssd"}, ("disk>=100", "has disk=ssd, not a number")),
        ({"disk": "1e3"}, ("disk>=100", "has disk=1e3, not a number")),
        ({"disk": "100", "region": "east"}, ("region!=east", "has region=east")),
    ],
)
def test_metadata_operators_say_which_clause_fails_and_why(
    machine_metadata: dict[str, str], mismatch: tuple[str, str] | None
) -> None:
    found = fleet_requirements('MachineMetadata="disk>=100" "region!=east"\n')
    got = found.metadata_mismatch(machine_metadata)
    assert (None if got is None else (str(got[0]), got[1])) == mismatch
    assert found.metadata_matches(machine_metadata) is (mismatch is None)


def test_conflicts_are_checked_in_both_directions() -> None:
    web = Requirements("web.service", conflicts=("cache*",))
    cache = Requirements("cache.service")
    assert web.conflicts_with("cache.service", cache)
    assert cache.conflicts_with("web.service", web)
    assert not web.conflicts_with("db.service", Requirements("db.service"))


def test_a_unit_never_conflicts_with_itself() -> None:
    web = Requirements("web@1.service", conflicts=("web@*.service",))
    assert not web.conflicts_with("web@1.service", web)
    assert web.conflicts_with("web@2.service", Requirements("web@2.service"))


@pytest.mark.parametrize(
    ("required", "machine_id", "matches"),
    [
        (None, "0123456789abcdef0123456789abcdef", True),
        ("0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef", True),
        ("01234567", "0123456789abcdef0123456789abcdef", True),
        ("0123456", "0123456789abcdef0123456789abcdef", False),
        ("0123456789", "0123456789abcdef0123456789abcdef", False),
        ("fedcba98", "0123456789abcdef0123456789abcdef", False),
    ],
)
def test_machine_id_matches_the_full_or_short_id(
    required: str | None, machine_id: str, matches: bool
) -> None:
    assert Requirements("a.service", machine_id=required).machine_id_matches(machine_id) is matches


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        ('"bar" "ping" "pong"', ["bar", "ping", "pong"]),
        ('"bar"', ["bar"]),
        ("", [""]),
        ('""', [""]),
        ('"bar', ['"bar']),
        ('bar"', ['bar"']),
        ("bar baz", ["bar baz"]),
        ('"bar" "', ["bar", ""]),
        ('"a"  "b"', ["a", "", "b"]),
        ('"foo\\"bar"', ["foo\\bar"]),
    ],
)
def test_multivalue_lines_split_like_fleet(value: str, tokens: list[str]) -> None:
    assert split_multivalue(value) == tokens


# ---------------------------------------------------------------------------------------------
# Go path.Match globs


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("abc", "abc", True),
        ("*", "abc", True),
        ("*c", "abc", True),
        ("a*", "a", True),
        ("a*", "abc", True),
        ("a*", "ab/c", False),
        ("a*/b", "abc/b", True),
        ("a*/b", "a/c/b", False),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
        ("a*b?c*x", "abxbbxdbxebxczzx", True),
        ("a*b?c*x", "abxbbxdbxebxczzy", False),
        ("ab[c]", "abc", True),
        ("ab[b-d]", "abc", True),
        ("ab[e-g]", "abc", False),
        ("ab[^c]", "abc", False),
        ("ab[^b-d]", "abc", False),
        ("ab[^e-g]", "abc", True),
        ("a\\*b", "a*b", True),
        ("a\\*b", "ab", False),
        ("a?b", "a☺b", True),
        ("a[^a]b", "a☺b", True),
        ("a???b", "a☺b", False),
        ("[a-ζ]*", "\u03b1", True),
        ("*[a-ζ]", "A", False),
        ("a?b", "a/b", False),
        ("a*b", "a/b", False),
        ("a[/]b", "a/b", True),
        ("[\\]a]", "]", True),
        ("[\\-]", "-", True),
        ("[x\\-]", "-", True),
        ("[x\\-]", "z", False),
        ("[z-a]", "m", False),
        ("*x", "xxx", True),
        ("web@*.service", "web@1.service", True),
        ("web@*.service", "web@.service", True),
        ("*.service", "web.socket", False),
        ("", "", True),
        ("", "a", False),
        # Go's star takes the first match of the next chunk and never backtracks.
        ("*[^x][^x]*z", "ab/z", False),
    ],
)
def test_globs_follow_go_path_match(pattern: str, name: str, matches: bool) -> None:
    assert glob_match(pattern, name) is matches


@pytest.mark.parametrize(
    "pattern",
    ["[]a]", "[-]", "[x-]", "[-x]", "\\", "a\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "a/b[", "*["],
)
@pytest.mark.parametrize("name", ["", "a", "]", "-", "x", "ab", "a/b"])
def test_malformed_globs_match_nothing(pattern: str, name: str) -> None:
    assert not glob_match(pattern, name)


def _as_regex(pattern: str) -> str:
    return "".join({"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c)) for c in pattern)


@given(st.text(alphabet="ab*?", max_size=8), st.text(alphabet="ab/", max_size=8))
def test_stars_and_question_marks_agree_with_a_regex(pattern: str, name: str) -> None:
    # Without '/' or classes in the pattern, Go's no-backtracking search finds every match.
    assert glob_match(pattern, name) is bool(re.fullmatch(_as_regex(pattern), name))


@given(st.text(max_size=12), st.text(max_size=12))
def test_an_escaped_name_matches_only_itself(text: str, other: str) -> None:
    pattern = "".join("\\" + character for character in text)
    assert glob_match(pattern, text)
    assert glob_match(pattern, other) is (other == text)


def test_the_metadata_example_unit_reads_as_documented() -> None:
    example = Path(__file__).resolve().parents[2] / "examples/big-disk.service"
    found = requirements(parse_unit_file(example.read_text()), parse_unit_name(example.name))
    assert [str(clause) for clause in found.metadata] == ["disk>=100", "region!=east"]
    assert found.metadata_matches({"disk": "500", "region": "west"})
    assert not found.metadata_matches({"disk": "500", "region": "east"})
