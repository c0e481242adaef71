"""The GPT layout is planned and checked before any byte of the disk is written."""

from __future__ import annotations

import dataclasses
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagebuild.layout import MIB, PartitionSpec, format_size, plan_disk, sfdisk_script

GIB = 1024 * MIB
DISK_GUID = "00000000-0000-0000-0000-000000000001"
STANDARD = (
    PartitionSpec("EFI-SYSTEM", "esp", 128 * MIB, "11111111-1111-1111-1111-111111111111"),
    PartitionSpec("USR-A", "usr", 1024 * MIB, "22222222-2222-2222-2222-222222222222"),
    PartitionSpec("USR-B", "usr", 1024 * MIB, "33333333-3333-3333-3333-333333333333"),
    PartitionSpec("OEM", "oem", 64 * MIB, "44444444-4444-4444-4444-444444444444"),
    PartitionSpec("USR-A-VERITY", "usr-verity", 16 * MIB, "77777777-7777-7777-7777-777777777777"),
    PartitionSpec("USR-B-VERITY", "usr-verity", 16 * MIB, "88888888-8888-8888-8888-888888888888"),
    PartitionSpec("ROOT", "root", 512 * MIB, "55555555-5555-5555-5555-555555555555"),
)
REQUIRED_LABELS = ("EFI-SYSTEM", "USR-A", "USR-B", "OEM", "USR-A-VERITY", "USR-B-VERITY")
EXTRA = PartitionSpec("DATA", "oem", 64 * MIB, "66666666-6666-6666-6666-666666666666")


def changed(label: str, **fields: object) -> tuple[PartitionSpec, ...]:
    return tuple(
        dataclasses.replace(spec, **fields) if spec.label == label else spec  # type: ignore[arg-type]
        for spec in STANDARD
    )


def without(label: str) -> tuple[PartitionSpec, ...]:
    return tuple(spec for spec in STANDARD if spec.label != label)


def by_label(*labels: str) -> tuple[PartitionSpec, ...]:
    specs = {spec.label: spec for spec in (*STANDARD, EXTRA)}
    return tuple(specs[label] for label in labels)


