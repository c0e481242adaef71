"""dm-verity on /usr under QEMU (TCG): a copy of the disk with one flipped byte in USR-A stops in
the initramfs, loudly, instead of using it (one boot of the corrupted copy with its kernel
directly, build/flotilla.cmdline). That the intact image boots with /usr on a verity device
pinned by the root hash in its boot entry is checked on test_image.py's UEFI machine, which
boots the same disk the same way: a boot of its own cost 40 s of the suite."""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from flotilla.process import run
from flotilla.update.manifest import MANIFEST_NAME
from imagebuild.image import Artifacts
from qemu.badness import ANSI_ESCAPE
from qemu.vm import Vm
from tests.vm.conftest import OUTPUT_DIR, direct_boot, vm_config

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

# The kernel's dm-verity line for a block whose hash does not match, and what the initramfs
# says when it cannot mount /usr (systemd's unit failure, then dracut's emergency shell).
CORRUPTION = re.compile(r"device-mapper: verity: [0-9:]+: data block 0 is corrupted")
# systemd 252 mounts /usr at /sysusr/usr first and binds it to /sysroot/usr.
USR_NOT_MOUNTED = re.compile(r"Failed to mount (?:sysusr-usr|sysroot-usr)\.mount")
BOOT_STOPPED = re.compile(r"Entering emergency mode")
FAILURE_WAIT = 240  # seconds: a TCG boot reaches the initramfs's mount of /usr in about 20


def report(image: Artifacts) -> dict:
    return json.loads(image.report.read_text())


def usr_offset(image: Artifacts) -> int:
    (usr,) = [p for p in report(image)["partitions"] if p["label"] == "USR-A"]
    return usr["offset"]


def test_the_recorded_root_hash_is_the_hash_of_the_usr_bytes(
    image: Artifacts, tmp_path: Path
) -> None:
    """veritysetup verify walks every block: the payload's usr.img and hash tree match the root
    hash in the report, the cmdline and the manifest; one flipped byte does not."""
    root_hash = report(image)["usr_root_hash"]
    manifest = json.loads((image.update / MANIFEST_NAME).read_text())
    assert manifest["root_hash"] == root_hash
    assert f"usrhash={root_hash}" in image.cmdline.read_text().split()
    usr, hash_tree = image.update / "usr.img", image.update / "usr.verity"
    run(["veritysetup", "verify", usr, hash_tree, root_hash])
    flipped = tmp_path / "usr.img"
    run(["cp", "--reflink=auto", usr, flipped])
    with open(flipped, "r+b") as handle:
        handle.seek(0)
        byte = handle.read(1)
        handle.seek(0)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert run(["veritysetup", "verify", flipped, hash_tree, root_hash], check=False).returncode


def test_a_flipped_byte_in_usr_a_stops_the_boot_visibly(
    image: Artifacts, ssh_key: Path, tmp_path: Path
) -> None:
    """Byte 0 of the erofs image is padding before its superblock: without verity the flip is
    harmless and would go unnoticed. With verity, the first read of block 0 fails."""
    disk = corrupted_copy(image, tmp_path / "corrupted.qcow2", usr_offset(image))
    config = replace(vm_config(image, ssh_key, **direct_boot(image)), image=disk)
    vm = Vm(config, Path("/var/tmp/flotilla-qemu") / config.name, identity=ssh_key)
    try:
        with vm:
            patterns = [CORRUPTION, USR_NOT_MOUNTED, BOOT_STOPPED]
            console = wait_for_console(vm, patterns, FAILURE_WAIT)
    finally:
        OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        (OUTPUT_DIR / "verity-corrupted.console.log").write_text(vm.console_text())
        shutil.rmtree(vm.files.directory, ignore_errors=True)
    assert " login:" not in console  # never got to the real system


def corrupted_copy(image: Artifacts, disk: Path, offset: int) -> Path:
    """A qcow2 copy-on-write copy of the image with the byte at `offset` inverted."""
    with open(image.raw, "rb") as raw:
        raw.seek(offset)
        value = raw.read(1)[0] ^ 0xFF
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image.qcow2, disk])
    run(["qemu-io", "-f", "qcow2", "-c", f"write -P {value} {offset} 1", disk])
    return disk


def wait_for_console(vm: Vm, patterns: list[re.Pattern[str]], timeout: float) -> str:
    """The console once every pattern has appeared; fails naming the missing ones at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        console = ANSI_ESCAPE.sub("", vm.console_text())  # systemd colours its unit names
        missing = [p.pattern for p in patterns if not p.search(console)]
        if not missing:
            return console
        if time.monotonic() > deadline or not vm.alive():
            tail = "\n".join(console.splitlines()[-40:])
            pytest.fail(f"console never showed {missing} within {timeout}s:\n{tail}")
        time.sleep(1)
