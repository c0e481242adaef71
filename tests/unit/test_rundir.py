"""flotilla-qemu's run directory: never one that someone else made, nor a planted symlink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qemu.rundir import RunDirError, claim_run_dir


def test_a_missing_run_directory_is_made_private(tmp_path: Path) -> None:
    run_dir = tmp_path / "root" / "vm1"
    claim_run_dir(run_dir)
    assert run_dir.stat().st_mode & 0o777 == 0o700
    claim_run_dir(run_dir)  # ours: used again


def test_a_planted_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir(mode=0o700)
    (tmp_path / "root" / "vm1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RunDirError, match="symlink"):
        claim_run_dir(tmp_path / "root" / "vm1")


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory away")
    run_dir = tmp_path / "root" / "vm1"
    run_dir.mkdir(parents=True, mode=0o700)
    os.chown(run_dir, 4242, 4242)
    with pytest.raises(RunDirError, match="belongs to uid 4242"):
        claim_run_dir(run_dir)


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "root" / "vm1"
    run_dir.mkdir(parents=True)
    run_dir.chmod(0o777)
    with pytest.raises(RunDirError, match="writable by others"):
        claim_run_dir(run_dir)
