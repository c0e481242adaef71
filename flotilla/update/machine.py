"""What the update agent reads from the machine it runs on (I/O): the boot's command line, the
boot disk's partitions, the slots' boot entries on the ESP, and the health check's facts. Every
decision on them is in policy.py and health.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fleetd.status_line import registered_machine
from flotilla.process import CommandError, run

from .health import HealthFacts
from .policy import EntryFile, UpdateRefused, entry_field, parse_entry_file_name
from .slots import Slot

CMDLINE = Path("/proc/cmdline")
ESP = Path("/boot")  # fstab: the ESP on demand (automount), root only
ENTRIES = Path("loader/entries")
OS_RELEASE = Path("/usr/lib/os-release")
MACHINE_ID = Path("/etc/machine-id")


@dataclass(frozen=True)
class Partition:
    path: Path  # /dev/vda3
    partuuid: str  # lower case
    size: int  # bytes


def read_cmdline() -> str:
    return CMDLINE.read_text()


def boot_disk(cmdline: str) -> Path:
    """The disk holding this boot's /usr (or, failing that, its root) partition."""
    for key in ("systemd.verity_usr_data=PARTUUID=", "root=PARTUUID="):
        for word in cmdline.split():
            if word.startswith(key):
                partition = Path("/dev/disk/by-partuuid") / word[len(key) :].lower()
                if partition.exists():
                    parent = run(
                        ["lsblk", "--nodeps", "--noheadings", "--output", "PKNAME", partition]
                    )
                    return Path("/dev") / parent.stdout.strip()
    raise UpdateRefused("cannot tell which disk this machine booted from (no PARTUUID on its"
                        " command line that exists here)")  # fmt: skip


def partitions(disk: Path) -> dict[str, Partition]:
    """The disk's partitions by GPT label."""
    listing = run(["lsblk", "--json", "--bytes", "--output", "PATH,TYPE,PARTLABEL,PARTUUID,SIZE",
                   disk])  # fmt: skip
    found = {}
    for device in json.loads(listing.stdout)["blockdevices"]:
        for child in [device, *device.get("children", [])]:
            if child.get("type") == "part" and child.get("partlabel"):
                found[child["partlabel"]] = Partition(
                    Path(child["path"]), (child.get("partuuid") or "").lower(), int(child["size"])
                )
    return found


def slot_entries(name: str, esp: Path = ESP) -> list[EntryFile]:
    """This image's slot entries on the ESP (`<name>-a.conf`, `<name>-b+2-1.conf`, ...)."""
    directory = esp / ENTRIES
    if not directory.is_dir():
        raise UpdateRefused(f"no {directory}: the EFI system partition is not mounted at {esp}")
    entries = []
    for path in sorted(directory.iterdir()):
        parsed = parse_entry_file_name(path.name, name)
        if parsed:
            slot, left, done = parsed
            version = entry_field(path.read_text(errors="replace"), "version")
            entries.append(EntryFile(path.name, slot, left, done, version))
    return entries


def entry_of(entries: list[EntryFile], slot: Slot) -> EntryFile | None:
    mine = [e for e in entries if e.slot == slot]
    return mine[0] if mine else None


def os_release_version() -> str:
    for line in OS_RELEASE.read_text().splitlines():
        if line.startswith("VERSION_ID="):
            return line.split("=", 1)[1].strip().strip('"')
    return "0"


def running_version(booted: EntryFile | None) -> str:
    """The version the booted slot runs: what its entry says (the signed manifest's version,
    written with the slot), else /usr's os-release."""
    if booted is not None and booted.version:
        return booted.version
    return os_release_version()


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


# The health check's facts


def unit_enabled(unit: str) -> bool:
    result = run(["systemctl", "is-enabled", "--quiet", unit], check=False)
    return result.returncode == 0


def failed_units() -> dict[str, str]:
    listing = run(["systemctl", "list-units", "--state=failed", "--plain", "--no-legend", "--full"])
    units = [line.split()[0] for line in listing.stdout.splitlines() if line.strip()]
    fragments = {}
    for unit in units:
        shown = run(["systemctl", "show", "--property=FragmentPath", "--value", unit], check=False)
        fragments[unit] = shown.stdout.strip()
    return fragments


def fleetd_registered() -> bool:
    """fleetd runs and says (its status line, fleetd/status_line.py) that it registered this
    machine. Read from systemd, not through fleetctl and the API: on a busy TCG guest those
    took 25-80 s (a Python process and the API's on-demand load), most of a node's reboot."""
    machine_id = MACHINE_ID.read_text().strip()
    shown = run(["systemctl", "show", "--property=ActiveState", "--property=StatusText",
                 "fleetd.service"], check=False)  # fmt: skip
    properties = dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)
    if properties.get("ActiveState") != "active":
        return False
    return registered_machine(properties.get("StatusText", "")) == machine_id


def etcd_healthy() -> bool:
    try:
        run(["etcdctl", "--command-timeout=10s", "endpoint", "health"],
            env={"ETCDCTL_API": "3"}, timeout=30)  # fmt: skip
    except (CommandError, OSError, subprocess.TimeoutExpired):
        return False
    return True


def health_facts() -> HealthFacts:
    fleetd = unit_enabled("fleetd.service")
    etcd = unit_enabled("etcd.service")
    return HealthFacts(
        fleetd_enabled=fleetd,
        fleetd_registered=fleetd and fleetd_registered(),
        etcd_enabled=etcd,
        etcd_healthy=etcd and etcd_healthy(),
        failed_units=failed_units(),
    )
