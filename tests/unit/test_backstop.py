"""The backstop's loop over a deadline file and the agent's units directory, with systemctl
replaced by a recorder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fleetd import backstop
from fleetd.deadline import encode, renewed

SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """systemctl's calls; `is-active` answers that every unit runs."""
    recorded: list[tuple[str, ...]] = []

    def systemctl(*args: str) -> subprocess.CompletedProcess[str]:
        recorded.append(args)
        out = "active\n" * (len(args) - 2) if args[0] == "is-active" else ""
        return subprocess.CompletedProcess(["systemctl", *args], 0, out, "")

    monkeypatch.setattr(backstop, "systemctl", systemctl)
    return recorded


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """The agent's directory: two units, a global one, and a file being written."""
    directory = tmp_path / "units"
    directory.mkdir()
    (directory / "a.service").write_text(SLEEPER)
    (directory / "b@1.service").write_text(SLEEPER + "[X-Fleet]\nMachineMetadata=a=b\n")
    (directory / "all.service").write_text(SLEEPER + "[X-Fleet]\nGlobal=true\n")
    (directory / ".x1y2.partial").write_text(SLEEPER)
    return directory


def write_deadline(path: Path, last_contact: float, units: Path) -> None:
    path.write_text(encode(renewed(last_contact, 10.0, last_contact, str(units))))


def test_no_file_no_action(tmp_path: Path, calls: list[tuple[str, ...]]) -> None:
    watcher = backstop.Backstop(tmp_path / "deadline", clock=Clock(1e6))
    assert watcher.step() == backstop.POLL_SECONDS
    assert calls == []


def test_a_passed_deadline_stops_then_kills_once(
    tmp_path: Path, units: Path, calls: list[tuple[str, ...]]
) -> None:
    path = tmp_path / "deadline"
    write_deadline(path, 100.0, units)
    clock = Clock(105.0)
    watcher = backstop.Backstop(path, clock=clock)
    assert watcher.step() == backstop.POLL_SECONDS
    assert calls == []
    clock.now = 108.6
    watcher.step()
    assert calls == [
        ("is-active", "--", "a.service", "b@1.service"),
        ("stop", "--no-block", "--", "a.service", "b@1.service"),
    ]
    watcher.step()
    assert len(calls) == 2  # once per deadline
    clock.now = 109.6
    watcher.step()
    assert calls[2:] == [
        ("is-active", "--", "a.service", "b@1.service"),
        ("kill", "--signal=SIGKILL", "--", "a.service", "b@1.service"),
    ]
    clock.now = 200.0
    watcher.step()
    assert len(calls) == 4


def test_a_unit_loaded_after_the_last_renewal_is_stopped_too(
    tmp_path: Path, units: Path, calls: list[tuple[str, ...]]
) -> None:
    path = tmp_path / "deadline"
    write_deadline(path, 100.0, units)
    (units / "late.service").write_text(SLEEPER)
    backstop.Backstop(path, clock=Clock(108.6)).step()
    assert calls[-1] == ("stop", "--no-block", "--", "a.service", "b@1.service", "late.service")


def test_a_renewed_deadline_is_enforced_again(
    tmp_path: Path, units: Path, calls: list[tuple[str, ...]]
) -> None:
    path = tmp_path / "deadline"
    write_deadline(path, 100.0, units)
    clock = Clock(108.6)
    watcher = backstop.Backstop(path, clock=clock)
    watcher.step()
    write_deadline(path, 110.0, units)
    clock.now = 112.0
    watcher.step()
    assert [call[0] for call in calls] == ["is-active", "stop"]
    clock.now = 118.6
    watcher.step()
    assert [call[0] for call in calls] == ["is-active", "stop", "is-active", "stop"]


def test_a_failed_stop_is_done_unit_by_unit(
    tmp_path: Path, units: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded: list[tuple[str, ...]] = []

    def systemctl(*args: str) -> subprocess.CompletedProcess[str]:
        recorded.append(args)
        several = len(args) > 4 if args[0] == "stop" else len(args) > 3
        if args[0] == "is-active":  # one line for two units: it refused a name
            return subprocess.CompletedProcess(args, 3, "active\n", "")
        return subprocess.CompletedProcess(args, 1 if several else 0, "", "refused")

    monkeypatch.setattr(backstop, "systemctl", systemctl)
    path = tmp_path / "deadline"
    write_deadline(path, 100.0, units)
    backstop.Backstop(path, clock=Clock(108.6)).step()
    assert recorded[-2:] == [
        ("stop", "--no-block", "--", "a.service"),
        ("stop", "--no-block", "--", "b@1.service"),
    ]


def test_a_systemctl_that_hangs_is_tried_again(
    tmp_path: Path, units: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "deadline"
    write_deadline(path, 100.0, units)
    attempts = []

    def hanging(*args: str) -> subprocess.CompletedProcess[str]:
        attempts.append(args)
        raise subprocess.TimeoutExpired(["systemctl", *args], backstop.SYSTEMCTL_TIMEOUT)

    monkeypatch.setattr(backstop, "systemctl", hanging)
    watcher = backstop.Backstop(path, clock=Clock(108.6))
    assert watcher.step() == backstop.POLL_SECONDS
    watcher.step()
    assert len(attempts) == 2


def test_a_file_that_is_not_a_deadline_is_ignored_and_reported_once(
    tmp_path: Path, calls: list[tuple[str, ...]], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "deadline"
    path.write_text("{half a file")
    watcher = backstop.Backstop(path, clock=Clock(1e6))
    watcher.step()
    watcher.step()
    assert calls == []
    assert len([r for r in caplog.records if "not a deadline" in r.getMessage()]) == 1
