"""The root filesystem the machines boot: contents, stripping, caching, interrupted builds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imagebuild.cache import cached_keys, remove_build_dir
from imagebuild.spec import load_spec

pytestmark = pytest.mark.cluster
IMAGEBUILD = str(Path(sys.executable).with_name("imagebuild"))


def installed_packages(rootfs: Path) -> set[str]:
    status = (rootfs / "var/lib/dpkg/status").read_text()
    names = set()
    for stanza in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
        if fields.get("Status", "").endswith(" installed"):
            names.add(fields["Package"])
    return names


def test_rootfs_has_what_a_machine_needs(rootfs: Path) -> None:
    for path in (
        "lib/systemd/systemd",
        "usr/bin/dbus-daemon",
        "usr/bin/etcd",
        "usr/bin/etcdctl",
        "usr/sbin/sshd",
        "usr/bin/python3",
        "usr/lib/flotilla/python/aetcd",
        "usr/lib/flotilla/python/dbus_fast",
        "usr/lib/python3/dist-packages/systemd",
    ):
        assert (rootfs / path).exists(), path


def test_rootfs_has_no_docs_man_pages_locales_or_recommends(rootfs: Path) -> None:
    for directory in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        files = [p for p in (rootfs / directory).rglob("*") if not p.is_dir()]
        assert files == [], f"{directory}: {files[:5]}"
    # Recommended by openssh-server and python3, so absent only when recommends are off.
    assert not {"xauth", "ncurses-term", "libpython3-stdlib-dev"} & installed_packages(rootfs)


def test_rootfs_carries_no_machine_identity(rootfs: Path) -> None:
    assert (rootfs / "etc/machine-id").read_text() == ""
    assert list((rootfs / "etc/ssh").glob("ssh_host_*")) == []
    for unit in load_spec().masked_units:
        assert os.readlink(rootfs / "etc/systemd/system" / unit) == "/dev/null"


def test_unchanged_inputs_reuse_the_cached_tree(rootfs: Path) -> None:
    result = subprocess.run([IMAGEBUILD, "rootfs"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(rootfs)
    assert "bootstrap" not in result.stderr  # no build step ran


def test_killed_build_leaves_no_tree_under_a_key_and_no_mounts(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build = subprocess.Popen(
        [IMAGEBUILD, "rootfs", "--cache", str(cache)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    # Kill it while dpkg installs inside the chroot, when mmdebstrap has /proc, /sys, /dev mounted.
    marker = ".partial-*/var/lib/dpkg/info/base-files.list"
    while not list(cache.glob(marker)) and time.monotonic() < deadline:
        assert build.poll() is None, "the build ended before it could be interrupted"
        time.sleep(0.05)
    os.killpg(build.pid, signal.SIGKILL)
    build.wait()
    assert cached_keys(cache) == []
    assert str(cache) not in Path("/proc/mounts").read_text()


def test_removing_a_build_tree_never_reaches_through_its_mounts(tmp_path: Path) -> None:
    precious = tmp_path / "host-dir"
    precious.mkdir()
    (precious / "keep-me").write_text("host data")
    tree = tmp_path / ".partial-x"
    (tree / "dev").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(precious), str(tree / "dev")], check=True)
    remove_build_dir(tree)
    assert not tree.exists()
    assert (precious / "keep-me").read_text() == "host data"
