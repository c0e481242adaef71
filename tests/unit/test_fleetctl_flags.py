"""fleetctl's root flags after the command (fleet's persistent flags), a tunnel's errors in the
user's terms, and shell completion that never fails the shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetd.fleetctl.cli import main
from fleetd.fleetctl.session import Reach

REPO = Path(__file__).resolve().parents[2]


def parsed(*args: str) -> tuple[dict[str, object], list[str]]:
    """The root's flags and what is left for the command, as fleetctl parses `args`."""
    ctx = main.make_context("fleetctl", list(args), resilient_parsing=True)
    return ctx.params, [*ctx._protected_args, *ctx.args]


@pytest.mark.parametrize(
    ("args", "flags", "rest"),
    [
        (
            ["list-units", "--driver=etcd", "--endpoint", "http://10.77.0.1:2379"],
            {"driver": "etcd", "endpoint": "http://10.77.0.1:2379"},
            ["list-units"],
        ),
        (
            ["status", "--tunnel", "10.77.0.12", "web.service", "--debug"],
            {"tunnel": "10.77.0.12", "debug": True},
            ["status", "web.service"],
        ),
        # pflag's booleans take a value only after "=", after the command too.
        (
            ["status", "--strict-host-key-checking", "web.service"],
            {"strict_host_key_checking": True},
            ["status", "web.service"],
        ),
        (
            ["status", "--strict-host-key-checking=false", "web.service"],
            {"strict_host_key_checking": False},
            ["status", "web.service"],
        ),
        # The command's own option of the same kind of name wins: journal's --output.
        (
            ["journal", "--output", "json", "--driver", "etcd", "web.service"],
            {"driver": "etcd"},
            ["journal", "--output", "json", "web.service"],
        ),
        # ssh takes everything after its target as the remote command.
        (
            ["ssh", "--debug", "m1", "ls", "--debug", "--tunnel", "x"],
            {"debug": True, "tunnel": ""},
            ["ssh", "m1", "ls", "--debug", "--tunnel", "x"],
        ),
        (
            ["ssh", "--machine", "--tunnel", "ls"],  # --machine's value, however it looks
            {"tunnel": ""},
            ["ssh", "--machine", "--tunnel", "ls"],
        ),
        # Nothing after `--` is a flag, and -v is the version only as the first argument.
        (["cat", "--", "--debug"], {"debug": False}, ["cat", "--", "--debug"]),
        (["list-units", "-v"], {}, ["list-units", "-v"]),
    ],
)
def test_root_flags_are_taken_after_the_command_as_fleet_takes_them(
    args: list[str], flags: dict[str, object], rest: list[str]
) -> None:
    params, left = parsed(*args)
    assert {name: params[name] for name in flags} == flags
    assert left == rest


def test_a_flags_value_that_names_a_command_is_still_a_value() -> None:
    params, left = parsed("--endpoint", "status", "list-units", "--debug")
    assert (params["endpoint"], params["debug"], left) == ("status", True, ["list-units"])


def test_a_tunnels_local_end_never_shows_in_an_error() -> None:
    tcp = Reach("http://127.0.0.1:41234", "http://10.77.0.1:2379", "10.77.0.12")
    message = "failed to connect: ipv4:127.0.0.1:41234: Connection reset (http://127.0.0.1:41234)"
    assert tcp.in_user_terms(message) == (
        "failed to connect: ipv4:10.77.0.1:2379: Connection reset (http://10.77.0.1:2379)"
    )
    unix = Reach("unix:///tmp/fleetctl-tunnel-x/fleet.sock", "unix:///var/run/fleet.sock", "m2")
    assert unix.in_user_terms(
        "Cannot connect to unix socket /tmp/fleetctl-tunnel-x/fleet.sock"
    ) == ("Cannot connect to unix socket /var/run/fleet.sock")
    assert unix.shown() == "unix:///var/run/fleet.sock (tunnel via m2)"
    direct = Reach("http://10.77.0.1:2379", "http://10.77.0.1:2379")
    assert direct.shown() == "http://10.77.0.1:2379" and direct.in_user_terms("x") == "x"


def complete(words: str, **env: str) -> subprocess.CompletedProcess[str]:
    """What bash's completion gets from fleetctl for the last word of `words`."""
    completion = {
        "_FLEETCTL_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    return subprocess.run(
        [sys.executable, "-c", "from fleetd.fleetctl.cli import main; main(prog_name='fleetctl')"],
        cwd=REPO,
        env={**os.environ, **completion, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    "env",
    [
        {"FLEETCTL_ENDPOINT": "unix:///nonexistent/fleet.sock"},
        # Port 9 on loopback (discard) has no etcd: refused at once, nothing leaves the host.
        {"FLEETCTL_DRIVER": "etcd", "FLEETCTL_ENDPOINT": "http://127.0.0.1:9"},
        {"FLEETCTL_ENDPOINT": "no-scheme"},
        {"FLEETCTL_TUNNEL": "10.77.0.99"},  # never tried: no SSH per TAB
    ],
)
def test_completion_without_a_cluster_completes_nothing_and_succeeds(env: dict[str, str]) -> None:
    for words in ("fleetctl status ", "fleetctl ssh --machine ab", "fleetctl ssh "):
        result = complete(words, **env)
        assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "", ""), words
    started = complete("fleetctl start web", **env)  # local unit files are still offered
    assert (started.returncode, started.stdout) == (0, "file,web\n")
