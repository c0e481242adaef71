"""Fuzz: the unit name validator raises only UnitNameError, and accepts only names that systemd
accepts and that a machine can manage (Hypothesis).

`systemd_accepts` is systemd's unit_name_is_valid (src/basic/unit-name.c) for plain, template and
instance names, with unit_type_may_template, as systemd 252 (Debian bookworm) has them.
"""

from __future__ import annotations

import re
import string
import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from fleetd.systemd import UNIT_PATH_PREFIX, unit_name, unit_path
from fleetd.unitname import (
    RECOGNIZED_SUFFIXES,
    UNIT_TYPES,
    UnitNameError,
    mangle_name,
    parse_unit_name,
)

from .fuzzing import any_character, fuzz, soup

SYSTEMD_UNIT_NAME_MAX = 256  # counts the terminating NUL: a name has at most 255 bytes
SYSTEMD_VALID_CHARACTERS = frozenset(string.ascii_letters + string.digits + ":-_.\\")
SYSTEMD_UNIT_TYPES = frozenset(
    {"service", "mount", "swap", "socket", "target", "device"}
    | {"automount", "timer", "path", "slice", "scope"}
)
SYSTEMD_TEMPLATE_TYPES = frozenset({"service", "socket", "target", "timer", "path"})


def systemd_accepts(name: str) -> bool:
    """Whether systemd takes `name` as the name of a plain unit, a template or an instance."""
    size = len(name.encode("utf-8", "surrogatepass"))
    stem, dot, suffix = name.rpartition(".")
    if not 0 < size < SYSTEMD_UNIT_NAME_MAX or not dot or not stem:
        return False
    if suffix not in SYSTEMD_UNIT_TYPES or stem.startswith("@"):
        return False
    if not all(character in SYSTEMD_VALID_CHARACTERS | {"@"} for character in stem):
        return False
    return "@" not in stem or suffix in SYSTEMD_TEMPLATE_TYPES


def accepted(name: str) -> bool:
    try:
        parse_unit_name(name)
    except UnitNameError:
        return False
    return True


ALL_TYPES = sorted(UNIT_TYPES | SYSTEMD_UNIT_TYPES | {"busname", "snapshot", "link", "", "Service"})
_stems = st.text(st.sampled_from(sorted(SYSTEMD_VALID_CHARACTERS) + ["@"] * 8), max_size=20)
_odd_stems = soup([".", "@", "/", "..", "\\", "x", "-", " "], max_size=8)
_long_stems = st.builds(
    str.__add__,
    st.sampled_from(["", "@", ".", "a@", "a@b"]),
    st.integers(230, 260).map("a".__mul__),
)
names = st.one_of(
    st.builds(
        "{}.{}".format, st.one_of(_stems, _odd_stems, _long_stems), st.sampled_from(ALL_TYPES)
    ),
    st.text(any_character, max_size=12),
)


@fuzz(500)
@given(names)
def test_the_validator_raises_only_its_own_error(name: str) -> None:
    try:
        parsed = parse_unit_name(name)
    except UnitNameError as error:
        assert str(error)
        return
    instance = "" if parsed.instance is None else "@" + parsed.instance
    assert f"{parsed.prefix}{instance}.{parsed.suffix}" == parsed.full == name
    assert parsed.is_template + parsed.is_instance <= 1
    assert mangle_name(name) == name or parsed.suffix not in RECOGNIZED_SUFFIXES


@fuzz(300)
@given(st.one_of(names, st.text(any_character, max_size=12)))
def test_mangling_an_argument_never_raises(argument: str) -> None:
    mangled = mangle_name(argument)
    assert mangled == argument == "" or mangled.rpartition(".")[2] in RECOGNIZED_SUFFIXES


@fuzz(500)
@given(names)
@example("a" * 248 + ".service")  # 256 bytes: fleet's limit, one more than systemd's
@example(".service")  # systemd needs a name before the type
@example("a.snapshot")  # a type fleet knew and systemd has dropped
def test_an_accepted_name_is_one_systemd_accepts(name: str) -> None:
    if accepted(name):
        assert systemd_accepts(name)


@fuzz(100)
@given(names)
@example(".hidden.service")  # systemd and the agent skip hidden files in a unit directory
@example("a" * 248 + ".service")  # no file system takes a 256-byte file name
def test_an_accepted_name_is_a_file_name_the_agent_can_write_and_see(name: str) -> None:
    if not accepted(name):
        return
    assert not name.startswith(".")
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / name).write_text("[Service]\nExecStart=/bin/true\n")
        assert [path.name for path in Path(directory).iterdir()] == [name]


# Stems that start with "x": none of the names the machines ship starts so.
_plain_stems = st.builds(str.__add__, st.just("x"), _stems)


@fuzz(300)
@given(_plain_stems, st.sampled_from(sorted(UNIT_TYPES)))
def test_a_name_systemd_accepts_is_accepted(stem: str, suffix: str) -> None:
    name = f"{stem}.{suffix}"
    if systemd_accepts(name) and len(name) <= 200:
        assert accepted(name)


# What a bus path is made from: a name systemd knows, so text that has a UTF-8 form.
_bus_names = st.one_of(names, st.text(st.characters(codec="utf-8"), max_size=12)).filter(
    lambda name: name and not re.search("[\ud800-\udfff]", name)
)


@fuzz(300)
@given(_bus_names)
def test_a_bus_object_path_gives_back_its_unit_name(name: str) -> None:
    path = unit_path(name)
    assert re.fullmatch("[A-Za-z0-9_]+", path.removeprefix(UNIT_PATH_PREFIX))
    assert unit_name(path) == name


@fuzz(300)
@given(st.text(any_character, max_size=20), st.sampled_from(["", UNIT_PATH_PREFIX, "/org/"]))
def test_any_bus_object_path_gives_a_name_or_none(label: str, prefix: str) -> None:
    found = unit_name(prefix + label)
    assert found is None or isinstance(found, str)
