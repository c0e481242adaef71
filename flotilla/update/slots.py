"""The USR slots and what a boot entry says about one (pure).

Each slot is a pair of partitions: the erofs /usr (USR-A) and its dm-verity hash tree
(USR-A-VERITY). The initramfs's systemd-veritysetup-generator opens the pair as /dev/mapper/usr
from `usrhash=` and `systemd.verity_usr_data=`/`systemd.verity_usr_hash=`, and systemd's fstab
generator mounts that device at /sysroot/usr (`mount.usr=`). The root hash on the command line is
what pins the slot's bytes: a changed block fails to read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERITY_DEVICE = "usr"  # /dev/mapper/usr
USR_FILESYSTEM = "erofs"
# Arguments imagebuild writes per slot; a manifest's own command line must not carry them.
SLOT_ARGUMENT_KEYS = (
    "mount.usr",
    "mount.usrfstype",
    "mount.usrflags",
    "usrhash",
    "systemd.verity_usr_data",
    "systemd.verity_usr_hash",
    "systemd.verity_usr_options",
)
ROOT_HASH = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Slot:
    name: str  # "a" or "b"
    usr_label: str  # the partition label of the filesystem
    verity_label: str  # the partition label of its hash tree


SLOTS = {
    "a": Slot("a", "USR-A", "USR-A-VERITY"),
    "b": Slot("b", "USR-B", "USR-B-VERITY"),
}


def other_slot(slot: Slot) -> Slot:
    return SLOTS["b" if slot.name == "a" else "a"]


def usr_arguments(usr_partuuid: str, verity_partuuid: str, root_hash: str) -> str:
    """The kernel arguments that mount one slot as /usr through dm-verity."""
    if not ROOT_HASH.match(root_hash):
        raise ValueError(f"{root_hash!r} is not a sha256 root hash (64 lower-case hex digits)")
    return " ".join(
        [
            f"mount.usr=/dev/mapper/{VERITY_DEVICE}",
            f"mount.usrfstype={USR_FILESYSTEM}",
            "mount.usrflags=ro",
            f"usrhash={root_hash}",
            f"systemd.verity_usr_data=PARTUUID={usr_partuuid}",
            f"systemd.verity_usr_hash=PARTUUID={verity_partuuid}",
        ]
    )


def slot_arguments_in(cmdline: str) -> list[str]:
    """The slot arguments a command line already carries (they belong to imagebuild)."""
    return [word for word in cmdline.split() if word.split("=", 1)[0] in SLOT_ARGUMENT_KEYS]


def entry_file_name(name: str, slot: Slot, tries: int | None = None) -> str:
    """`flotilla-a.conf`, or with systemd-boot's boot counter `flotilla-b+3.conf`."""
    counter = f"+{tries}" if tries is not None else ""
    return f"{name}-{slot.name}{counter}.conf"


def boot_entry(name: str, version: str, slot: Slot, options: str) -> str:
    """A Boot Loader Specification entry for a slot: its kernel and initramfs on the ESP
    (`/<name>/vmlinuz-<slot>`) and the full command line, the slot's /usr arguments included."""
    return (
        f"title Flotilla {version} (USR-{slot.name.upper()})\n"
        f"sort-key {name}\n"
        f"version {version}\n"
        f"linux /{name}/vmlinuz-{slot.name}\n"
        f"initrd /{name}/initrd-{slot.name}\n"
        f"options {options}\n"
    )
