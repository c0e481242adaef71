"""Fixtures for the VM tier: the built image, an SSH key, and booted VMs whose console logs are
scanned for badness (kola-style) when they stop."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from flotilla.process import run
from imagebuild.image import Artifacts, build_image
from qemu.badness import format_findings, scan_console
from qemu.command import VmConfig
from qemu.vm import Vm

REPO = Path(__file__).resolve().parents[2]
IMAGE_OUT = REPO / "build"
OUTPUT_DIR = REPO / "build" / "test-output"
RUN_ROOT = Path("/var/tmp/flotilla-qemu")

BootVm = Callable[..., Vm]


@pytest.fixture(scope="session")
def image() -> Artifacts:
    """The OS image, built (or taken from the cache) once per session."""
    if os.geteuid() != 0:
        pytest.skip("building the image needs root")
    return build_image(out=IMAGE_OUT)


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vm-tests", "-f", key])
    return key


@contextmanager
def booted(config: VmConfig, key: Path, label: str) -> Iterator[Vm]:
    """A VM that is stopped afterwards; its console is saved and must show no badness."""
    vm = Vm(config, RUN_ROOT / config.name, identity=key)
    with vm:
        yield vm
    console = vm.console_text()
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUTPUT_DIR / f"{label}.console.log").write_text(console)
    shutil.rmtree(vm.files.directory, ignore_errors=True)
    findings = scan_console(console)
    assert not findings, f"console of {config.name}:\n{format_findings(findings)}"


def vm_config(image: Artifacts, key: Path, **changes: object) -> VmConfig:
    name = "vm" + secrets.token_hex(3)
    base = VmConfig(image=image.qcow2, name=name, authorized_keys=key.with_suffix(".pub"))
    return replace(base, **changes)


def direct_boot(image: Artifacts) -> dict[str, object]:
    """Boot the image's kernel and initramfs directly (no firmware, no boot loader)."""
    cmdline = image.cmdline.read_text().strip()
    return {"kernel": image.kernel, "initrd": image.initrd, "append": cmdline}
