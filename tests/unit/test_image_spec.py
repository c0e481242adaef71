"""The image manifest is checked before any build work, and every mistake names its file and line.

Bad manifests are the shipped image.yaml with one edit; the expected line is found in the edited
text, so the tests follow the shipped file as it changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from flotilla.manifest import Manifest, ManifestError
from imagebuild.image_spec import DEFAULT_IMAGE_SPEC, ImageSpec, load_image_spec, parse_size
from imagebuild.layout import MIB

SHIPPED = DEFAULT_IMAGE_SPEC.read_text()
Edit = Callable[[str], str]


def swap(old: str, new: str) -> Edit:
    """Replace text that occurs exactly once in the manifest (so an edit never silently misses)."""

    def edit(text: str) -> str:
        assert text.count(old) == 1, f"{old!r} is not in the manifest exactly once"
        return text.replace(old, new)

    return edit


def replace_block(key: str, new: str) -> Edit:
    """Replace a top-level key and its indented lines with `new`."""

    def edit(text: str) -> str:
        lines = text.splitlines(keepends=True)
        start = lines.index(f"{key}:\n")
        end = start + 1
        while end < len(lines) and lines[end].startswith(" "):
            end += 1
        return "".join([*lines[:start], new, *lines[end:]])

    return edit


def line_of(text: str, start: str) -> int:
    """The 1-based number of the one line that starts with `start` (ignoring indentation)."""
    found = [n for n, line in enumerate(text.splitlines(), 1) if line.lstrip().startswith(start)]
    assert len(found) == 1, f"{start!r} starts {len(found)} lines"
    return found[0]


def write_manifest(directory: Path, text: str) -> Path:
    (directory / "rootfs.yaml").write_text("")  # only its existence is checked here
    path = directory / "image.yaml"
    path.write_text(text)
    return path


def load_edited(directory: Path, *edits: Edit) -> ImageSpec:
    text = SHIPPED
    for edit in edits:
        text = edit(text)
    return load_image_spec(write_manifest(directory, text))


def test_the_shipped_manifest_loads_and_renders_the_cmdline() -> None:
    spec = load_image_spec()
    root = spec.layout.by_label("ROOT").uuid
    assert f"root=PARTUUID={root}" in spec.cmdline.split()
    # The slot's /usr arguments are imagebuild's, added per slot (test_image_boot.py).
    assert not [word for word in spec.cmdline.split() if word.startswith(("mount.usr", "usrhash"))]
    assert "{{" not in spec.cmdline and "}}" not in spec.cmdline
    assert spec.cmdline == " ".join(spec.cmdline.split())


def test_the_shipped_partition_uuids_are_the_ones_written_in_the_manifest() -> None:
    spec = load_image_spec()
    for part in spec.layout.partitions:
        assert f"uuid: {part.uuid}" in SHIPPED
    assert [p.label for p in spec.layout.partitions] == [
        "EFI-SYSTEM",
        "USR-A",
        "USR-B",
        "OEM",
        "USR-A-VERITY",
        "USR-B-VERITY",
        "ROOT",
    ]


@pytest.mark.parametrize("key", ["packages", "kernel_modules"])
def test_item_lines_point_at_each_list_item(key: str) -> None:
    spec = load_image_spec()
    item_lines = spec.package_lines if key == "packages" else spec.module_lines
    lines = SHIPPED.splitlines()
    assert item_lines
    for item, number in item_lines.items():
        assert lines[number - 1].split("#")[0].strip() == f"- {item}"


def test_a_partition_without_a_uuid_gets_a_stable_one(tmp_path: Path) -> None:
    drop_oem_uuid = swap("    uuid: 5b1fb2a1-0b4c-4d0e-8f2b-2a3c9d6e0a06\n", "")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = load_edited(tmp_path / "a", drop_oem_uuid).layout.by_label("OEM").uuid
    second = load_edited(tmp_path / "b", drop_oem_uuid).layout.by_label("OEM").uuid
    assert first == second == str(uuid.UUID(first))
    assert first not in SHIPPED


def test_a_disk_size_that_fits_is_used(tmp_path: Path) -> None:
    with_disk_size = swap("partitions:\n", "disk_size: 16GiB\npartitions:\n")
    assert load_edited(tmp_path, with_disk_size).layout.size == 16 * 1024 * MIB


# (edit of the shipped manifest, start of the offending line after the edit, expected message)
BAD_MANIFESTS = {
    "unknown-top-level-key": (
        swap('version: "0.1.0"\n', 'version: "0.1.0"\ncolour: red\n'),
        "colour: red",
        "colour: unknown key",
    ),
    "unknown-partition-key": (
        swap("    size: 256MiB\n", "    size: 256MiB\n    fstype: ext4\n"),
        "fstype: ext4",
        "partitions.3.fstype: unknown key",
    ),
    "unknown-initramfs-key": (
        swap("  compress: zstd\n", "  compress: zstd\n  hostonly: true\n"),
        "hostonly: true",
        "initramfs.hostonly: unknown key",
    ),
    "packages-as-a-string": (
        replace_block("packages", "packages: podman\n"),
        "packages: podman",
        "packages: must be a list, not str",
    ),
    "kernel-module-not-a-string": (
        swap("  - crypto/*\n", "  - 42\n"),
        "- 42",
        "kernel_modules.1: must be a string, not int",
    ),
    "size-that-does-not-parse": (
        swap("    size: 256MiB\n", "    size: 2 gigs\n"),
        "size: 2 gigs",
        "partitions.3.size: '2 gigs' is not a size",
    ),
    "unknown-partition-type": (
        swap("    type: oem\n", "    type: swap\n"),
        "type: swap",
        "partitions.3.type: unknown partition type 'swap'",
    ),
    "partition-type-not-a-string": (
        swap("    type: oem\n", "    type: [oem]\n"),
        "type: [oem]",
        "partitions.3.type: must be a string, not list",
    ),
    "partitions-do-not-fit-the-disk-size": (
        swap("partitions:\n", "disk_size: 1GiB\npartitions:\n"),
        "partitions:",
        "more than disk_size 1 GiB",
    ),
    "duplicate-partition-label": (
        swap("  - label: OEM\n", "  - label: USR-B\n"),
        "partitions:",
        "label 'USR-B' is used twice",
    ),
    "cmdline-names-an-unknown-partition": (
        swap("partitions['ROOT'].uuid", "partitions['NOPE'].uuid"),
        "cmdline:",
        "cmdline: template:",
    ),
    "cmdline-that-does-not-parse": (
        swap("{{ partitions['ROOT'].uuid }}", "{{ partitions['ROOT'].uuid"),
        "cmdline:",
        "cmdline: template:",
    ),
    "cmdline-that-pins-usr-itself": (
        swap("  ignition.platform.id=qemu\n", "  ignition.platform.id=qemu usrhash=00\n"),
        "cmdline:",
        "cmdline: usrhash=00: imagebuild writes each slot's /usr arguments",
    ),
    "bad-partition-uuid": (
        swap("    uuid: 5b1fb2a1-0b4c-4d0e-8f2b-2a3c9d6e0a06\n", "    uuid: not-a-uuid\n"),
        "uuid: not-a-uuid",
        "partitions.3.uuid: 'not-a-uuid' is not a UUID",
    ),
    "bad-disk-guid": (
        swap("disk_guid: 00000000-0000-0000-0000-000000000001\n", "disk_guid: nope\n"),
        "disk_guid: nope",
        "disk_guid: 'nope' is not a UUID",
    ),
    "user-with-a-bad-name": (
        swap("  - name: core\n", "  - name: Core_1\n"),
        "- name: Core_1",
        "users.0.name: 'Core_1' is not a valid user name",
    ),
    "user-name-with-a-trailing-newline": (
        swap("  - name: core\n", '  - name: "core\\n"\n'),
        '- name: "core\\n"',
        "users.0.name: 'core\\n' is not a valid user name",
    ),
    "image-name-with-capitals": (
        swap("name: flotilla\n", "name: Flotilla\n"),
        "name: Flotilla",
        "name: 'Flotilla' must be lower-case",
    ),
    "missing-top-level-key": (
        swap('version: "0.1.0"\n', ""),
        "name: flotilla",  # the top-level mapping starts at its first key
        "(top level): missing key 'version'",
    ),
    "missing-partition-key": (
        swap("    size: 256MiB\n", ""),
        "- label: OEM",
        "partitions.3: missing key 'size'",
    ),
    "missing-rootfs-manifest": (
        swap("rootfs: rootfs.yaml\n", "rootfs: elsewhere.yaml\n"),
        "rootfs: elsewhere.yaml",
        "rootfs: no rootfs manifest at",
    ),
}


@pytest.mark.parametrize(("edit", "start", "message"), BAD_MANIFESTS.values(), ids=BAD_MANIFESTS)
def test_bad_manifests_name_the_file_and_line_of_the_mistake(
    tmp_path: Path, edit: Edit, start: str, message: str
) -> None:
    text = edit(SHIPPED)
    path = write_manifest(tmp_path, text)
    with pytest.raises(ManifestError) as caught:
        load_image_spec(path)
    error = str(caught.value)
    assert error.startswith(f"{path}:{line_of(text, start)}: "), error
    assert message in error


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just\n- a list\n", ":1: expected a mapping of settings at the top level"),
        ("", ":1: expected a mapping of settings at the top level"),
        ("name: [unclosed\n", ": cannot read manifest"),
    ],
)
def test_files_that_are_not_a_yaml_mapping_are_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write_manifest(tmp_path, text)
    with pytest.raises(ManifestError) as caught:
        load_image_spec(path)
    assert str(caught.value).startswith(f"{path}{message}")


SIZE_MANIFEST = Manifest(Path("image.yaml"), {}, {("size",): 7})


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("512MiB", 512 * MIB),
        ("512M", 512 * MIB),
        (" 16 MiB ", 16 * MIB),
        ("2GiB", 2048 * MIB),
        ("2G", 2048 * MIB),
        ("1TiB", 1024 * 1024 * MIB),
        ("64KiB", 64 * 1024),
        ("4096", 4096),
        (4096, 4096),
    ],
)
def test_sizes_parse_with_binary_units(value: object, size: int) -> None:
    assert parse_size(SIZE_MANIFEST, ("size",), value) == size


@pytest.mark.parametrize("value", ["2 gigs", "1.5GiB", "2gib", "MiB", "0", "0MiB", 0, -1, True])
def test_sizes_that_do_not_parse_are_refused_at_their_line(value: object) -> None:
    with pytest.raises(ManifestError, match=r"^image\.yaml:7: size: .* is not a size"):
        parse_size(SIZE_MANIFEST, ("size",), value)
