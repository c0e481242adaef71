"""The update agent's pure decisions: versions, slots, boot entries and systemd-boot's order."""

from __future__ import annotations

import pytest

from flotilla.update.policy import (
    TRIAL_ARGUMENTS,
    EntryFile,
    UpdateRefused,
    boot_order,
    booted_slot,
    parse_entry_file_name,
    passive_slot,
    trial_entry_name,
    trial_options,
    trial_refusal,
    version_refusal,
    without_trial_arguments,
)
from flotilla.update.slots import SLOTS

A, B = SLOTS["a"], SLOTS["b"]
PARTUUIDS = {
    "USR-A": "7130c94a-213a-4e5a-8e26-6cce9662f132",
    "USR-B": "e03dd35c-7c2d-4a47-b3fe-27f15780a57c",
    "USR-A-VERITY": "39cc31e3-1130-451b-85f4-7797def431d0",
    "USR-B-VERITY": "04e166c2-d2ea-4a75-9692-5eb37581601d",
}
HASH = "ab" * 32


@pytest.mark.parametrize(
    ("offered", "running", "refused"),
    [
        ("0.1.1", "0.1.0", None),
        ("0.10.0", "0.9.3", None),
        ("1.2.3", "1.2", None),
        ("0.1.0", "0.1.0", "is the version this machine runs"),
        ("0.1.0", "0.1.1", "is older than 0.1.1"),
        ("0.9.3", "0.10.0", "is older than 0.10.0"),
    ],
)
def test_only_a_newer_version_is_installed(offered: str, running: str, refused: str | None) -> None:
    refusal = version_refusal(offered, running)
    assert (refusal is None) == (refused is None)
    if refused:
        assert refused in refusal


def test_the_booted_slot_is_the_one_verity_data_names() -> None:
    cmdline = f"root=x usrhash={HASH} systemd.verity_usr_data=PARTUUID={PARTUUIDS['USR-B'].upper()}"
    assert booted_slot(cmdline, PARTUUIDS) == B
    assert booted_slot(f"systemd.verity_usr_data=PARTUUID={PARTUUIDS['USR-A']}", PARTUUIDS) == A


@pytest.mark.parametrize(
    "cmdline", ["root=PARTUUID=x mount.usr=/dev/vdb", "systemd.verity_usr_data=PARTUUID=0000"]
)
def test_a_boot_not_from_a_slot_has_no_passive_slot(cmdline: str) -> None:
    with pytest.raises(UpdateRefused):
        booted_slot(cmdline, PARTUUIDS)


def test_the_passive_slot_is_the_other_one_and_must_exist() -> None:
    assert passive_slot(A, PARTUUIDS) == B
    assert passive_slot(B, PARTUUIDS) == A
    without_b_verity = {k: v for k, v in PARTUUIDS.items() if k != "USR-B-VERITY"}
    with pytest.raises(UpdateRefused, match="no passive slot: this disk has no USR-B-VERITY"):
        passive_slot(A, without_b_verity)


@pytest.mark.parametrize(
    ("file_name", "parsed"),
    [
        ("flotilla-a.conf", (A, None, 0)),
        ("flotilla-b+3.conf", (B, 3, 0)),
        ("flotilla-b+2-1.conf", (B, 2, 1)),
        ("flotilla-b+0-3.conf", (B, 0, 3)),
        ("other-a.conf", None),
        ("flotilla-c.conf", None),
        ("flotilla-a.conf.new", None),
    ],
)
def test_entry_file_names_carry_slot_and_boot_counter(file_name: str, parsed: object) -> None:
    assert parse_entry_file_name(file_name, "flotilla") == parsed


def entry(file_name: str, version: str) -> EntryFile:
    slot, left, done = parse_entry_file_name(file_name, "flotilla")
    return EntryFile(file_name, slot, left, done, version)


def test_systemd_boot_tries_the_newer_slot_first_and_falls_back_when_its_tries_are_gone() -> None:
    old = entry("flotilla-a.conf", "0.1.0")
    assert (
        boot_order([old, entry("flotilla-b+3.conf", "0.1.1")])[0].file_name == "flotilla-b+3.conf"
    )
    assert boot_order([old, entry("flotilla-b+1-2.conf", "0.1.1")])[0].slot == B
    assert boot_order([old, entry("flotilla-b+0-3.conf", "0.1.1")])[0] == old
    # after the next update, A holds the newest version again
    assert (
        boot_order([entry("flotilla-a+3.conf", "0.1.2"), entry("flotilla-b.conf", "0.1.1")])[0].slot
        == A
    )


def test_entry_names_and_tries() -> None:
    assert trial_entry_name("flotilla", B, 3) == "flotilla-b+3.conf"
    assert trial_entry_name("flotilla", A, 1) == "flotilla-a+1.conf"
    for tries in (0, 10):
        with pytest.raises(UpdateRefused, match="boot tries"):
            trial_entry_name("flotilla", B, tries)


def test_a_trial_entry_pins_the_slot_and_reboots_on_initrd_failure() -> None:
    options = trial_options("root=PARTUUID=r rw quiet", PARTUUIDS["USR-B"], "v", HASH).split()
    assert options[:3] == ["root=PARTUUID=r", "rw", "quiet"]
    assert f"usrhash={HASH}" in options
    assert f"systemd.verity_usr_data=PARTUUID={PARTUUIDS['USR-B']}" in options
    assert options[-2:] == list(TRIAL_ARGUMENTS)
    assert without_trial_arguments(" ".join(options)).split() == options[:-2]


def test_no_update_while_this_boot_is_on_trial() -> None:
    assert trial_refusal(None) is None
    assert trial_refusal(entry("flotilla-a.conf", "0.1.0")) is None
    assert "not marked good yet" in trial_refusal(entry("flotilla-b+2-1.conf", "0.1.1"))
