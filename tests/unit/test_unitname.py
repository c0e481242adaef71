"""Unit names are validated with fleet's rules and messages, and can never escape a directory."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.unitname import (
    UNIT_TYPES,
    UnitName,
    UnitNameError,
    go_quote,
    mangle_name,
    parse_unit_name,
)


@pytest.mark.parametrize(
    ("name", "prefix", "instance", "suffix", "without_suffix", "template"),
    [
        ("foo.service", "foo", None, "service", "foo", None),
        ("foo@.service", "foo", "", "service", "foo@", None),
        ("foo@bar.service", "foo", "bar", "service", "foo@bar", "foo@.service"),
        # The prefix ends at the first '@', the instance at the last '.'.
        ("foo@bar@baz.service", "foo", "bar@baz", "service", "foo@bar@baz", "foo@.service"),
        ("foo.1@.service", "foo.1", "", "service", "foo.1@", None),
        ("foo.1@2.service", "foo.1", "2", "service", "foo.1@2", "foo.1@.service"),
        ("ssh@.socket", "ssh", "", "socket", "ssh@", None),
        ("ssh@1.socket", "ssh", "1", "socket", "ssh@1", "ssh@.socket"),
        ("a:b_c-d\\x2d.mount", "a:b_c-d\\x2d", None, "mount", "a:b_c-d\\x2d", None),
        ("..service", ".", None, "service", ".", None),
    ],
)
def test_names_split_like_fleet(
    name: str,
    prefix: str,
    instance: str | None,
    suffix: str,
    without_suffix: str,
    template: str | None,
) -> None:
    parsed = parse_unit_name(name)
    assert parsed == UnitName(name, prefix, instance, suffix)
    assert parsed.without_suffix == without_suffix
    assert parsed.template == template
    assert str(parsed) == name


@pytest.mark.parametrize(
    ("name", "is_template", "is_instance"),
    [("foo.service", False, False), ("foo@.service", True, False), ("foo@1.service", False, True)],
)
def test_templates_and_instances_are_told_apart(
    name: str, is_template: bool, is_instance: bool
) -> None:
    parsed = parse_unit_name(name)
    assert (parsed.is_template, parsed.is_instance) == (is_template, is_instance)


@pytest.mark.parametrize("suffix", sorted(UNIT_TYPES))
def test_every_unit_type_is_accepted(suffix: str) -> None:
    assert parse_unit_name(f"foo.{suffix}").suffix == suffix


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "unit name cannot be empty"),
        ("a" * 249 + ".service", "unit name exceeds maximum length (256)"),
        # fleet counts bytes: 130 two-byte characters are too long before they are invalid.
        ("é" * 130 + ".service", "unit name exceeds maximum length (256)"),
        ("foo", 'unit name must contain "."'),
        ("foo.", 'unit name cannot end in "."'),
        ("foo.bar", 'invalid unit type: "bar"'),
        ("foo.Service", 'invalid unit type: "Service"'),
        ('foo.a"b', 'invalid unit type: "a\\"b"'),
        ("foo@.mount", 'invalid unit type for template: "mount"'),
        ("foo@bar.device", 'invalid unit type for template: "device"'),
        ("foo bar.service", "invalid character ' ' in unit name"),
        ("foo/bar.service", "invalid character '/' in unit name"),
        ("fü.service", "invalid character 'ü' in unit name"),
        ("foo\n.service", "invalid character '\\n' in unit name"),
        ("it's.service", "invalid character '\\'' in unit name"),
        ("nul\x00.service", "invalid character '\\x00' in unit name"),
        ("@foo.service", 'unit name cannot start in "@"'),
        ("@.service", 'unit name cannot start in "@"'),
    ],
)
def test_bad_names_get_fleets_message(name: str, message: str) -> None:
    with pytest.raises(UnitNameError) as caught:
        parse_unit_name(name)
    assert str(caught.value) == message


def test_the_length_limit_is_256_bytes_inclusive() -> None:
    assert parse_unit_name("a" * 248 + ".service").full.endswith(".service")
    with pytest.raises(UnitNameError, match="maximum length"):
        parse_unit_name("a" * 249 + ".service")


@pytest.mark.parametrize(
    "name",
    [
        ".",
        "..",
        "/",
        "../x.service",
        "../../etc/passwd",
        "a/b.service",
        "/etc/foo.service",
        "x/../y.service",
        "./foo.service",
        "foo.service/",
        "foo.service/..",
        "foo/.service",
        "..\\/x.service",
    ],
)
def test_path_like_names_are_refused(name: str) -> None:
    with pytest.raises(UnitNameError):
        parse_unit_name(name)


@given(st.text(alphabet="ab./@\\-", max_size=12))
def test_an_accepted_name_is_a_plain_file_name(name: str) -> None:
    try:
        parsed = parse_unit_name(name)
    except UnitNameError:
        return
    assert "/" not in parsed.full
    assert parsed.full not in {".", ".."}


@given(st.text(max_size=20), st.text(max_size=20), st.sampled_from(sorted(UNIT_TYPES)))
def test_a_name_containing_a_slash_is_never_accepted(head: str, tail: str, suffix: str) -> None:
    for name in (f"{head}/{tail}.{suffix}", f"{head}.{suffix}/{tail}", f"{head}/{tail}"):
        with pytest.raises(UnitNameError):
            parse_unit_name(name)


@given(
    st.text(alphabet=string.ascii_letters + string.digits + ":_-\\", min_size=1, max_size=20),
    st.sampled_from(sorted(UNIT_TYPES)),
)
def test_valid_names_round_trip(stem: str, suffix: str) -> None:
    parsed = parse_unit_name(f"{stem}.{suffix}")
    assert f"{parsed.without_suffix}.{parsed.suffix}" == parsed.full
    assert parsed.prefix == stem


@pytest.mark.parametrize(
    ("argument", "name"),
    [
        ("foo", "foo.service"),
        ("foo.service", "foo.service"),
        ("foo@1", "foo@1.service"),
        ("foo@.service", "foo@.service"),
        ("foo.socket", "foo.socket"),
        ("foo.timer", "foo.timer"),
        ("foo.automount", "foo.automount"),
        # fleetctl recognises fewer suffixes than the API accepts.
        ("foo.target", "foo.target.service"),
        ("foo.link", "foo.link.service"),
        # fleetctl takes the file name of a path (Go's path.Base).
        ("units/web.service", "web.service"),
        ("./units/web", "web.service"),
        ("units/web/", "web.service"),
        ("", ""),
    ],
)
def test_fleetctl_arguments_are_mangled_into_names(argument: str, name: str) -> None:
    assert mangle_name(argument) == name


@given(st.text(alphabet=string.ascii_letters + "@.", min_size=1, max_size=12))
def test_mangling_is_idempotent(argument: str) -> None:
    assert mangle_name(mangle_name(argument)) == mangle_name(argument)


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("tab\there", '"tab\\there"'),
        ("back\\slash", '"back\\\\slash"'),
        ("\x7f\u200b\U000e0001", '"\\x7f\\u200b\\U000e0001"'),
        ("snow☃", '"snow☃"'),
    ],
)
def test_messages_quote_like_go(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted
