"""`pip install .` outside the checkout gives working tools that read their data from the
installed package: a real (not editable) install into a fresh venv, every tool run from another
directory.

Dependencies come from PyPI (pip's cache makes later runs quick), pinned to the versions this
interpreter has, so the venv holds what the other tests ran against.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from imagebuild.cache import tree_files
from imagebuild.image_spec import DEFAULT_IMAGE_SPEC, load_image_spec
from imagebuild.rootfs import ROOTFS_FILES, rootfs_key
from imagebuild.spec import DEFAULT_SPEC, load_spec
from imagebuild.tree import IMAGE_FILES, tree_key

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
INSTALL_TIMEOUT = 600
pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 180)
# Run by the venv's python: where the data is found, and the rootfs and image cache keys, which
# hash every file the image is made of (image-files, rootfs-files, units, the machines' code).
PROBE = """
import importlib.metadata, json
from flotilla.resources import code_root, data_path
from imagebuild.image_spec import DEFAULT_IMAGE_SPEC, load_image_spec
from imagebuild.rootfs import rootfs_key
from imagebuild.spec import DEFAULT_SPEC, load_spec
from imagebuild.cache import tree_files
from imagebuild.rootfs import ROOTFS_FILES
from imagebuild.tree import IMAGE_FILES, tree_key
from fleetlab.machine import INIT_SCRIPT
print(json.dumps({
    "trees": {str(t): [name for name, _ in tree_files(t)] for t in (IMAGE_FILES, ROOTFS_FILES)},
    "paths": {
        "units": str(data_path("units")),
        "templates": str(data_path("cloud-config")),
        "image_files": str(IMAGE_FILES),
        "image_spec": str(DEFAULT_IMAGE_SPEC),
        "code_root": str(code_root()),
        "init_script": str(INIT_SCRIPT),
    },
    "direct_url": json.loads(
        importlib.metadata.distribution("flotilla").read_text("direct_url.json")
    ),
    "rootfs_key": rootfs_key(load_spec(DEFAULT_SPEC)),
    "tree_key": tree_key(load_image_spec(DEFAULT_IMAGE_SPEC), "rootfs"),
}))
"""


def run(argv: list[str | Path], cwd: Path, timeout: float = 120) -> str:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def constraints() -> str:
    """This interpreter's distributions as pins (flotilla itself left out)."""
    pins = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}
    pins.pop("flotilla", None)
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def copy_checkout(target: Path) -> None:
    """The checkout's files as git sees them (tracked and new, not ignored): pip builds in the
    source directory and would leave build/ and *.egg-info in the checkout itself."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPO)
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_symlink() or source.is_file():  # a tracked file deleted here is skipped
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name, follow_symlinks=False)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("packaging")
    assert not root.is_relative_to(REPO)
    venv, source, pins = root / "venv", root / "source", root / "constraints.txt"
    copy_checkout(source)
    pins.write_text(constraints())
    run([sys.executable, "-m", "venv", venv], root)
    pip = [venv / "bin/python", "-m", "pip", "install", "--quiet", "--no-input"]
    run([*pip, "--constraint", pins, source], root, timeout=INSTALL_TIMEOUT)
    shutil.rmtree(source)  # nothing may be read from the copy either
    return venv


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """The current directory for the tools: neither the checkout nor the venv."""
    return tmp_path


@pytest.fixture(scope="module")
def probe(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return json.loads(run([venv / "bin/python", "-c", PROBE], tmp_path_factory.mktemp("probe")))


def test_flotilla_is_installed_into_the_venv_not_linked(venv: Path, probe: dict[str, Any]) -> None:
    assert not probe["direct_url"].get("dir_info", {}).get("editable", False)
    assert Path(probe["paths"]["code_root"]).is_relative_to(venv)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_tool_answers_help_and_version(venv: Path, elsewhere: Path, script: str) -> None:
    tool = venv / "bin" / script
    short = run([tool, "-h"], elsewhere)
    assert "usage" in short.lower()
    assert run([tool, "--help"], elsewhere) == short
    assert "0.1.0" in run([tool, "--version"], elsewhere)


def test_the_main_tools_work_from_another_directory(venv: Path, elsewhere: Path) -> None:
    assert "list-units" in run([venv / "bin/fleetctl", "--help"], elsewhere)
    assert "--etcd_servers" in run([venv / "bin/fleetd", "--help"], elsewhere)
    assert "--ignition-config" in run([venv / "bin/flotilla-qemu", "--help"], elsewhere)
    # The manifest `imagebuild build` reads by default is the installed one.
    build_help = "".join(run([venv / "bin/imagebuild", "build", "--help"], elsewhere).split())
    installed_spec = next(venv.glob("lib/python*/site-packages/imagebuild/image.yaml"))
    assert f"[default:{installed_spec}]" in build_help


def test_data_is_read_from_the_installed_package(venv: Path, probe: dict[str, Any]) -> None:
    for name, path in probe["paths"].items():
        assert Path(path).is_relative_to(venv), (name, path)
    assert os.access(probe["paths"]["init_script"], os.X_OK)  # unshare executes it
    installed = sorted(probe["trees"].values())
    assert installed == sorted([n for n, _ in tree_files(t)] for t in (IMAGE_FILES, ROOTFS_FILES))
    # Every file the image is made of arrived, with its mode: an installed imagebuild builds
    # the same rootfs and image tree as the checkout.
    assert probe["rootfs_key"] == rootfs_key(load_spec(DEFAULT_SPEC))
    assert probe["tree_key"] == tree_key(load_image_spec(DEFAULT_IMAGE_SPEC), "rootfs")


def test_flotilla_unit_renders_the_installed_example(
    venv: Path, probe: dict[str, Any], elsewhere: Path
) -> None:
    spec = Path(probe["paths"]["units"]) / "examples/hello-web.yaml"
    unit = run([venv / "bin/flotilla-unit", "render", spec], elsewhere)
    assert "ExecStart=" in unit and "localhost/busybox" in unit
