"""The update agent: status, check, update now, and the trial boot's health check (I/O).

`update now` is a flat recipe: read the machine, fetch and verify the payload (refusing it on
its manifest, before any large download, when it is not for this machine, not newer, or does
not fit), then writer.py's order (old passive entries out, partitions, kernel and initramfs,
the new counted entry last), then the reboot strategy. Decisions are policy.py's.
"""

from __future__ import annotations

import fcntl
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import machine, writer
from .config import CONFIG_PATH, ConfigError, UpdateConfig, parse_config
from .fetch import download, fetch_payload
from .health import health_problems
from .manifest import (
    BOARD,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    SIGNATURE_NAME,
    UpdateManifest,
    target_refusal,
)
from .policy import (
    EntryFile,
    UpdateRefused,
    boot_order,
    booted_slot,
    passive_slot,
    trial_entry_name,
    trial_options,
    trial_refusal,
    version_refusal,
    without_trial_arguments,
)
from .slots import Slot, boot_entry
from .verify import TRUSTED_KEYS, VerifiedPayload, verified_manifest

IMAGE_NAME = "flotilla"  # image.yaml's name: the ESP's entries and files are named after it
STATE = Path("/var/lib/flotilla-update")
LOCK = Path("/run/flotilla-update.lock")
STAGING_MARGIN = 64 << 20  # bytes left free on ROOT after a download


@dataclass(frozen=True)
class MachineState:
    partitions: dict[str, machine.Partition]
    booted: Slot
    entries: list[EntryFile]
    booted_entry: EntryFile | None
    version: str

    @property
    def partuuids(self) -> dict[str, str]:
        return {label: p.partuuid for label, p in self.partitions.items()}


def read_state(esp: Path = machine.ESP) -> MachineState:
    cmdline = machine.read_cmdline()
    partitions = machine.partitions(machine.boot_disk(cmdline))
    booted = booted_slot(cmdline, {label: p.partuuid for label, p in partitions.items()})
    entries = machine.slot_entries(IMAGE_NAME, esp)
    booted_entry = machine.entry_of(entries, booted)
    return MachineState(partitions, booted, entries, booted_entry,
                        machine.running_version(booted_entry))  # fmt: skip


def load_config(path: Path = Path(CONFIG_PATH)) -> UpdateConfig:
    if not path.exists():
        return UpdateConfig()
    try:
        return parse_config(path.read_text(), str(path))
    except OSError as error:
        raise ConfigError(f"{path}: {error}") from error


