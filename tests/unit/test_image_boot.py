"""What a boot entry and the direct-boot command line say about a USR slot: the manifest's
command line, then the slot's /usr through dm-verity, pinned by its root hash."""

from __future__ import annotations

import pytest

from flotilla.update.slots import (
    SLOTS,
    boot_entry,
    entry_file_name,
    other_slot,
    slot_arguments_in,
    usr_arguments,
)
from imagebuild.image import slot_cmdline
from imagebuild.image_spec import load_image_spec

ROOT_HASH = "0123456789abcdef" * 4


def test_a_slot_boots_its_partitions_through_dm_verity_pinned_by_the_root_hash() -> None:
    spec = load_image_spec()
    for slot in SLOTS.values():
        words = slot_cmdline(spec, slot, ROOT_HASH).split()
        usr = spec.layout.by_label(slot.usr_label).uuid
        hash_tree = spec.layout.by_label(slot.verity_label).uuid
        assert words[: len(spec.cmdline.split())] == spec.cmdline.split()
        assert "mount.usr=/dev/mapper/usr" in words
        assert "mount.usrfstype=erofs" in words
        assert f"usrhash={ROOT_HASH}" in words
        assert f"systemd.verity_usr_data=PARTUUID={usr}" in words
        assert f"systemd.verity_usr_hash=PARTUUID={hash_tree}" in words
        assert len(slot_arguments_in(" ".join(words))) == 6


@pytest.mark.parametrize("root_hash", ["", "AB" * 32, "ab" * 31, "ab" * 32 + "\n"])
def test_anything_but_a_sha256_root_hash_is_refused(root_hash: str) -> None:
    with pytest.raises(ValueError, match="not a sha256 root hash"):
        usr_arguments("u", "v", root_hash)


def test_entries_and_their_boot_counters() -> None:
    assert entry_file_name("flotilla", SLOTS["a"]) == "flotilla-a.conf"
    assert entry_file_name("flotilla", SLOTS["b"], tries=3) == "flotilla-b+3.conf"
    assert other_slot(SLOTS["a"]) == SLOTS["b"] and other_slot(SLOTS["b"]) == SLOTS["a"]
    entry = boot_entry("flotilla", "0.2.0", SLOTS["b"], "root=X usrhash=Y")
    assert entry.splitlines() == [
        "title Flotilla 0.2.0 (USR-B)",
        "sort-key flotilla",
        "version 0.2.0",
        "linux /flotilla/vmlinuz-b",
        "initrd /flotilla/initrd-b",
        "options root=X usrhash=Y",
    ]
