"""Unit names are validated with fleet's rules and messages, narrowed to what a machine can manage
(systemd's length and types, no hidden names, none the machines ship), and can never escape a
directory."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from fleetd.unitname import (
    UNIT_TYPES,
    UnitName,
    UnitNameError,
    go_quote,
    looks_like_unit_file,
    machine_unit,
    mangle_name,
    parse_unit_name,
)

REPO = Path(__file__).resolve().parents[2]
IMAGE_UNIT_FILES = [
    path
    for tree in ("imagebuild/image-files", "imagebuild/rootfs-files", "flotilla/data/units")
    for path in (REPO / tree).rglob("*")
    if path.suffix in {".service", ".socket", ".timer", ".target", ".path", ".mount"}
    and "dracut" not in path.parts  # the initramfs' units never meet fleet's
]
# Units the image has that fleet may use a name of: none so far.
NOT_RESERVED: frozenset[str] = frozenset()


def image_manifest_units() -> set[str]:
    """Units the manifests mask, enable or disable."""
    found: set[str] = set()
    for manifest in ("imagebuild/image.yaml", "imagebuild/rootfs.yaml"):
        data = yaml.safe_load((REPO / manifest).read_text())
        for key in ("masked_units", "enable_units", "disable_units"):
            found |= set(data.get(key) or [])
    return found


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
        ("sock@.socket", "sock", "", "socket", "sock@", None),
        ("sock@1.socket", "sock", "1", "socket", "sock@1", "sock@.socket"),
        ("a:b_c-d\\x2d.mount", "a:b_c-d\\x2d", None, "mount", "a:b_c-d\\x2d", None),
        ("a..service", "a.", None, "service", "a.", None),
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
        ("a" * 248 + ".service", "unit name exceeds maximum length (255)"),
        # Bytes count: 130 two-byte characters are too long before they are invalid.
        ("é" * 130 + ".service", "unit name exceeds maximum length (255)"),
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
        # Ours: systemd knows no busname or snapshot units, and makes scopes only for processes.
        ("foo.busname", 'invalid unit type: "busname"'),
        ("foo.snapshot", 'invalid unit type: "snapshot"'),
        ("foo.scope", 'invalid unit type: "scope"'),
        # Ours: systemd skips hidden files, and so did the agent (a unit it could not unload).
        (".hidden.service", 'unit name cannot start in "."'),
        (".service", 'unit name cannot start in "."'),
        ("..service", 'unit name cannot start in "."'),
        (".x@1.service", 'unit name cannot start in "."'),
    ],
)
def test_bad_names_get_fleets_message(name: str, message: str) -> None:
    with pytest.raises(UnitNameError) as caught:
        parse_unit_name(name)
    assert str(caught.value) == message


def test_the_length_limit_is_systemds_255_bytes_suffix_included() -> None:
    # systemd refuses a name of 256 bytes (UNIT_NAME_MAX), and no file system takes one: fleet's
    # limit of 256 let a name through that the agent could never write.
    assert parse_unit_name("a" * 247 + ".service").full.endswith(".service")
    assert parse_unit_name("a" * 236 + "@" + "b" * 10 + ".service").is_instance
    for name in ("a" * 248 + ".service", "a" * 237 + "@" + "b" * 10 + ".service"):
        with pytest.raises(UnitNameError, match=r"maximum length \(255\)"):
            parse_unit_name(name)


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("fleetd.service", "fleetd itself"),
        ("fleetd.socket", "fleetd itself"),
        ("fleetd-backstop.service", "fleetd itself"),
        ("etcd.service", "the machine's etcd member"),
        ("ssh.service", "the SSH server"),
        ("ssh.socket", "the SSH server"),
        ("sshd.service", "the SSH server"),
        ("ssh-host-keys.service", "the SSH server"),
        ("dbus.service", "the system bus"),
        ("dbus.socket", "the system bus"),
        ("dbus-broker.service", "the system bus"),
        ("fstrim.timer", "one of Debian's units the machines mask"),
        ("systemd-journald.service", "part of systemd"),
        ("systemd-networkd.socket", "part of systemd"),
        ("flotilla-ssh-keys.service", "part of the Flotilla image"),
        ("flotilla-container-cleanup.service", "part of the Flotilla image"),
        ("podman.socket", "part of podman"),
        ("podman-auto-update.timer", "part of podman"),
        ("multi-user.target", "one of systemd's special units"),
        ("default.target", "one of systemd's special units"),
        ("-.slice", "one of systemd's special units"),
        ("system.slice", "one of systemd's special units"),
        ("getty@tty1.service", "one of systemd's special units"),
        ("user@1000.service", "one of systemd's special units"),
    ],
)
def test_names_the_machines_ship_are_reserved(name: str, owner: str) -> None:
    with pytest.raises(UnitNameError) as caught:
        parse_unit_name(name)
    assert str(caught.value) == (
        f'unit name "{name}" is reserved: the machines ship a unit of that name ({owner}),'
        " which a fleet unit would replace"
    )


@pytest.mark.parametrize(
    "name",
    [
        "etcd-backup.service",
        "myfleetd.service",
        "web-ssh.service",
        "sshfs@x.service",
        # ssh.socket's per-connection instances have names nobody can guess; the agent refuses
        # an instance of a template the machine has anyway (it asks systemd).
        "ssh@2.service",
        "systemd.service",  # systemd's units are systemd-*: this one is not systemd's
        "dbus2.service",
        "my-multi-user.target",
        "hello-web.service",
    ],
)
def test_names_near_a_reserved_one_are_accepted(name: str) -> None:
    assert parse_unit_name(name).full == name


def test_every_shipped_unit_of_the_image_is_reserved() -> None:
    """The image's own units (its files and its manifests) can never be a fleet unit's name."""
    shipped = {path.name for path in IMAGE_UNIT_FILES}
    shipped |= {"fleetd.service", *image_manifest_units()}
    assert shipped  # the globs found the files
    unreserved = sorted(name for name in shipped if machine_unit(name) is None)
    assert unreserved == sorted(NOT_RESERVED)


@pytest.mark.parametrize(
    ("name", "unit_file"),
    [
        ("web.service", True),
        (".hidden.service", True),  # an older agent may have written one: it is still cleaned up
        ("old.snapshot", True),
        ("x.scope", True),
        (".4kx9_q2z.partial", False),  # the agent's partial files
        (".web.service.partial", False),  # an older agent's
        ("README", False),
        (".service", False),
    ],
)
def test_which_files_in_the_units_directory_are_unit_files(name: str, unit_file: bool) -> None:
    assert looks_like_unit_file(name) is unit_file


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
    assume(machine_unit(f"{stem}.{suffix}") is None)
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
