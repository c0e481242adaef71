"""The image part of `make demo`: boot the built image under QEMU (UEFI, TCG), show what it is,
and stop it again.

    python -m qemu.demo [--image build/flotilla.qcow2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from flotilla.process import run

from .command import VmConfig
from .vm import Vm

REPO = Path(__file__).resolve().parents[1]
LOOK = [
    "cat /etc/os-release | head -2",
    "systemctl is-system-running --wait",
    "findmnt --noheadings --output TARGET,SOURCE,FSTYPE,OPTIONS /usr",
    "lsblk --output NAME,SIZE,PARTLABEL,MOUNTPOINTS /dev/vda",
    "systemd-analyze | head -1",
    "etcd --version | head -1; podman --version; fleetctl version",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=REPO / "build/flotilla.qcow2")
    image = parser.parse_args().image
    with tempfile.TemporaryDirectory() as keys:
        key = Path(keys) / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
        config = VmConfig(
            image=image, name="demo", authorized_keys=key.with_suffix(".pub"), disk_size="10G"
        )
        started = time.monotonic()
        with Vm(config, Path("/var/tmp/flotilla-qemu/demo"), identity=key) as vm:
            print(f"booting {image.name} (UEFI, TCG); console: {vm.files.console}")
            print(f"ssh answers after {vm.wait_for_ssh():.1f}s")
            for command in LOOK:
                print(f"$ {command}")
                print(vm.ssh(command, check=False).rstrip())
            print(f"up and checked in {time.monotonic() - started:.1f}s; stopping the VM")


if __name__ == "__main__":
    main()
