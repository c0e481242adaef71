"""install_update against real files: a payload served over loopback HTTP, regular files standing
in for the slot partitions, a directory for the ESP. What is written, in which order, and that a
refused payload writes nothing at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.update.agent import Installed, MachineState, install_update
from flotilla.update.config import UpdateConfig
from flotilla.update.machine import Partition, slot_entries
from flotilla.update.manifest import PayloadRefused
from flotilla.update.policy import TRIAL_ARGUMENTS, UpdateRefused
from flotilla.update.slots import SLOTS
from tests.unit.test_update_fetch import serving
from tests.unit.update_payloads import ROOT_HASH, make_key, make_payload, trust

UUIDS = {"USR-A": "aa", "USR-A-VERITY": "av", "USR-B": "bb", "USR-B-VERITY": "bv"}
SLOT_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_key(tmp_path_factory.mktemp("key"))


class Machine:
    """A machine booted from slot A (version 0.1.0) with a stale, failed entry for slot B."""

    def __init__(self, root: Path, key: Path) -> None:
        self.trusted = trust(key, root / "usr")
        self.esp = root / "esp"
        (self.esp / "loader/entries").mkdir(parents=True)
        (self.esp / "flotilla").mkdir()
        self.entry("flotilla-a.conf", "0.1.0")
        self.entry("flotilla-b+0-3.conf", "0.0.9")
        self.partitions = {}
        for label, uuid in UUIDS.items():
            path = root / label
            path.write_bytes(b"\0" * SLOT_BYTES)
            self.partitions[label] = Partition(path, uuid, SLOT_BYTES)
        self.state_dir = root / "state"

    def entry(self, name: str, version: str) -> None:
        (self.esp / "loader/entries" / name).write_text(f"title x\nversion {version}\noptions x\n")

    def state(self) -> MachineState:
        entries = slot_entries("flotilla", self.esp)
        booted = next(e for e in entries if e.slot.name == "a")
        return MachineState(self.partitions, SLOTS["a"], entries, booted, booted.version)

    def install(self, url: str, tries: int = 3) -> Installed:
        config = UpdateConfig(server=url, boot_tries=tries)
        return install_update(self.state(), config, lambda _: None, self.esp, self.trusted,
                              self.state_dir)  # fmt: skip

    def entries(self) -> list[str]:
        return sorted(p.name for p in (self.esp / "loader/entries").iterdir())

    def snapshot(self) -> dict[str, bytes]:
        files = [*self.esp.rglob("*"), *(p.path for p in self.partitions.values())]
        return {str(p): p.read_bytes() for p in files if p.is_file()}


@pytest.fixture
def machine(tmp_path: Path, key: Path) -> Machine:
    return Machine(tmp_path, key)


def test_an_update_writes_the_passive_slot_and_a_counted_entry_last(
    machine: Machine, key: Path, tmp_path: Path
) -> None:
    payload = tmp_path / "payload"
    make_payload(payload, key, version="0.1.1")
    with serving(payload) as url:
        installed = machine.install(url)
    assert (installed.version, installed.slot.name, installed.entry) == (
        "0.1.1",
        "b",
        "flotilla-b+3.conf",
    )
    assert machine.entries() == ["flotilla-a.conf", "flotilla-b+3.conf"]  # the stale B entry went
    usr = (payload / "usr.img").read_bytes()
    assert machine.partitions["USR-B"].path.read_bytes()[: len(usr)] == usr
    assert machine.partitions["USR-A"].path.read_bytes() == b"\0" * SLOT_BYTES
    verity = (payload / "usr.verity").read_bytes()
    assert machine.partitions["USR-B-VERITY"].path.read_bytes()[: len(verity)] == verity
    assert (machine.esp / "flotilla/vmlinuz-b").read_bytes() == (payload / "vmlinuz").read_bytes()
    assert (machine.esp / "flotilla/initrd-b").read_bytes() == (payload / "initrd").read_bytes()
    text = (machine.esp / "loader/entries/flotilla-b+3.conf").read_text()
    assert "version 0.1.1\n" in text and "linux /flotilla/vmlinuz-b\n" in text
    options = text.split("options ", 1)[1].split()
    assert f"usrhash={ROOT_HASH}" in options
    assert "systemd.verity_usr_data=PARTUUID=bb" in options
    assert "systemd.verity_usr_hash=PARTUUID=bv" in options
    assert options[-2:] == list(TRIAL_ARGUMENTS)
    assert not (machine.state_dir / "staging").exists()  # the download is not kept


def test_a_corrupted_payload_is_refused_with_nothing_written(
    machine: Machine, key: Path, tmp_path: Path
) -> None:
    payload = tmp_path / "payload"
    make_payload(payload, key, version="0.1.1")
    with open(payload / "initrd", "r+b") as handle:  # the last file: everything else was fine
        handle.write(b"X")
    before = machine.snapshot()
    with serving(payload) as url, pytest.raises(PayloadRefused, match="initrd does not match"):
        machine.install(url)
    assert machine.snapshot() == before


@pytest.mark.parametrize(("version", "reason"), [("0.1.0", "is the version"), ("0.0.1", "older")])
def test_the_same_or_an_older_version_is_refused_before_the_download(
    machine: Machine, key: Path, tmp_path: Path, version: str, reason: str
) -> None:
    payload = tmp_path / "payload"
    make_payload(payload, key, version=version)
    (payload / "usr.img").unlink()  # never asked for: the manifest alone is refused
    before = machine.snapshot()
    with serving(payload) as url, pytest.raises(UpdateRefused, match=reason):
        machine.install(url)
    assert machine.snapshot() == before


def test_a_payload_larger_than_the_slot_is_refused(
    machine: Machine, key: Path, tmp_path: Path
) -> None:
    payload = tmp_path / "payload"
    make_payload(payload, key, version="0.2.0")
    small = Partition(machine.partitions["USR-B"].path, "bb", 1024)
    machine.partitions["USR-B"] = small
    before = machine.snapshot()
    with serving(payload) as url, pytest.raises(UpdateRefused, match="larger than USR-B"):
        machine.install(url)
    assert machine.snapshot() == before


def test_no_update_while_the_booted_slot_is_on_trial(
    machine: Machine, key: Path, tmp_path: Path
) -> None:
    (machine.esp / "loader/entries/flotilla-a.conf").rename(
        machine.esp / "loader/entries/flotilla-a+2-1.conf"
    )
    with pytest.raises(UpdateRefused, match="not marked good yet"):
        machine.install("http://127.0.0.1:9/")
