"""A/B /usr updates under QEMU (TCG), in one VM lifecycle (every boot costs about a minute):

1. version N (slot A) updates to N.1: `flotilla-update update now` writes USR-B, reboots into
   it on trial, the health check passes and systemd-bless-boot marks it good; ROOT's files stay;
2. a corrupted payload is refused, with nothing written (slot A's entry is still there: the
   agent removes the passive slot's entry before it writes anything);
3. N.2 goes into slot A again and is marked good;
4. a broken N.3 (its signed manifest names a root hash that is not its /usr's, so the initrd
   cannot mount /usr) is tried once in slot B, reboots from the initrd by itself and
   systemd-boot falls back to slot A, N.2, without a human.

The payloads are the build's own (build/update), re-signed with the build's key under new
versions: the /usr bytes are the same in every slot, so the version a slot runs is the one its
boot entry says. They are served by the real `imagebuild serve-update` on loopback, which the
VM reaches as 10.0.2.100 through a guestfwd rule (its network stays restrict=on).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from flotilla.process import run
from flotilla.update.manifest import MANIFEST_NAME, manifest_bytes, parse_manifest
from imagebuild.image import Artifacts
from imagebuild.payload import DEV_KEY_NAME, sign
from qemu.badness import ANSI_ESCAPE, format_findings, scan_console
from qemu.vm import Vm
from tests.vm.conftest import OUTPUT_DIR, REPO, RUN_ROOT, vm_config

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]

WRONG_ROOT_HASH = "0" * 64
# What the broken slot's boot may (and must) show on the console; the fallback boot after it
# is held to the usual standard.
BROKEN_BOOT = [
    r"device-mapper: verity: .*: (?:meta)?data block \d+ is corrupted",
    r"I/O error",
    r"erofs",
    r"Failed to mount|Dependency failed for|Failed to start",
    r"emergency",
]


def publish(build: Artifacts, directory: Path, version: str, root_hash: str | None = None) -> Path:
    """build/update as version `version` (and, to break it, another root hash), re-signed."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for path in build.update.iterdir():
        if path.name not in (MANIFEST_NAME, f"{MANIFEST_NAME}.sig"):
            os.link(path, directory / path.name)
    manifest = parse_manifest((build.update / MANIFEST_NAME).read_bytes())
    manifest = replace(manifest, version=version, root_hash=root_hash or manifest.root_hash)
    (directory / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))
    sign(build.update.parent / DEV_KEY_NAME, directory / MANIFEST_NAME)
    return directory


def serve_as(source: Path, served: Path) -> None:
    """What the server answers from now on: `source`'s files (hard links, swapped whole)."""
    if served.exists():
        shutil.rmtree(served)
    shutil.copytree(source, served, copy_function=os.link)


