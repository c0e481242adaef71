"""`fleetctl dashboard`'s own errors, before any cluster is reached."""

from __future__ import annotations

import socket
import subprocess
import sys

from click.testing import CliRunner

from fleetd.fleetctl.cli import main


def test_a_port_in_use_is_a_clear_error_with_fleetctls_exit_status() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # No cluster at that endpoint: the port is checked first, so this is the only error.
        result = CliRunner().invoke(
            main, ["--endpoint", "unix:///nonexistent.sock", "dashboard", "--port", str(port)]
        )
    assert result.exit_code == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.output


def test_a_port_out_of_range_is_refused() -> None:
    result = CliRunner().invoke(main, ["dashboard", "--port", "70000"])
    assert result.exit_code == 2
    assert "70000" in result.output


def test_fleetctl_does_not_import_aiohttp_for_the_dashboard_command_until_it_runs() -> None:
    server = "fleetd.fleetctl.dashboard_server"
    probe = f"import sys, fleetd.fleetctl.dashboard; print({server!r} in sys.modules)"
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert found.stdout.strip() == "False"
