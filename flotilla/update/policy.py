"""The update agent's decisions (pure): which slot runs and which is passive, which boot entry
is whose and what systemd-boot will pick, whether a payload's version may replace this one, and
what a written slot's entry says.

systemd-boot's choice is what makes a written slot the default, with no loader.conf `default`
and no EFI variable to keep in step: both slots' entries carry the same `sort-key`, so
systemd-boot orders them by `version`, newest first, after putting every entry with no tries
left at the end. A newer slot on trial is therefore tried first while it has tries, and the old
slot comes first again once they are used up (`boot_order` mirrors that rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .slots import SLOTS, Slot, entry_file_name, other_slot, usr_arguments

DEFAULT_TRIES = 3
MAX_TRIES = 9
# Only on an entry on trial: a failing initrd (say, a /usr it cannot mount) reboots instead of
# waiting in dracut's emergency shell, so the tries run out without a human. Dropped again once
# the slot is marked good, so a blessed slot that later fails stops visibly, like the image's own.
TRIAL_ARGUMENTS = ("rd.shell=0", "rd.emergency=reboot")
VERITY_DATA_KEY = "systemd.verity_usr_data"
ENTRY_FILE = re.compile(
    r"^(?P<name>[a-z][a-z0-9-]*)-(?P<slot>[ab])(?:\+(?P<left>[0-9]+)(?:-(?P<done>[0-9]+))?)?\.conf\Z"
)


class UpdateRefused(ValueError):
    """Nothing was written; the message says why."""


@dataclass(frozen=True)
class EntryFile:
    """A slot's boot entry as its file name tells (the Boot Loader Specification's counter)."""

    file_name: str
    slot: Slot
    tries_left: int | None  # None: not counted (a good entry)
    tries_done: int
    version: str  # from the entry's `version` line ("" when it has none)

    @property
    def on_trial(self) -> bool:
        return self.tries_left is not None and self.tries_left > 0

    @property
    def failed(self) -> bool:
        return self.tries_left == 0

    @property
    def state(self) -> str:
        if self.tries_left is None:
            return "good"
        if self.failed:
            return f"failed (no tries left after {self.tries_done})"
        return f"on trial ({self.tries_left} tries left)"


def parse_entry_file_name(file_name: str, name: str) -> tuple[Slot, int | None, int] | None:
    """(slot, tries left, tries done) of `<name>-<slot>[+LEFT[-DONE]].conf`; None if the file
    is not one of this image's slot entries."""
    match = ENTRY_FILE.match(file_name)
    if not match or match["name"] != name:
        return None
    left = int(match["left"]) if match["left"] is not None else None
    return SLOTS[match["slot"]], left, int(match["done"] or 0)


def entry_field(text: str, key: str) -> str:
    """One field of a Boot Loader Specification entry ("" when absent)."""
    for line in text.splitlines():
        fields = line.strip().split(None, 1)
        if fields and fields[0] == key:
            return fields[1].strip() if len(fields) > 1 else ""
    return ""


def boot_order(entries: list[EntryFile]) -> list[EntryFile]:
    """The entries in systemd-boot 252's order for ours (one shared sort-key, no machine-id):
    no tries left last, then the newest version first, then by file name, higher first. The first
    is the one it boots."""
    by_name = sorted(entries, key=lambda e: version_key(e.file_name), reverse=True)
    by_version = sorted(by_name, key=lambda e: version_key(e.version), reverse=True)
    return sorted(by_version, key=lambda e: e.failed)


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key comparing runs of digits as numbers and everything else as text, so 0.10.0
    is newer than 0.9.3 and 1.2.3 newer than 1.2."""
    return tuple(
        (1, int(part)) if part.isdigit() else (0, part)
        for part in re.findall(r"[0-9]+|[A-Za-z]+", version)
    )


def version_refusal(offered: str, running: str) -> str | None:
    """Why a payload's version may not replace the running one (None: it is newer). The same
    version is refused as well as an older one: a rollback is systemd-boot's, not a download's."""
    if version_key(offered) == version_key(running):
        return f"version {offered} is the version this machine runs"
    if version_key(offered) < version_key(running):
        return f"version {offered} is older than {running}, the version this machine runs"
    return None


def booted_slot(cmdline: str, partuuids: dict[str, str]) -> Slot:
    """The slot this boot's /usr came from: the partition `systemd.verity_usr_data=` names,
    matched to the labels of this disk's partitions (label -> PARTUUID, lower case)."""
    data = [w.split("=", 1)[1] for w in cmdline.split() if w.startswith(VERITY_DATA_KEY + "=")]
    if not data or not data[-1].upper().startswith("PARTUUID="):
        raise UpdateRefused(
            f"this boot's command line has no {VERITY_DATA_KEY}=PARTUUID=...: it did not boot a"
            " USR slot through dm-verity, so there is no passive slot to write"
        )
    uuid = data[-1].split("=", 1)[1].lower()
    for slot in SLOTS.values():
        if partuuids.get(slot.usr_label) == uuid:
            return slot
    raise UpdateRefused(f"/usr came from PARTUUID {uuid}, which is neither USR-A nor USR-B here")


def passive_slot(booted: Slot, partuuids: dict[str, str]) -> Slot:
    """The slot an update writes: the other one, if this disk has both of its partitions."""
    passive = other_slot(booted)
    missing = [
        label for label in (passive.usr_label, passive.verity_label) if label not in partuuids
    ]
    if missing:
        raise UpdateRefused(
            f"no passive slot: this disk has no {' or '.join(missing)} partition to write"
        )
    return passive


def trial_refusal(booted: EntryFile | None) -> str | None:
    """An update may not start while this boot is itself on trial: the passive slot is then the
    fallback, and writing it would leave nothing to fall back to."""
    if booted is not None and booted.tries_left is not None:
        return (
            f"this boot ({booted.file_name}) is not marked good yet; the other slot is its"
            " fallback. Update once systemd-bless-boot has marked it good."
        )
    return None


def trial_entry_name(name: str, slot: Slot, tries: int) -> str:
    if not 1 <= tries <= MAX_TRIES:
        raise UpdateRefused(f"boot tries must be 1 to {MAX_TRIES}, not {tries}")
    return entry_file_name(name, slot, tries)


def trial_options(
    kernel_arguments: str, usr_partuuid: str, verity_partuuid: str, root_hash: str
) -> str:
    """The command line of a written slot's entry: the manifest's arguments, the slot's /usr
    pinned by the manifest's root hash, and the trial's reboot-on-failure arguments."""
    usr = usr_arguments(usr_partuuid, verity_partuuid, root_hash)
    return " ".join([kernel_arguments, usr, *TRIAL_ARGUMENTS])


def without_trial_arguments(options: str) -> str:
    return " ".join(word for word in options.split() if word not in TRIAL_ARGUMENTS)
