"""The OS image under QEMU (TCG), kola-style: one machine booted with UEFI from its disk, a
fresh clone booted with its kernel directly (at the same time: a TCG boot keeps about one core
busy, and the host has two), and a reboot. The UEFI machine also shows /usr on dm-verity
(test_verity.py checks the corrupted case). Every console log is scanned for badness when its
VM stops."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.process import run
from flotilla.update.manifest import MANIFEST_NAME, SIGNATURE_NAME
from imagebuild.image import Artifacts
from qemu.vm import Vm
from tests.vm.conftest import booted, direct_boot, vm_config

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

PLACEHOLDER_DISK_GUID = "00000000-0000-0000-0000-000000000001"
GIB = 1024**3
SETUID_ALLOWED = {
    "/usr/bin/chfn", "/usr/bin/chsh", "/usr/bin/gpasswd", "/usr/bin/mount", "/usr/bin/newgrp",
    "/usr/bin/passwd", "/usr/bin/su", "/usr/bin/sudo", "/usr/bin/umount",
    "/usr/lib/dbus-1.0/dbus-daemon-launch-helper", "/usr/lib/openssh/ssh-keysign",
}  # fmt: skip
SETGID_ALLOWED = {
    "/usr/bin/chage",
    "/usr/bin/expiry",
    "/usr/bin/ssh-agent",
    "/usr/sbin/unix_chkpwd",
}
BANNED_PATHS = [
    "/usr/share/man", "/usr/share/doc", "/usr/share/info", "/usr/include", "/usr/share/locale",
    "/usr/bin/apt", "/usr/bin/apt-get", "/usr/bin/dpkg", "/var/lib/dpkg", "/usr/bin/gcc",
    "/usr/bin/cc", "/usr/bin/perl",
]  # fmt: skip
# What may listen: sshd, systemd-resolved's stub on loopback, and networkd's DHCP client.
ALLOWED_LISTENERS = {("tcp", "*", 22), ("tcp", "127.0.0.53", 53), ("udp", "127.0.0.53", 53),
                     ("tcp", "127.0.0.54", 53), ("udp", "127.0.0.54", 53)}  # fmt: skip
TINY_IMAGE = """set -e
root=$(mktemp -d)
mkdir -p $root/usr/bin $root/lib64 $root/lib/x86_64-linux-gnu
cp /usr/bin/cat $root/usr/bin/
cp /lib64/ld-linux-x86-64.so.2 $root/lib64/
cp /lib/x86_64-linux-gnu/libc.so.6 $root/lib/x86_64-linux-gnu/
sudo tar -C $root -c . | sudo podman import --quiet - localhost/tiny
"""
PRUNE = r"\( -path /proc -o -path /sys -o -path /dev -o -path /run \) -prune -o"


@pytest.fixture(scope="module")
def clone(image: Artifacts, ssh_key: Path) -> Iterator[Vm]:
    """A fresh clone of the image booted with its kernel directly. `machine` starts it before its
    own boot so the two boots overlap; the clone's test stops it once it has what it checks."""
    config = vm_config(image, ssh_key, **direct_boot(image))
    with booted(config, ssh_key, "direct") as vm:
        yield vm


@pytest.fixture(scope="module")
def machine(image: Artifacts, ssh_key: Path, clone: Vm) -> Iterator[Vm]:
    """Booted with UEFI from the disk, on a disk grown to 10 GiB (so ROOT has room to grow)."""
    config = vm_config(image, ssh_key, disk_size="10G")
    with booted(config, ssh_key, "uefi") as vm:
        vm.wait_for_ssh()
        yield vm


@pytest.fixture(scope="module")
def first_boot(machine: Vm) -> dict[str, str]:
    """The identity the first boot made, read before anything else touches the machine."""
    return identity(machine)


def identity(vm: Vm) -> dict[str, str]:
    return {
        "machine_id": vm.ssh("cat /etc/machine-id").strip(),
        "disk_guid": vm.ssh(
            "sudo blkid --probe --match-tag PTUUID --output value /dev/vda"
        ).strip(),
        "host_key": vm.ssh("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").strip(),
        "root_bytes": vm.ssh(
            "lsblk --bytes --nodeps --noheadings --output SIZE /dev/disk/by-partlabel/ROOT"
        ).strip(),
    }


def test_ssh_answers_with_the_given_key_only(machine: Vm, tmp_path: Path) -> None:
    assert machine.ssh("whoami").strip() == "core"
    other = tmp_path / "other"  # a key the VM was never given
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other])
    argv = machine.ssh_argv()
    argv[argv.index("-i") + 1] = str(other)
    assert run([*argv, "true"], check=False).returncode == 255