def test_partitions_are_placed_in_order_on_mib_boundaries_after_the_primary_gpt() -> None:
    layout = plan_disk(STANDARD)
    placed = [(p.number, p.label, p.offset // MIB, p.end // MIB) for p in layout.partitions]
    assert placed == [
        (1, "EFI-SYSTEM", 1, 129),
        (2, "USR-A", 129, 1153),
        (3, "USR-B", 1153, 2177),
        (4, "OEM", 2177, 2241),
        (5, "USR-A-VERITY", 2241, 2257),
        (6, "USR-B-VERITY", 2257, 2273),
        (7, "ROOT", 2273, 2785),
    ]


def test_disk_size_is_the_last_end_plus_one_mib_for_the_backup_gpt() -> None:
    layout = plan_disk(STANDARD)
    assert layout.size == layout.partitions[-1].end + MIB == 2786 * MIB


@pytest.mark.parametrize("disk_size", [2786 * MIB, 8 * GIB])
def test_an_explicit_disk_size_that_fits_is_kept(disk_size: int) -> None:
    assert plan_disk(STANDARD, disk_size).size == disk_size


def test_an_explicit_disk_size_too_small_names_both_sizes() -> None:
    with pytest.raises(ValueError) as caught:
        plan_disk(STANDARD, GIB)
    assert str(caught.value) == "partitions need 2.7 GiB with the GPT, more than disk_size 1 GiB"


def test_a_disk_one_mib_short_has_no_room_for_the_backup_gpt() -> None:
    with pytest.raises(ValueError, match="more than disk_size"):
        plan_disk(STANDARD, 2785 * MIB)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        pytest.param(
            by_label(*REQUIRED_LABELS, "OEM", "ROOT"),
            "label 'OEM' is used twice",
            id="duplicate-label",
        ),
        pytest.param(
            without("OEM"),
            "a partition labelled 'OEM' (type oem) is required",
            id="missing-required-label",
        ),
        pytest.param(
            changed("USR-B", kind="oem"),
            "USR-B must have type usr, not oem",
            id="wrong-type-for-required-label",
        ),
        pytest.param(
            by_label("EFI-SYSTEM", "USR-A", "USR-B", "USR-A-VERITY", "USR-B-VERITY", "ROOT", "OEM"),
            "ROOT must be the last partition",
            id="root-not-last",
        ),
        pytest.param(
            (*STANDARD, dataclasses.replace(EXTRA, kind="root")),
            "ROOT must be the last partition",
            id="root-not-last-behind-another-root-typed-partition",
        ),
        pytest.param(
            changed("USR-B", size=512 * MIB),
            "USR-A and USR-B must be the same size",
            id="usr-slot-sizes-differ",
        ),
        pytest.param(
            without("USR-B-VERITY"),
            "a partition labelled 'USR-B-VERITY' (type usr-verity) is required",
            id="missing-hash-partition",
        ),
        pytest.param(
            changed("USR-A-VERITY", size=32 * MIB),
            "USR-A-VERITY and USR-B-VERITY must be the same size",
            id="hash-partition-sizes-differ",
        ),
        pytest.param(
            changed("OEM", size=64 * MIB + 512),
            "OEM: size must be a whole number of MiB",
            id="size-not-a-whole-mib",
        ),
        pytest.param(
            changed("OEM", size=8 * MIB),
            "OEM: 8 MiB is too small (16 MiB at least)",
            id="tiny-partition",
        ),
    ],
)
def test_bad_layouts_are_refused_with_a_reason(
    specs: tuple[PartitionSpec, ...], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        plan_disk(specs)
    assert message in str(caught.value)


def test_extra_partitions_may_sit_between_the_required_ones_and_root() -> None:
    specs = by_label(*REQUIRED_LABELS, "DATA", "ROOT")
    assert [p.label for p in plan_disk(specs).partitions][-2:] == ["DATA", "ROOT"]


def sfdisk_fields(line: str) -> dict[str, str]:
    return dict(field.split("=", 1) for field in line.split(", "))


def test_sfdisk_script_header_names_the_disk_guid_and_sector_unit() -> None:
    lines = sfdisk_script(plan_disk(STANDARD), DISK_GUID).splitlines()
    assert lines[:4] == [
        "label: gpt",
        f"label-id: {DISK_GUID}",
        "unit: sectors",
        "sector-size: 512",
    ]


def test_sfdisk_script_gives_starts_and_sizes_in_512_byte_sectors() -> None:
    layout = plan_disk(STANDARD)
    lines = sfdisk_script(layout, DISK_GUID).splitlines()[5:]
    assert len(lines) == len(layout.partitions)
    for part, line in zip(layout.partitions, lines, strict=True):
        fields = sfdisk_fields(line)
        assert fields["start"] == str(part.offset // 512)
        assert fields["size"] == str(part.size // 512)
        assert fields["uuid"] == part.uuid
        assert fields["type"] == part.spec.type_guid
        assert fields["name"] == f'"{part.label}"'
    assert sfdisk_fields(lines[0])["start"] == "2048"  # 1 MiB
    assert sfdisk_fields(lines[0])["size"] == str(128 * 2048)


def test_only_usr_a_starts_with_the_active_slot_attributes() -> None:
    lines = sfdisk_script(plan_disk(STANDARD), DISK_GUID).splitlines()[5:]
    attributes = {sfdisk_fields(line)["name"]: sfdisk_fields(line).get("attrs") for line in lines}
    assert attributes == {
        '"EFI-SYSTEM"': None,
        '"USR-A"': '"GUID:48,56"',
        '"USR-B"': None,
        '"OEM"': None,
        '"USR-A-VERITY"': None,
        '"USR-B-VERITY"': None,
        '"ROOT"': None,
    }


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (MIB, "1 MiB"),
        (256 * MIB, "256 MiB"),
        (GIB, "1 GiB"),
        (GIB * 5 // 2, "2.5 GiB"),
    ],
)
def test_format_size_uses_the_largest_binary_unit(size: int, text: str) -> None:
    assert format_size(size) == text


mib_sizes = st.integers(min_value=16, max_value=4096).map(lambda mib: mib * MIB)


@given(
    esp=mib_sizes,
    usr=mib_sizes,
    oem=mib_sizes,
    extras=st.lists(mib_sizes, max_size=3),
    root=mib_sizes,
    slack=st.one_of(st.none(), st.integers(min_value=0, max_value=1024).map(lambda m: m * MIB)),
)
def test_valid_layouts_never_overlap_and_leave_room_for_the_backup_gpt(
    esp: int, usr: int, oem: int, extras: list[int], root: int, slack: int | None
) -> None:
    specs = (
        dataclasses.replace(STANDARD[0], size=esp),
        dataclasses.replace(STANDARD[1], size=usr),
        dataclasses.replace(STANDARD[2], size=usr),
        dataclasses.replace(STANDARD[3], size=oem),
        STANDARD[4],
        STANDARD[5],
        *(dataclasses.replace(EXTRA, label=f"DATA{i}", size=s) for i, s in enumerate(extras)),
        dataclasses.replace(STANDARD[6], size=root),
    )
    needed = MIB + sum(spec.size for spec in specs) + MIB
    layout = plan_disk(specs, None if slack is None else needed + slack)

    parts = layout.partitions
    assert [p.number for p in parts] == list(range(1, len(specs) + 1))
    assert [p.spec for p in parts] == list(specs)
    assert parts[0].offset == MIB
    assert all(p.offset % MIB == 0 and p.size % MIB == 0 for p in parts)
    assert all(before.end <= after.offset for before, after in pairwise(parts))
    assert all(p.end <= layout.size - MIB for p in parts)
    assert layout.size == needed + (slack or 0)
