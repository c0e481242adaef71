"""fleetd.systemd against a real systemd: PID 1 of a fleetlab machine, driven over D-Bus.

The module runs inside the machine (through systemd_probe.py, which prints JSON); each answer it
gives is checked against what `systemctl` says in the same machine.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from typing import Any

import pytest

from fleetlab.lab import Lab

pytestmark = [pytest.mark.cluster, pytest.mark.machines(1)]

PROBE = "/usr/lib/flotilla/src/tests/cluster/systemd_probe.py"
UNITS = "/run/fleet/units"
SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"
FAILING = "[Service]\nExecStart=/bin/false\n"
INSTALLABLE = SLEEPER + "\n[Install]\nWantedBy=multi-user.target\n"
SLOW_STOP = "[Service]\nExecStart=/bin/sleep infinity\nExecStop=/bin/sleep {seconds}\n"


def probe(lab: Lab, *args: str, ok: bool = True) -> dict[str, Any]:
    """Run the probe in m1; its JSON answer, which must be a success (or, if not `ok`, an error)."""
    result = lab.run("m1", ["python3", PROBE, *args], check=False)
    assert result.returncode == (0 if ok else 1), result.stdout + result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def spawn_probe(lab: Lab, service: str, *args: str) -> str:
    """Run the probe in m1 as a transient service, in the background; the file it writes to."""
    output = f"/run/{service}.jsonl"
    argv = ["systemd-run", f"--unit={service}", f"--property=StandardOutput=file:{output}"]
    lab.run("m1", [*argv, "python3", PROBE, *args])
    return output


def json_lines(lab: Lab, path: str) -> list[dict[str, Any]]:
    text = lab.run("m1", ["cat", path], check=False).stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_unit(lab: Lab, name: str, text: str) -> str:
    path = f"{UNITS}/{name}"
    lab.run("m1", ["sh", "-c", f"mkdir -p {UNITS} && printf %s {shlex.quote(text)} > {path}"])
    return path


def systemctl(lab: Lab, *args: str) -> str:
    return lab.run("m1", ["systemctl", *args], check=False).stdout.strip()


def active_state(lab: Lab, unit: str) -> str:
    return systemctl(lab, "show", "--value", "-p", "ActiveState", unit)


def state(load: str, active: str, sub: str) -> dict[str, str]:
    return {"load_state": load, "active_state": active, "sub_state": sub}


def wait_for(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """The test waits (the module under test does not poll): check's first true value."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return value


def test_linked_unit_reloads_and_starts(lab: Lab) -> None:
    path = write_unit(lab, "sleeper.service", SLEEPER)
    assert probe(lab, "link", path)["calls"] == {"LinkUnitFiles": 1}
    assert systemctl(lab, "is-enabled", "sleeper.service") == "linked-runtime"
    assert probe(lab, "reload")["calls"] == {"Reload": 1}
    probe(lab, "start", "sleeper.service")
    wait_for(lambda: active_state(lab, "sleeper.service") == "active", "sleeper to be active")
    answer = probe(lab, "states", "sleeper.service")
    assert answer["result"] == {"sleeper.service": state("loaded", "active", "running")}
    assert systemctl(lab, "show", "--value", "-p", "SubState", "sleeper.service") == "running"


def test_unit_with_install_section_is_enabled_for_this_boot(lab: Lab) -> None:
    path = write_unit(lab, "installable.service", INSTALLABLE)
    probe(lab, "link", path)
    probe(lab, "enable", path)
    probe(lab, "reload")
    assert systemctl(lab, "is-enabled", "installable.service") == "enabled-runtime"
    wants = "/run/systemd/system/multi-user.target.wants/installable.service"
    assert lab.run("m1", ["test", "-L", wants], check=False).returncode == 0
    # A unit without [Install] is left linked.
    plain = write_unit(lab, "plain.service", SLEEPER)
    probe(lab, "link", plain)
    probe(lab, "enable", plain)
    assert systemctl(lab, "is-enabled", "plain.service") == "linked-runtime"


