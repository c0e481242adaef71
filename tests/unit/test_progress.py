"""Live progress only on a terminal: the decision, the streams it looks at, and what a wait
prints (nothing extra) where stderr is a file or a pipe."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flotilla.steps import Detail, progress_wanted, stream_wants_progress
from imagebuild.package_progress import count_installed, installed_note

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("is_terminal", "term", "wanted"),
    [
        (True, "xterm-256color", True),
        (True, None, True),  # a terminal without TERM (sudo -i, some containers) still redraws
        (True, "dumb", False),
        (False, "xterm-256color", False),
        (False, None, False),
    ],
)
def test_progress_only_on_a_terminal_that_redraws(
    is_terminal: bool, term: str | None, wanted: bool
) -> None:
    assert progress_wanted(is_terminal, term) is wanted


def test_a_pipe_or_file_gets_no_progress_and_a_pty_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    assert not stream_wants_progress(io.StringIO())
    primary, secondary = os.openpty()
    try:
        with open(secondary, "w", closefd=False) as terminal:
            assert stream_wants_progress(terminal)
            monkeypatch.setenv("TERM", "dumb")
            assert not stream_wants_progress(terminal)
    finally:
        os.close(primary)
        os.close(secondary)


WAIT = """
import time
from flotilla.steps import waiting
with waiting("booting") as wait:
    time.sleep(0.3)
    wait.update("still booting")
    wait.echo("step one")
    time.sleep(0.3)
print("done")
"""


def test_a_wait_without_a_terminal_prints_only_its_lines() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WAIT], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout == "step one\ndone\n"
    assert result.stderr == ""


def test_a_wait_on_a_terminal_draws_a_spinner_with_the_seconds() -> None:
    primary, secondary = os.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "80"}
    process = subprocess.Popen(
        [sys.executable, "-c", WAIT], cwd=REPO, stdout=subprocess.PIPE, stderr=secondary, env=env
    )
    out, _ = process.communicate(timeout=30)
    os.close(secondary)
    drawn = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        drawn += chunk
    os.close(primary)
    assert process.returncode == 0
    assert out == b"step one\ndone\n"
    assert b"booting [0s]" in drawn


STATUS = """Package: base-files
Status: install ok installed

Package: half
Status: install ok unpacked

Package: dash
Status: install ok installed
"""


def test_installed_packages_are_counted_from_dpkg_status() -> None:
    assert count_installed(STATUS) == 2
    assert count_installed("") == 0


def test_the_package_note_follows_the_tree(tmp_path: Path) -> None:
    note = installed_note(tmp_path)
    assert note() == "starting"
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(STATUS)
    assert note() == "2 installed"
    status.write_text(STATUS + "\nPackage: bash\nStatus: install ok installed\n")
    os.utime(status, ns=(1, 1))  # a new mtime, as dpkg's rename gives
    assert note() == "3 installed"


def test_a_step_detail_is_read_at_each_redraw() -> None:
    counts = iter(["1 installed", "5 installed"])
    detail = Detail("install 3 packages", lambda: next(counts))
    assert str(detail.__rich__()) == "install 3 packages (1 installed)"
    assert str(detail.__rich__()) == "install 3 packages (5 installed)"


def test_a_step_detail_that_cannot_be_read_leaves_the_name() -> None:
    def unreadable() -> str:
        raise FileNotFoundError("status")

    assert str(Detail("bootstrap", unreadable).__rich__()) == "bootstrap"
