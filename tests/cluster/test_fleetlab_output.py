"""`fleetlab ls --output json` on a real lab: one document, the documented keys, the same
machines as the table. Runs this checkout's fleetlab (not the venv's console script)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fleetlab.lab import Lab
from tests.conftest import REPO

pytestmark = pytest.mark.cluster
FLEETLAB = ["-c", "from fleetlab.cli import main; main(prog_name='fleetlab')"]


def fleetlab(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *FLEETLAB, "--lab", lab.name, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.machines(2)
def test_ls_as_json_lists_every_machine_with_the_documented_keys(lab: Lab) -> None:
    lab.partition("m2")
    result = fleetlab(lab, "ls", "--output", "json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert document["lab"] == lab.name
    machines = document["machines"]
    assert [set(m) for m in machines] == [{"name", "machine_id", "ip", "state", "network"}] * 2
    state = lab.require_state()
    assert [(m["name"], m["machine_id"], m["ip"]) for m in machines] == [
        (r.name, r.machine_id, r.ip) for r in state.machines
    ]
    assert [m["network"] for m in machines] == ["connected", "partitioned"]
    assert {m["state"] for m in machines} <= {"running", "degraded"}
    table = fleetlab(lab, "ls").stdout.splitlines()
    assert table[0].split() == ["MACHINE", "MACHINE-ID", "IP", "STATE", "NETWORK"]
    assert len(table) == 3