def test_disabled_and_removed_unit_is_gone_after_reload(lab: Lab) -> None:
    path = write_unit(lab, "installable.service", INSTALLABLE)
    probe(lab, "link", path)
    probe(lab, "enable", path)
    probe(lab, "reload")
    probe(lab, "disable", "installable.service")
    lab.run("m1", ["rm", path])
    probe(lab, "reload")
    assert lab.run("m1", ["systemctl", "cat", "installable.service"], check=False).returncode != 0
    # Both the link and the [Install] symlink are gone.
    assert lab.run("m1", ["find", "/run/systemd/system", "-name", "installable*"]).stdout == ""
    answer = probe(lab, "states", "installable.service")
    assert answer["result"]["installable.service"]["load_state"] == "not-found"


def test_stop_returns_once_the_unit_is_inactive(lab: Lab) -> None:
    probe(lab, "link", write_unit(lab, "slow.service", SLOW_STOP.format(seconds=1)))
    lab.run("m1", ["systemctl", "start", "slow.service"])
    answer = probe(lab, "stop", "slow.service")["result"]
    assert answer["elapsed"] >= 1.0, "stop returned before ExecStop had run"
    assert answer["state"] == state("loaded", "inactive", "dead")
    assert active_state(lab, "slow.service") == "inactive"
    # Stopping what is stopped, or what systemd does not know, is done at once.
    assert probe(lab, "stop", "slow.service")["result"]["elapsed"] < 1.0
    answer = probe(lab, "stop", "missing.service")["result"]
    assert answer["state"] == state("not-found", "inactive", "dead")


def test_stop_reports_a_timeout_and_a_canceled_job(lab: Lab) -> None:
    probe(lab, "link", write_unit(lab, "slow.service", SLOW_STOP.format(seconds=3)))
    lab.run("m1", ["systemctl", "start", "slow.service"])
    answer = probe(lab, "stop", "slow.service", "--timeout", "0.5", ok=False)
    assert "did not finish within 0.5 s" in answer["error"]
    wait_for(lambda: active_state(lab, "slow.service") == "inactive", "the stop to finish")

    lab.run("m1", ["systemctl", "start", "slow.service"])
    output = spawn_probe(lab, "probe-stop", "stop", "slow.service")
    wait_for(lambda: active_state(lab, "slow.service") == "deactivating", "the stop to begin")
    lab.run("m1", ["systemctl", "start", "--no-block", "slow.service"])  # replaces the stop job
    (answer,) = wait_for(lambda: json_lines(lab, output), "the probe's stop to return")
    assert "job result 'canceled'" in answer["error"]


def test_failed_unit_is_reported_and_reset(lab: Lab) -> None:
    probe(lab, "link", write_unit(lab, "failing.service", FAILING))
    probe(lab, "start", "failing.service")
    wait_for(lambda: active_state(lab, "failing.service") == "failed", "failing to fail")
    answer = probe(lab, "states", "failing.service")
    assert answer["result"]["failing.service"] == state("loaded", "failed", "failed")
    probe(lab, "reset-failed", "failing.service")
    assert active_state(lab, "failing.service") == "inactive"
    answer = probe(lab, "states", "failing.service")
    assert answer["result"]["failing.service"] == state("loaded", "inactive", "dead")
    # Neither a unit that is not failed nor one systemd does not know is an error.
    probe(lab, "reset-failed", "failing.service")
    probe(lab, "reset-failed", "missing.service")


def test_kill_unit_signals_every_process(lab: Lab) -> None:
    probe(lab, "link", write_unit(lab, "sleeper.service", SLEEPER))
    probe(lab, "start", "sleeper.service")
    wait_for(lambda: active_state(lab, "sleeper.service") == "active", "sleeper to be active")
    probe(lab, "kill", "sleeper.service")
    wait_for(lambda: active_state(lab, "sleeper.service") == "failed", "the killed unit to fail")
    assert systemctl(lab, "show", "--value", "-p", "Result", "sleeper.service") == "signal"
    probe(lab, "kill", "missing.service")