def test_system_is_running_with_no_failed_units(machine: Vm) -> None:
    state = machine.ssh("systemctl is-system-running --wait", check=False).strip()
    failed = machine.ssh("systemctl --failed --no-legend --plain")
    assert (state, failed) == ("running", "")


def test_os_release_is_flotilla(machine: Vm) -> None:
    release = dict(
        line.split("=", 1)
        for line in machine.ssh("cat /etc/os-release").splitlines()
        if "=" in line
    )
    assert release["ID"] == "flotilla"
    assert release["VERSION_ID"] == "0.1.0"


def test_usr_is_read_only_from_usr_a(machine: Vm) -> None:
    source, options = machine.ssh("findmnt --noheadings --output SOURCE,OPTIONS /usr").split()
    assert options.split(",")[0] == "ro"
    # /usr is USR-A through dm-verity (test_verity.py): the device's parents are the slot's pair.
    parents = machine.ssh(f"lsblk --inverse --noheadings --output PARTLABEL {source}").split()
    assert {"USR-A", "USR-A-VERITY"} <= set(parents)
    assert "erofs" in machine.ssh("findmnt --noheadings --output FSTYPE /usr")
    remount = machine.ssh("sudo mount -o remount,rw /usr 2>&1; echo status=$?", check=False)
    assert "status=0" not in remount
    assert "status=0" not in machine.ssh("sudo touch /usr/x 2>&1; echo status=$?", check=False)


def test_usr_is_on_dm_verity_pinned_by_the_boot_entry(image: Artifacts, machine: Vm) -> None:
    """The boot entry's usrhash= is the build's root hash, /usr is the verity device over USR-A
    and its hash tree, and the image trusts (and checks with its own tools) the key that signed
    its own update payload."""
    report = json.loads(image.report.read_text())
    assert f"usrhash={report['usr_root_hash']}" in machine.ssh("cat /proc/cmdline").split()
    source = machine.ssh("findmnt --noheadings --output SOURCE /usr").strip()
    assert source == "/dev/mapper/usr"
    # The device-mapper UUID systemd-veritysetup (libcryptsetup) gives a verity device.
    dm = machine.ssh("basename $(readlink -f /dev/mapper/usr)").strip()
    assert machine.ssh(f"cat /sys/block/{dm}/dm/uuid").startswith("CRYPT-VERITY-")
    parents = machine.ssh("lsblk --inverse --noheadings --output PARTLABEL /dev/mapper/usr")
    assert {"USR-A", "USR-A-VERITY"} <= set(parents.split())
    shipped = machine.ssh("cat /usr/share/flotilla/update-keys/*.pub").split()[:2]
    signer = Path(image.update.parent / "update-signing-key.pub").read_text().split()[:2]
    assert shipped == signer
    assert verify_in_guest(machine, image.update) == report["version"]


def verify_in_guest(vm: Vm, payload: Path) -> str:
    """The payload's signed manifest, checked on the machine against /usr's trusted keys."""
    files = {name: base64.b64encode((payload / name).read_bytes()).decode()
             for name in (MANIFEST_NAME, SIGNATURE_NAME)}  # fmt: skip
    copy = "; ".join(f"echo {data} | base64 -d > $d/{name}" for name, data in files.items())
    check = (
        "python3 -c 'import sys; from pathlib import Path;"
        " from flotilla.update.verify import verified_manifest;"
        " print(verified_manifest(Path(sys.argv[1])).version)' $d"
    )
    return vm.ssh(f"set -e; d=$(mktemp -d); {copy}; {check}").strip()


def test_first_boot_made_an_identity_and_grew_root(first_boot: dict[str, str]) -> None:
    assert len(first_boot["machine_id"]) == 32 and first_boot["machine_id"] != "uninitialized"
    assert first_boot["disk_guid"] not in ("", PLACEHOLDER_DISK_GUID)
    assert "ED25519" in first_boot["host_key"]
    # The image's ROOT is 2 GiB; on a 10 GiB disk it takes the rest.
    assert int(first_boot["root_bytes"]) > 4 * GIB


def test_a_fresh_clone_boots_its_kernel_directly_with_its_own_identity(
    clone: Vm, first_boot: dict[str, str]
) -> None:
    clone.wait_for_ssh()
    assert clone.ssh("systemctl is-system-running --wait", check=False).strip() == "running"
    mine = identity(clone)
    clone.stop()  # its console is scanned when the module ends; it need not run until then
    assert mine["machine_id"] != first_boot["machine_id"]
    assert mine["disk_guid"] not in (first_boot["disk_guid"], PLACEHOLDER_DISK_GUID)
    assert mine["host_key"] != first_boot["host_key"]


