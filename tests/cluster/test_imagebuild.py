"""`imagebuild build` on bad input: a clear message naming the manifest line, exit status 1,
and nothing left under the output names. Real builds (root, mmdebstrap, apt, mkfs)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from imagebuild.cache import cached_keys

REPO = Path(__file__).resolve().parents[2]
IMAGEBUILD = REPO / ".venv/bin/imagebuild"
SHIPPED = (REPO / "imagebuild/image.yaml").read_text()

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(600),
    pytest.mark.skipif(os.geteuid() != 0, reason="image builds need root"),
]


def write_manifest(tmp_path: Path, text: str) -> Path:
    text = text.replace("rootfs: rootfs.yaml", f"rootfs: {REPO / 'imagebuild/rootfs.yaml'}")
    path = tmp_path / "image.yaml"
    path.write_text(text)
    return path


def build(manifest: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IMAGEBUILD, "build", "--spec", manifest, "--out", out],
        capture_output=True,
        text=True,
        check=False,
    )


def line_of(text: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


def assert_failed_cleanly(result: subprocess.CompletedProcess[str], out: Path) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == [], f"left behind: {left}"


def test_unknown_key_is_refused_with_its_line(tmp_path: Path) -> None:
    text = SHIPPED.replace("version: ", "colour: blue\nversion: ", 1)
    manifest = write_manifest(tmp_path, text)
    result = build(manifest, tmp_path / "out")
    assert_failed_cleanly(result, tmp_path / "out")
    assert f"{manifest}:{line_of(text, 'colour')}: colour: unknown key" in result.stderr


def test_partitions_that_do_not_fit_the_disk(tmp_path: Path) -> None:
    text = SHIPPED.replace("partitions:\n", "disk_size: 4GiB\npartitions:\n", 1)
    result = build(write_manifest(tmp_path, text), tmp_path / "out")
    assert_failed_cleanly(result, tmp_path / "out")
    assert re.search(r"partitions need 7.3 GiB .* more than disk_size 4 GiB", result.stderr)


def test_a_manifest_without_a_kernel(tmp_path: Path) -> None:
    text = SHIPPED.replace("  - linux-image-amd64\n", "", 1)
    manifest = write_manifest(tmp_path, text)
    result = build(manifest, tmp_path / "out")
    assert_failed_cleanly(result, tmp_path / "out")
    assert f"{manifest}:{line_of(text, 'packages:')}: packages: no kernel" in result.stderr


def test_an_unknown_package_is_named_with_its_line_before_installing(tmp_path: Path) -> None:
    text = SHIPPED.replace("  - sudo\n", "  - sudo\n  - no-such-package-flotilla\n", 1)
    manifest = write_manifest(tmp_path, text)
    result = build(manifest, tmp_path / "out")
    assert_failed_cleanly(result, tmp_path / "out")
    line = line_of(text, "no-such-package-flotilla")
    assert f"{manifest}:{line}: packages: no package named 'no-such-package-flotilla'" in (
        result.stderr
    )
    assert "install 19 packages" not in result.stderr  # it stopped before installing


def test_usr_bigger_than_its_slot_leaves_no_image(tmp_path: Path) -> None:
    text = SHIPPED.replace("size: 2GiB\n    uuid: 7130", "size: 64MiB\n    uuid: 7130")
    text = text.replace("size: 2GiB\n    uuid: e03d", "size: 64MiB\n    uuid: e03d")
    out = tmp_path / "out"
    result = build(write_manifest(tmp_path, text), out)
    assert_failed_cleanly(result, out)
    assert re.search(r"/usr needs \d+(\.\d)? MiB, more than USR-A's 64 MiB", result.stderr)


def test_a_killed_build_leaves_no_mounts_no_tree_and_no_image(tmp_path: Path) -> None:
    # One more package than the shipped manifest: a tree that is not in the cache yet.
    text = SHIPPED.replace("  - sudo\n", "  - sudo\n  - less\n", 1)
    out, cache = tmp_path / "out", Path(os.environ.get("FLOTILLA_CACHE", "/var/cache/flotilla"))
    trees_before = cached_keys(cache / "image-tree")
    build = subprocess.Popen(
        [IMAGEBUILD, "build", "--spec", write_manifest(tmp_path, text), "--out", out],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it while dpkg installs the kernel inside the chroot (/proc, /sys, /dev mounted there).
    marker = ".partial-*/var/lib/dpkg/info/linux-image-*.list"
    deadline = time.monotonic() + 300
    while not list((cache / "image-tree").glob(marker)) and time.monotonic() < deadline:
        assert build.poll() is None, "the build ended before it could be interrupted"
        time.sleep(0.05)
    os.killpg(build.pid, signal.SIGKILL)
    build.wait()
    assert cached_keys(cache / "image-tree") == trees_before
    assert str(cache) not in Path("/proc/mounts").read_text()
    assert not out.exists() or list(out.iterdir()) == []