def test_unit_states_reads_several_units_in_one_call(lab: Lab) -> None:
    probe(lab, "link", write_unit(lab, "running.service", SLEEPER))
    probe(lab, "link", write_unit(lab, "idle.service", SLEEPER))
    lab.run("m1", ["systemctl", "start", "running.service"])
    answer = probe(lab, "states", "running.service", "idle.service", "missing.service")
    assert answer["calls"] == {"ListUnitsByNames": 1}
    assert answer["result"] == {
        "running.service": state("loaded", "active", "running"),
        "idle.service": state("loaded", "inactive", "dead"),
        "missing.service": state("not-found", "inactive", "dead"),
    }
    assert probe(lab, "states")["calls"] == {}


def test_start_of_a_missing_unit_is_an_error_naming_it(lab: Lab) -> None:
    answer = probe(lab, "start", "missing.service", ok=False)
    assert answer["error_name"] == "org.freedesktop.systemd1.NoSuchUnit"
    assert "missing.service" in answer["error"]


def test_watch_follows_changes_made_by_another_process(lab: Lab) -> None:
    probe(lab, "link", write_unit(lab, "watched.service", SLEEPER))
    probe(lab, "link", write_unit(lab, "other.service", SLEEPER))
    output = spawn_probe(lab, "probe-watch", "watch", "watched.service", "--count", "5")

    def states_seen() -> list[dict[str, str]]:
        return [line["state"] for line in json_lines(lab, output) if "unit" in line]

    dead = state("loaded", "inactive", "dead")
    running = state("loaded", "active", "running")
    wait_for(states_seen, "the watch's first state")
    assert states_seen() == [dead]
    lab.run("m1", ["systemctl", "start", "other.service", "watched.service"])
    wait_for(lambda: running in states_seen(), "the watch to see watched.service running")
    time.sleep(1.5)  # idle: a watch that polled would make calls now
    lab.run("m1", ["systemctl", "stop", "watched.service"])
    wait_for(lambda: states_seen()[-1] == dead, "the watch to see watched.service stop")
    # The file goes, a daemon-reload follows: the load state changes, no unit signal says so.
    lab.run("m1", ["sh", "-c", f"rm /run/systemd/system/watched.service {UNITS}/watched.service"])
    lab.run("m1", ["systemctl", "daemon-reload"])
    wait_for(lambda: "result" in json_lines(lab, output)[-1], "the watch to end")

    lines = json_lines(lab, output)
    assert {line["unit"] for line in lines[:-1]} == {"watched.service"}
    seen = [line["state"] for line in lines[:-1]]
    assert seen[:2] == [dead, running]
    assert seen[-2:] == [dead, state("not-found", "inactive", "dead")]
    # Whether the stop is seen half-way depends on how fast systemd's signals are coalesced.
    assert all(middle["active_state"] == "deactivating" for middle in seen[2:-2])
    # One read at the start, a load state read after each time systemd forgot the unit, one
    # read after the reload: a handful of calls, none of them while nothing happened.
    assert set(lines[-1]["calls"]) == {"ListUnitsByNames"}
    assert lines[-1]["calls"]["ListUnitsByNames"] <= 4


def test_unit_object_paths_match_systemd(lab: Lab) -> None:
    names = ["web-1@a.service", "1x.service", "a_b.service", "-.mount"]
    answer = probe(lab, "paths", "--", *names)["result"]
    for name in names:
        argv = ["busctl", "--json=short", "--", "call", "org.freedesktop.systemd1"]
        argv += ["/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"]
        loaded = json.loads(lab.run("m1", [*argv, "LoadUnit", "s", name]).stdout)
        assert answer[name] == {"path": loaded["data"][0], "back": name}