@contextmanager
def agent_lock() -> Iterator[None]:
    """One agent at a time (the timer and a user's `update now`)."""
    with open(LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpdateRefused("another flotilla-update is running") from None
        yield


def status(state: MachineState) -> dict[str, object]:
    order = boot_order(state.entries)
    return {
        "booted_slot": state.booted.name,
        "version": state.version,
        "boot_entry": state.booted_entry.file_name if state.booted_entry else None,
        "next_boot": order[0].file_name if order else None,
        "slots": {
            entry.slot.name: {
                "entry": entry.file_name,
                "version": entry.version,
                "state": entry.state,
            }
            for entry in state.entries
        },
    }


def check(
    server: str, trusted_keys: Path = TRUSTED_KEYS, state_dir: Path = STATE
) -> UpdateManifest:
    """The server's signed manifest, verified (its large files are not fetched)."""
    staging = state_dir / "check"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        base = server if server.endswith("/") else server + "/"
        download(base, MANIFEST_NAME, staging, MAX_MANIFEST_BYTES, 30, missing="no manifest")
        download(base, SIGNATURE_NAME, staging, MAX_SIGNATURE_BYTES, 30,
                 missing=f"the payload is unsigned: no {SIGNATURE_NAME}")  # fmt: skip
        return verified_manifest(staging, trusted_keys)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def offer_refusal(state: MachineState, manifest: UpdateManifest) -> str | None:
    return target_refusal(manifest, IMAGE_NAME, BOARD) or version_refusal(
        manifest.version, state.version
    )


@dataclass(frozen=True)
class Installed:
    version: str
    slot: Slot
    entry: str  # the new entry's file name, with its boot counter

    def __str__(self) -> str:
        return f"flotilla {self.version} is in USR-{self.slot.name.upper()} ({self.entry})"


def install_update(
    state: MachineState,
    config: UpdateConfig,
    say: Callable[[str], None],
    esp: Path = machine.ESP,
    trusted_keys: Path = TRUSTED_KEYS,
    state_dir: Path = STATE,
) -> Installed:
    """Write the server's newer payload to the passive slot with a counted boot entry that
    systemd-boot boots next; UpdateRefused (nothing written) or a fetch or write error otherwise.
    The reboot is the caller's (reboot.py)."""
    if not config.server:
        raise UpdateRefused(f"no update server: set SERVER= in {CONFIG_PATH}")
    refusal = trial_refusal(state.booted_entry)
    if refusal:
        raise UpdateRefused(refusal)
    passive = passive_slot(state.booted, state.partuuids)
    name = trial_entry_name(IMAGE_NAME, passive, config.boot_tries)
    staging = state_dir / "staging"
    try:
        say(f"fetching {config.server} (running {state.version}, USR-{state.booted.name.upper()})")
        payload = fetch_payload(
            config.server,
            staging,
            trusted_keys,
            approve=lambda offered: approve(state, passive, offered, staging, esp),
        )
        say(f"verified {payload.manifest.version}; writing USR-{passive.name.upper()}")
        write_slot(state, passive, payload, name, esp)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Installed(payload.manifest.version, passive, name)


def approve(
    state: MachineState, passive: Slot, manifest: UpdateManifest, staging: Path, esp: Path
) -> None:
    """Before the large files: the payload is for this machine, newer, and fits."""
    refusal = offer_refusal(state, manifest)
    if refusal:
        raise UpdateRefused(refusal)
    sizes = {f.role: f.size for f in manifest.files}
    for role, label in (("usr", passive.usr_label), ("usr_verity", passive.verity_label)):
        if sizes[role] > state.partitions[label].size:
            raise UpdateRefused(f"{manifest.file(role).name} ({sizes[role]} bytes) is larger than"
                                f" {label} ({state.partitions[label].size} bytes)")  # fmt: skip
    needed = sum(sizes.values()) + STAGING_MARGIN
    if machine.free_bytes(staging) < needed:
        raise UpdateRefused(f"not enough room in {staging} for the payload: {needed} bytes"
                            f" needed, {machine.free_bytes(staging)} free")  # fmt: skip
    boot_files = boot_file_paths(esp, passive)
    reclaimed = sum(p.stat().st_size for p in boot_files.values() if p.exists())
    if machine.free_bytes(esp) + reclaimed < sizes["kernel"] + sizes["initrd"]:
        raise UpdateRefused(f"the EFI system partition ({esp}) has no room for the kernel and"
                            " initramfs")  # fmt: skip


def boot_file_paths(esp: Path, slot: Slot) -> dict[str, Path]:
    return {
        "kernel": esp / IMAGE_NAME / f"vmlinuz-{slot.name}",
        "initrd": esp / IMAGE_NAME / f"initrd-{slot.name}",
    }


def write_slot(
    state: MachineState, passive: Slot, payload: VerifiedPayload, entry_name: str, esp: Path
) -> None:
    entries = esp / machine.ENTRIES
    # First: nothing may boot the passive slot while it is being written.
    writer.remove_files([entries / e.file_name for e in state.entries if e.slot == passive])
    manifest = payload.manifest
    for role, label in (("usr", passive.usr_label), ("usr_verity", passive.verity_label)):
        writer.write_partition(
            payload.path(role), state.partitions[label].path, manifest.file(role)
        )
    for role, target in boot_file_paths(esp, passive).items():
        target.parent.mkdir(exist_ok=True)
        writer.replace_file(payload.path(role), target)
    options = trial_options(
        manifest.kernel_arguments,
        state.partitions[passive.usr_label].partuuid,
        state.partitions[passive.verity_label].partuuid,
        manifest.root_hash,
    )
    # Last: the entry, with its boot counter, is what makes the slot bootable and the default.
    writer.write_text_file(boot_entry(IMAGE_NAME, manifest.version, passive, options),
                           entries / entry_name)  # fmt: skip


def check_health(timeout: float, interval: float, say: Callable[[str], None]) -> list[str]:
    """Ask until healthy or `timeout` seconds passed; the problems left (empty: healthy)."""
    deadline = time.monotonic() + timeout
    while True:
        problems = health_problems(machine.health_facts())
        if not problems or time.monotonic() >= deadline:
            return problems
        say("waiting: " + "; ".join(problems))
        time.sleep(interval)


def end_trial(state: MachineState, esp: Path = machine.ESP) -> str:
    """Once systemd-bless-boot has marked the booted entry good (dropped its counter): drop the
    trial's reboot-on-failure arguments from it, so it behaves like the image's own entry."""
    entry = state.booted_entry
    if entry is None or entry.tries_left is not None:
        return "the booted entry is not a blessed update entry; nothing to do"
    path = esp / machine.ENTRIES / entry.file_name
    lines = path.read_text().splitlines()
    changed = [
        f"options {without_trial_arguments(line.split(None, 1)[1])}"
        if line.startswith("options ") else line
        for line in lines
    ]  # fmt: skip
    if changed == lines:
        return f"{entry.file_name} carries no trial arguments"
    writer.write_text_file("\n".join(changed) + "\n", path)
    return f"{entry.file_name}: marked good, trial arguments removed"
