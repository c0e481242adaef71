"""The GPT disk layout: where each partition goes, checked before any byte is written (pure).

Partitions start on 1 MiB boundaries after the primary GPT; the backup GPT takes the last MiB.
The USR slots carry Flatcar's priority/tries/successful attribute bits (48-51, 52-55, 56) so an
A/B selector can read the same state Flatcar's gptprio does; USR-A starts as priority 1,
successful. Each slot has a dm-verity hash partition of its own (USR-A-VERITY, USR-B-VERITY):
systemd 252's veritysetup reads the verity superblock at the start of the hash device and has no
hash offset, so the hash tree cannot share the slot's partition as Flatcar's does.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
SECTOR = 512
ALIGNMENT = MIB
# Flatcar's (CoreOS's) type GUIDs where they exist; the rest are the standard ones.
PARTITION_TYPES = {
    "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    "usr": "5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6",  # coreos-usr
    "oem": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",  # Linux filesystem data
    "root": "3884DD41-8582-4404-B9A8-E9B84F2DF50E",  # coreos-resize: grown at boot
    # The Discoverable Partitions Specification's "usr verity (x86-64)": what it holds, by name.
    "usr-verity": "77FF5F63-E7B6-4633-ACF4-1565B864C0E6",
}
REQUIRED = {
    "EFI-SYSTEM": "esp",
    "USR-A": "usr",
    "USR-B": "usr",
    "OEM": "oem",
    "USR-A-VERITY": "usr-verity",
    "USR-B-VERITY": "usr-verity",
    "ROOT": "root",
}
ACTIVE_SLOT_ATTRIBUTES = "GUID:48,56"  # priority 1, successful


@dataclass(frozen=True)
class PartitionSpec:
    label: str
    kind: str
    size: int
    uuid: str

    @property
    def type_guid(self) -> str:
        return PARTITION_TYPES[self.kind]


@dataclass(frozen=True)
class PlacedPartition:
    number: int
    spec: PartitionSpec
    offset: int  # bytes from the start of the disk

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def uuid(self) -> str:
        return self.spec.uuid

    @property
    def size(self) -> int:
        return self.spec.size

    @property
    def end(self) -> int:
        return self.offset + self.spec.size


@dataclass(frozen=True)
class DiskLayout:
    partitions: tuple[PlacedPartition, ...]
    size: int

    def by_label(self, label: str) -> PlacedPartition:
        return next(p for p in self.partitions if p.label == label)


def plan_disk(specs: tuple[PartitionSpec, ...], disk_size: int | None = None) -> DiskLayout:
    """Place partitions in order; raise ValueError naming the problem if they cannot be."""
    check_partitions(specs)
    placed, offset = [], ALIGNMENT
    for number, spec in enumerate(specs, start=1):
        placed.append(PlacedPartition(number, spec, offset))
        offset += spec.size
    needed = offset + ALIGNMENT  # room for the backup GPT
    if disk_size is not None and disk_size < needed:
        raise ValueError(
            f"partitions need {format_size(needed)} with the GPT, "
            f"more than disk_size {format_size(disk_size)}"
        )
    return DiskLayout(tuple(placed), disk_size or needed)


def check_partitions(specs: tuple[PartitionSpec, ...]) -> None:
    labels = [spec.label for spec in specs]
    for label in labels:
        if labels.count(label) > 1:
            raise ValueError(f"label {label!r} is used twice")
    for label, kind in REQUIRED.items():
        found = [spec for spec in specs if spec.label == label]
        if not found:
            raise ValueError(f"a partition labelled {label!r} (type {kind}) is required")
        if found[0].kind != kind:
            raise ValueError(f"{label} must have type {kind}, not {found[0].kind}")
    if specs[-1].label != "ROOT":
        raise ValueError("ROOT must be the last partition: it grows into the rest of the disk")
    usr_sizes = {spec.size for spec in specs if spec.kind == "usr"}
    if len(usr_sizes) > 1:
        raise ValueError(
            "USR-A and USR-B must be the same size: an update writes one into the other"
        )
    verity_sizes = {spec.size for spec in specs if spec.kind == "usr-verity"}
    if len(verity_sizes) > 1:
        raise ValueError(
            "USR-A-VERITY and USR-B-VERITY must be the same size: an update writes either"
        )
    for spec in specs:
        if spec.size % ALIGNMENT:
            raise ValueError(f"{spec.label}: size must be a whole number of MiB")
        if spec.size < 16 * MIB:
            raise ValueError(
                f"{spec.label}: {format_size(spec.size)} is too small (16 MiB at least)"
            )


def sfdisk_script(layout: DiskLayout, disk_guid: str) -> str:
    """The partition table as sfdisk input (sizes in 512-byte sectors)."""
    lines = ["label: gpt", f"label-id: {disk_guid}", "unit: sectors", "sector-size: 512", ""]
    for part in layout.partitions:
        fields = [
            f"start={part.offset // SECTOR}",
            f"size={part.size // SECTOR}",
            f"type={part.spec.type_guid}",
            f"uuid={part.uuid}",
            f'name="{part.label}"',
        ]
        if part.label == "USR-A":
            fields.append(f'attrs="{ACTIVE_SLOT_ATTRIBUTES}"')
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def format_size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", MIB), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}".replace(".0 ", " ")
    return f"{size} B"