@contextmanager
def update_server(directory: Path) -> Iterator[int]:
    """`imagebuild serve-update` on 127.0.0.1 (a port it picks); yields the port."""
    server = subprocess.Popen(
        [sys.executable, "-c", "from imagebuild.cli import main; main()", "serve-update",
         "--port", "0", "--dir", str(directory)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        yield int(re.search(r":(\d+)/?$", url).group(1))  # type: ignore[union-attr]
    finally:
        server.terminate()
        server.wait(timeout=10)


def status(vm: Vm) -> dict:
    return json.loads(vm.ssh("sudo flotilla-update status --output json"))


def wait_until_blessed(vm: Vm, slot: str, timeout: float = 300) -> dict:
    """The booted slot's entry lost its boot counter (systemd-bless-boot) after the health check."""
    deadline = time.monotonic() + timeout
    while True:
        now = status(vm)
        # flotilla-update-trial-end follows systemd-bless-boot: the trial is over once it ran.
        ended = vm.ssh("systemctl show --property=ActiveState --value flotilla-update-trial-end")
        if (now["boot_entry"], ended.strip()) == (f"flotilla-{slot}.conf", "active"):
            return now
        if time.monotonic() > deadline:
            units = vm.ssh("systemctl status --no-pager flotilla-update-health systemd-bless-boot"
                           " flotilla-update-trial-end", check=False)  # fmt: skip
            pytest.fail(f"slot {slot} never marked good: {now}\n{units}")
        time.sleep(3)


def update(vm: Vm, *args: str) -> subprocess.CompletedProcess[str]:
    return run([*vm.ssh_argv(), "sudo flotilla-update update now " + " ".join(args)],
               check=False, timeout=600)  # fmt: skip


def wait_for_new_boot(vm: Vm, before: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        time.sleep(2)
        try:
            if vm.boot_id() != before:
                return time.monotonic() - started
        except Exception:  # down while it reboots
            assert vm.alive(), "QEMU exited during the reboot"
    pytest.fail(f"no new boot within {timeout}s")


def entry_options(vm: Vm, entry: str) -> list[str]:
    text = vm.ssh(f"sudo cat /boot/loader/entries/{entry}")
    return text.split("\noptions ", 1)[1].split("\n", 1)[0].split()


def test_update_fallback_and_refusal_in_one_lifecycle(
    image: Artifacts, ssh_key: Path, tmp_path: Path
) -> None:
    version = json.loads(image.report.read_text())["version"]
    v1, v2, v3 = (f"{version}.{n}" for n in (1, 2, 3))
    payloads = tmp_path / "payloads"
    good1 = publish(image, payloads / v1, v1)
    good2 = publish(image, payloads / v2, v2)
    broken = publish(image, payloads / v3, v3, root_hash=WRONG_ROOT_HASH)
    corrupted = payloads / "corrupted"
    shutil.copytree(good2, corrupted)  # real copies: one byte of usr.img is flipped below
    with open(corrupted / "usr.img", "r+b") as handle:
        handle.seek(4096)
        byte = handle.read(1)[0]
        handle.seek(4096)
        handle.write(bytes([byte ^ 0xFF]))
    served = tmp_path / "served"
    serve_as(good1, served)
    timings: dict[str, float] = {}
    with update_server(served) as port:
        config = vm_config(image, ssh_key, host_services=(port,))
        vm = Vm(config, RUN_ROOT / config.name, identity=ssh_key)
        try:
            with vm:
                run_lifecycle(vm, port, served, (good2, corrupted, broken), (v1, v2, v3), timings)
        finally:
            console = vm.console_text()
            OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
            (OUTPUT_DIR / "update.console.log").write_text(console)
            (OUTPUT_DIR / "update.timings.json").write_text(json.dumps(timings, indent=2))
            shutil.rmtree(vm.files.directory, ignore_errors=True)
    check_console(console, timings)


def run_lifecycle(
    vm: Vm, port: int, served: Path, payloads: tuple[Path, ...], versions: tuple[str, ...],
    timings: dict[str, float],
) -> None:  # fmt: skip
    good2, corrupted, broken = payloads
    v1, v2, _ = versions
    timings["first boot"] = vm.wait_for_ssh(timeout=240)
    vm.ssh("sudo mkdir -p /etc/flotilla /var/lib/kept && echo before-update |"
           " sudo tee /var/lib/kept/file >/dev/null")  # fmt: skip
    vm.ssh(f"echo SERVER=http://10.0.2.100:{port}/ | sudo tee /etc/flotilla/update.conf")
    first = status(vm)
    assert (first["booted_slot"], first["boot_entry"]) == ("a", "flotilla-a.conf")
    assert f"update available: {v1}" in vm.ssh("sudo flotilla-update check")

    # 1. N -> N.1 into slot B, rebooting by itself (REBOOT_STRATEGY defaults to reboot).
    before, started = vm.boot_id(), time.monotonic()
    written = update(vm)
    # 255: ssh lost the connection to the reboot before the command's end reached it.
    assert written.returncode in (0, 255), written.stdout + written.stderr
    wait_for_new_boot(vm, before, timeout=300)
    vm.wait_for_ssh()
    timings["update to B and boot"] = time.monotonic() - started
    blessed = wait_until_blessed(vm, "b")
    timings["update to B until marked good"] = time.monotonic() - started
    assert blessed["version"] == v1
    assert blessed["next_boot"] == "flotilla-b.conf"
    assert blessed["slots"]["a"]["state"] == "good"
    parents = vm.ssh("lsblk --inverse --noheadings --output PARTLABEL /dev/mapper/usr").split()
    assert {"USR-B", "USR-B-VERITY"} <= set(parents) and "USR-A" not in parents
    assert vm.ssh("cat /var/lib/kept/file").strip() == "before-update"
    # Marked good: the trial's reboot-on-failure arguments are gone from the entry.
    assert "rd.emergency=reboot" not in entry_options(vm, "flotilla-b.conf")
    assert vm.ssh("systemctl is-active flotilla-update-health systemd-bless-boot").split() == [
        "active", "active"]  # fmt: skip
    assert "no update" in vm.ssh("sudo flotilla-update check")

    # 2. A corrupted payload: refused, and slot A (now passive) untouched.
    serve_as(corrupted, served)
    kernel_a = vm.ssh("sudo sha256sum /boot/flotilla/vmlinuz-a")
    refused = update(vm)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refused: usr.img does not match its sha256" in refused.stderr
    after = status(vm)
    assert after["slots"]["a"]["entry"] == "flotilla-a.conf"  # removed first by any real write
    assert vm.ssh("sudo sha256sum /boot/flotilla/vmlinuz-a") == kernel_a

    # 3. N.2 into slot A again (the reboot left to us), marked good.
    serve_as(good2, served)
    started = time.monotonic()
    written = update(vm, "--reboot-strategy", "off")
    assert written.returncode == 0, written.stderr
    assert status(vm)["next_boot"] == "flotilla-a+3.conf"
    vm.reboot(timeout=300)
    again = wait_until_blessed(vm, "a")
    timings["update to A until marked good"] = time.monotonic() - started
    assert again["version"] == v2

    # 4. A broken N.3 with one try: the initrd cannot mount /usr, reboots, A boots again.
    serve_as(broken, served)
    written = update(vm, "--reboot-strategy", "off", "--tries", "1")
    assert written.returncode == 0, written.stderr
    assert status(vm)["next_boot"] == "flotilla-b+1.conf"
    assert entry_options(vm, "flotilla-b+1.conf")[-2:] == ["rd.shell=0", "rd.emergency=reboot"]
    timings["console offset before the broken boot"] = len(vm.console_text())
    started = time.monotonic()
    vm.reboot(timeout=600)
    timings["broken boot and fallback"] = time.monotonic() - started
    fallen_back = status(vm)
    assert (fallen_back["booted_slot"], fallen_back["version"]) == ("a", v2)
    assert fallen_back["boot_entry"] == "flotilla-a.conf"
    assert fallen_back["slots"]["b"]["entry"] == "flotilla-b+0-1.conf"
    assert fallen_back["slots"]["b"]["state"].startswith("failed")
    assert fallen_back["next_boot"] == "flotilla-a.conf"
    assert vm.ssh("cat /var/lib/kept/file").strip() == "before-update"


def check_console(console: str, timings: dict[str, float]) -> None:
    """Clean until the broken boot; after it, only the broken boot's own failures, and the
    fallback boot's login prompt after the last of them. (The console is quiet: no kernel
    banner marks where one boot ends and the next begins.)"""
    offset = int(timings.get("console offset before the broken boot", len(console)))
    healthy, rest = console[:offset], console[offset:]
    findings = scan_console(healthy)
    assert not findings, format_findings(findings)
    if "broken boot and fallback" not in timings:
        return  # the lifecycle stopped earlier, and said why
    rest = ANSI_ESCAPE.sub("", rest)
    failed = list(re.finditer(r"Failed to mount (?:sysusr-usr|sysroot-usr)\.mount", rest))
    assert failed, rest[-3000:]
    assert " login:" in rest[failed[-1].end() :]
    findings = scan_console(rest, allow=BROKEN_BOOT)
    assert not findings, format_findings(findings)