def test_root_filesystem_follows_its_partition(machine: Vm, first_boot: dict[str, str]) -> None:
    filesystem = int(machine.ssh("df --block-size=1 --output=size / | tail -1").strip())
    assert filesystem > 0.9 * int(first_boot["root_bytes"])


def test_no_dead_symlinks(machine: Vm) -> None:
    dead = machine.ssh(f"sudo find / {PRUNE} -xtype l -print")
    assert dead == ""


def test_setuid_and_setgid_only_from_the_allowlist(machine: Vm) -> None:
    setuid = set(machine.ssh(f"sudo find / {PRUNE} -type f -perm -4000 -print").split())
    setgid = set(machine.ssh(f"sudo find / {PRUNE} -type f -perm -2000 -print").split())
    assert setuid <= SETUID_ALLOWED
    assert setgid <= SETGID_ALLOWED


def test_nothing_world_writable(machine: Vm) -> None:
    files = machine.ssh(f"sudo find / {PRUNE} -type f -perm -0002 -print")
    directories = machine.ssh(f"sudo find / {PRUNE} -type d -perm -0002 ! -perm -1000 -print")
    assert (files, directories) == ("", "")


def test_no_banned_paths_or_package_manager(machine: Vm) -> None:
    present = machine.ssh(
        " ".join(f"test -e {path} && echo {path};" for path in BANNED_PATHS) + " true"
    )
    assert present == ""
    # The package list stays, for the record.
    assert "podman\t" in machine.ssh("cat /usr/share/flotilla/packages.txt")


def test_only_allowed_ports_listen(machine: Vm) -> None:
    listeners = set()
    for line in machine.ssh("sudo ss --listening --numeric --tcp --udp --no-header").splitlines():
        protocol, _, _, _, local, *_ = line.split()
        address, _, port = local.rpartition(":")
        listeners.add((protocol, address.strip("[]").partition("%")[0], int(port)))
    listeners = {(p, "*" if a in ("0.0.0.0", "*", "::") else a, port) for p, a, port in listeners}
    listeners -= {(p, a, port) for p, a, port in listeners if (p, port) == ("udp", 68)}
    assert listeners <= ALLOWED_LISTENERS, listeners - ALLOWED_LISTENERS


def test_container_runtime_runs_a_container(machine: Vm) -> None:
    assert "crun" in machine.ssh("sudo podman info --format '{{.Host.OCIRuntime.Name}}'")
    # No registry here: an image of one binary and its libraries, imported from a tarball, run
    # on podman's default bridge network (netavark, iptables, the bridge and veth modules).
    machine.ssh(TINY_IMAGE)
    out = machine.ssh(
        "sudo podman run --rm localhost/tiny /usr/bin/cat /etc/hostname /proc/net/route"
    )
    assert "eth0" in out


def test_etcd_and_fleetd_run_when_configured(machine: Vm) -> None:
    assert "etcd Version" in machine.ssh("etcd --version")
    machine.ssh("sudo systemctl unmask etcd.service && sudo systemctl start etcd.service")
    config = 'etcd_servers=["http://127.0.0.1:2379"]\nmetadata="role=vm"\n'
    machine.ssh(f"sudo mkdir -p /etc/fleet && printf '{config}' | sudo tee /etc/fleet/fleet.conf")
    machine.ssh("sudo systemctl start fleetd.service", timeout=180)
    machines = machine.ssh("sudo fleetctl list-machines --no-legend --full", timeout=60)
    assert machine.ssh("cat /etc/machine-id").strip() in machines
    assert "role=vm" in machines


def test_reboot_comes_back_with_the_same_identity(machine: Vm, first_boot: dict[str, str]) -> None:
    # The disk's first boot ran Ignition (with no config here) and then the boot tooling took
    # the first-boot flag out of the boot entry, so the reboot does not run it again.
    assert "ignition.firstboot" in machine.ssh("cat /proc/cmdline")
    assert "ignition.firstboot" not in machine.ssh("sudo sh -c 'cat /boot/loader/entries/*'")
    machine.reboot()
    assert machine.ssh("systemctl is-system-running --wait", check=False).strip() == "running"
    assert identity(machine) == first_boot
    assert "ignition.firstboot" not in machine.ssh("cat /proc/cmdline")


def test_report_describes_the_image(image: Artifacts) -> None:
    report = json.loads(image.report.read_text())
    assert report["sizes"]["usr_filesystem_bytes"] <= report["sizes"]["usr_partition_bytes"]
    assert [p["label"] for p in report["partitions"]] == [
        "EFI-SYSTEM", "USR-A", "USR-B", "OEM", "USR-A-VERITY", "USR-B-VERITY", "ROOT"
    ]  # fmt: skip
