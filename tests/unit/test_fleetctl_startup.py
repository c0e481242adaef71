"""fleetctl's start-up stays light: a command loads only the driver it uses, and commands that
reach no cluster load neither (issue 13: `fleetctl version` <= 0.15 s as a process). Checked in
a fresh interpreter through sys.modules, not by timing; the figures are in
bench/fleetctl_scale.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("aiohttp", "aetcd", "grpc", "fleetd.registry", "fleetd.etcdclient", "prometheus_client")
ETCD_CLIENT = {"aetcd", "grpc", "fleetd.registry", "fleetd.etcdclient"}

# Runs fleetctl's main in this interpreter, then says which of the heavy modules it loaded.
PROBE = """
import json, sys
from fleetd.fleetctl.cli import main
try:
    main(sys.argv[1:], prog_name="fleetctl")
except SystemExit:
    pass
print(json.dumps([name for name in {heavy!r} if name in sys.modules]))
"""


def loaded_by(*args: str) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """The heavy modules `fleetctl ARGS` loaded, and the process (its last stdout line is ours)."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        cwd=REPO,  # this checkout's fleetd, not the one the venv was installed from
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(result.stdout.splitlines()[-1]), result


def test_importing_the_cli_loads_no_driver() -> None:
    found, _ = loaded_by()  # a bare fleetctl: prints its help, reaches no cluster
    assert found == []


def test_version_loads_no_driver() -> None:
    found, result = loaded_by("version")
    assert result.stdout.startswith("fleetctl version ")
    assert found == []


def test_help_of_every_command_loads_no_driver() -> None:
    found, result = loaded_by("help")
    assert "list-units" in result.stdout
    assert found == []


def test_the_api_driver_loads_no_etcd_client(tmp_path: Path) -> None:
    socket = tmp_path / "no-fleetd.sock"
    found, result = loaded_by(f"--endpoint=unix://{socket}", "list-units")
    assert "error talking to fleet" in result.stderr  # it did try: the driver was used
    assert "aiohttp" in found and not ETCD_CLIENT & set(found)


def test_the_etcd_driver_loads_no_http_client() -> None:
    # Port 9 on loopback (discard) has no etcd: refused at once, nothing leaves the host.
    found, result = loaded_by(
        "--driver=etcd", "--endpoint=http://127.0.0.1:9", "--request-timeout=0.5", "list-units"
    )
    assert "error talking to etcd" in result.stderr
    assert set(found) >= ETCD_CLIENT and "aiohttp" not in found


def test_every_command_is_listed_and_found_by_its_name() -> None:
    from fleetd.fleetctl.cli import COMMAND_MODULES, LazyCommands, main

    assert set(main.commands) == {*COMMAND_MODULES, "version", "help", "fd-forward", "verify"}
    assert "list-unit-files" in main.commands and "no-such" not in main.commands
    for name in COMMAND_MODULES:
        assert main.commands[name].name == name  # the module's function of that name
    commands = LazyCommands({"cat": "inspection", "stop": "lifecycle"})
    commands["version"] = main.commands["version"]
    del commands["cat"]
    assert list(commands) == ["stop", "version"] and len(commands) == 2
