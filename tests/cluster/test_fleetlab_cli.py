"""The fleetlab command line: what a user types, and what they get for bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetlab.lab import Lab
from tests.cluster.test_lab import lab_leftovers
from tests.conftest import unique_lab_name

pytestmark = pytest.mark.cluster
FLEETLAB = str(Path(sys.executable).with_name("fleetlab"))


def fleetlab(lab: str, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLEETLAB, "--lab", lab, *args], capture_output=True, text=True, timeout=120, **kwargs
    )  # type: ignore[call-overload]


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("fleetlab: ") and expected in result.stderr, result.stderr


def test_up_ls_exec_down_from_the_command_line(rootfs: Path) -> None:
    name = unique_lab_name()
    try:
        up = fleetlab(name, "up", "--machines", "2")
        assert up.returncode == 0, up.stderr
        assert "2 machines up" in up.stdout
        listing = fleetlab(name, "ls").stdout.splitlines()
        assert listing[0].split() == ["MACHINE", "MACHINE-ID", "IP", "STATE", "NETWORK"]
        assert [row.split()[0::2] for row in listing[1:]] == [
            ["m1", "10.77.0.11", "connected"],
            ["m2", "10.77.0.12", "connected"],
        ]
        assert fleetlab(name, "exec", "m1", "--", "sh", "-c", "exit 7").returncode == 7
        echoed = fleetlab(name, "exec", "m2", "--", "hostname")
        assert echoed.stdout == "m2\n"
        assert_one_line_error(fleetlab(name, "up"), "already up with 2 machines")
        assert_one_line_error(fleetlab(name, "exec", "m9", "--", "true"), "no machine 'm9'")
        assert fleetlab(name, "kill", "m2").returncode == 0
        assert_one_line_error(fleetlab(name, "kill", "m2"), "fleetlab start m2")
        journal = fleetlab(name, "journal", "m1", "-u", "ssh.service")
        assert journal.returncode == 0 and "Started ssh.service" in journal.stdout
        assert fleetlab(name, "down").returncode == 0
    finally:
        Lab(name).down()
    assert_one_line_error(fleetlab(name, "ls"), "is not up")


def test_bad_names_and_counts_are_refused_before_anything_is_created() -> None:
    assert_one_line_error(fleetlab("Bad-Name", "ls"), "invalid lab name")
    name = unique_lab_name()
    assert_one_line_error(fleetlab(name, "up", "--machines", "0"), "between 1 and 64")
    assert not Lab(name).has_leftovers()


def test_refuses_to_run_without_root() -> None:
    # A user namespace where we are uid 1000 is an unprivileged user as far as fleetlab can tell.
    result = subprocess.run(
        ["unshare", "--user", "--map-user=1000", FLEETLAB, "ls"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "must run as root" in result.stderr


def test_down_cleans_up_after_an_up_that_was_killed_midway(rootfs: Path) -> None:
    name = unique_lab_name()
    up = subprocess.Popen(
        [FLEETLAB, "--lab", name, "up", "--machines", "3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lab = Lab(name)
    deadline = time.monotonic() + 30
    while not (lab.layout.state_dir / "machines").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(up.pid, signal.SIGKILL)
    up.wait()
    assert lab.has_leftovers()
    assert_one_line_error(fleetlab(name, "up"), "down` first")
    assert fleetlab(name, "down").returncode == 0
    assert lab_leftovers(lab) == []


def test_down_all_removes_only_what_fleetlab_made(tmp_path: Path) -> None:
    decoys = ["fl-decoy-x1", "flx-other"]  # another tool's namespaces, named alike
    (tmp_path / "notes").mkdir()  # a directory a user keeps in the state root
    (tmp_path / "notes" / "todo").write_text("keep me\n")
    for netns in decoys:
        subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        result = subprocess.run(
            [FLEETLAB, "--state-root", str(tmp_path), "down", "--all"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert all(netns in names for netns in decoys)
        assert (tmp_path / "notes" / "todo").read_text() == "keep me\n"
    finally:
        for netns in decoys:
            subprocess.run(["ip", "netns", "delete", netns], check=False)
