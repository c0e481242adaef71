"""Tooling as tests: ruff, formatting, and the layering rule that pure modules do no I/O."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUFF = str(Path(sys.executable).with_name("ruff"))
# Modules that decide things; they must stay testable without a machine, a network or a process.
PURE_MODULES = [
    "fleetlab/layout.py",
    "imagebuild/spec.py",
    "imagebuild/layout.py",
    "imagebuild/kmodules.py",
    "flotilla/manifest.py",
    "imagebuild/image_spec.py",
    "qemu/command.py",
    "qemu/badness.py",
    "fleetd/unitname.py",
    "fleetd/unitfile.py",
    "fleetd/model.py",
    "fleetd/keys.py",
    "fleetd/scheduler.py",
    "fleetd/cluster_plan.py",
    "fleetd/machine_plan.py",
    "fleetd/fencing.py",
    "fleetd/membership.py",
    "fleetd/body_gc.py",
    "fleetd/deadline.py",
    "provision/inventory.py",
    "provision/values.py",
    "podunits/spec.py",
    "podunits/fields.py",
    "podunits/placement.py",
    "provision/cloudconfig.py",
    "provision/cloudconfig_schema.py",
    "provision/cloudconfig_model.py",
    "provision/cloudconfig_yaml.py",
    "provision/cloudconfig_plan.py",
]
IO_MODULES = {"subprocess", "socket", "aetcd", "dbus_fast", "urllib", "asyncio", "os"}
IO_MODULES |= {"flotilla.process", "flotilla.steps"}  # flotilla.manifest is pure


def test_qemu_is_a_namespace_portion_next_to_qemu_qmp() -> None:
    """A qemu/__init__.py would shadow QEMU's own qemu.qmp package."""
    assert not (REPO / "qemu/__init__.py").exists()
    subprocess.run([sys.executable, "-c", "import qemu.qmp.legacy, qemu.vm"], check=True, cwd="/")


def test_ruff_check_is_clean() -> None:
    result = subprocess.run([RUFF, "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = subprocess.run(
        [RUFF, "format", "--check", "."], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_import_no_io(module: str) -> None:
    imports = imported_modules(REPO / module)
    assert not {name for name in imports if name.split(".")[0] in IO_MODULES or name in IO_MODULES}
