"""The image tree's clean-up helpers, on small trees in tmp_path (no chroot, no root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagebuild.tree import dead_tmpfiles_link, exists_in_tree, script_interpreter


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A merged-/usr tree: /bin -> usr/bin, an absolute link, a relative one, a dead one."""
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/share/doc").mkdir(parents=True)
    (tmp_path / "var/log").mkdir(parents=True)
    (tmp_path / "usr/bin/kmod").write_text("binary")
    os.symlink("usr/bin", tmp_path / "bin")
    os.symlink("/bin/kmod", tmp_path / "usr/bin/modprobe")  # absolute: the tree's /, not the host's
    os.symlink("kmod", tmp_path / "usr/bin/lsmod")
    os.symlink("/usr/bin/gone", tmp_path / "usr/bin/dead")
    os.symlink("loop", tmp_path / "usr/bin/loop")
    return tmp_path


@pytest.mark.parametrize(
    ("path", "exists"),
    [
        ("/usr/bin/kmod", True),
        ("/bin/kmod", True),
        ("/usr/bin/modprobe", True),
        ("/bin/lsmod", True),
        ("/usr/bin/dead", False),
        ("/usr/bin/loop", False),
        ("/var/log/../log", True),
        ("/etc/passwd", False),  # exists on the host, not in the tree
    ],
)
def test_exists_in_tree_follows_links_inside_the_tree(tree: Path, path: str, exists: bool) -> None:
    assert exists_in_tree(tree, path) is exists


@pytest.mark.parametrize(
    ("line", "dead"),
    [
        ("L /var/log/README - - - - ../../usr/share/doc/systemd/README.logs\n", True),
        ("L /var/log/docs - - - - ../../usr/share/doc\n", False),
        ("L+ /etc/mtab - - - - /usr/bin/gone\n", True),
        ("d /var/log 0755 root root -\n", False),
        ("# L /x - - - - /nowhere\n", False),
    ],
)
def test_dead_tmpfiles_links(tree: Path, line: str, dead: bool) -> None:
    assert dead_tmpfiles_link(tree, line) is dead


def test_script_interpreter(tmp_path: Path) -> None:
    (tmp_path / "script").write_text("#!/usr/bin/perl -w\nprint 1;\n")
    (tmp_path / "env").write_text("#! /usr/bin/env python3\n")
    (tmp_path / "binary").write_bytes(b"\x7fELF\x02\x01")
    os.symlink("script", tmp_path / "link")
    assert script_interpreter(tmp_path / "script") == "/usr/bin/perl"
    assert script_interpreter(tmp_path / "env") == "/usr/bin/env"
    assert script_interpreter(tmp_path / "binary") is None
    assert script_interpreter(tmp_path / "link") is None
