"""fleetctl's ssh argv: a machine address from etcd is an IP or nothing, and no value can ever
be read by OpenSSH as an option (checked with the real ssh's own parser, `ssh -G`)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from fleetd.fleetctl.remote import AddressError, SshOptions, machine_address, ssh_argv

OPTIONS = SshOptions(username="core", strict_host_key_checking=False)
HOSTILE = "-oProxyCommand=touch /tmp/fleetctl-pwned"


@pytest.mark.parametrize(
    ("ip", "address"),
    [("10.77.0.11", "10.77.0.11"), ("fd00::1", "fd00::1"), ("FD00:0:0::1", "fd00::1")],
)
def test_a_machine_address_is_an_ip(ip: str, address: str) -> None:
    assert machine_address("ab12", ip) == address


@pytest.mark.parametrize(
    "ip", [HOSTILE, "-p2222", "10.77.0.11 -oProxyCommand=x", "host.example", "10.0.0.256"]
)
def test_anything_else_in_a_machine_record_is_refused_naming_the_machine(ip: str) -> None:
    with pytest.raises(AddressError) as caught:
        machine_address("ab12cd34", ip)
    assert str(caught.value) == (
        f"Machine ab12cd34 has no valid IP address in etcd ({ip!r}); refusing to pass it to ssh."
    )


def test_a_machine_without_an_address_gets_fleets_message() -> None:
    with pytest.raises(AddressError, match=r"^Could not determine address of machine\.$"):
        machine_address("ab12", "")


def test_the_destination_follows_a_double_dash_and_the_command_follows_it() -> None:
    argv = ssh_argv("10.77.0.11", ["ls", "-h"], OPTIONS, tty=True, forward_agent=True)
    end = argv.index("--")
    assert argv[end + 1 :] == ["10.77.0.11", "ls", "-h"]
    assert {"-t", "-A", "-p", "-l"} <= set(argv[:end])
    assert argv[argv.index("-p") + 1] == "22" and argv[argv.index("-l") + 1] == "core"


def ssh_config(argv: list[str]) -> dict[str, str]:
    """What OpenSSH makes of an argv, without connecting: `ssh -G` prints its settings."""
    result = subprocess.run(
        [argv[0], "-G", *argv[1:]], capture_output=True, text=True, timeout=30, check=False
    )
    settings = dict(line.partition(" ")[::2] for line in result.stdout.splitlines())
    return settings | {"error": result.stderr.strip()}


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH's ssh is not installed")
def test_openssh_never_reads_a_destination_or_a_command_word_as_an_option() -> None:
    # As the destination: without `--`, ssh took it for -o and the command word for the host.
    as_host = ssh_config(ssh_argv(HOSTILE, ["hostname"], OPTIONS))
    assert "proxycommand" not in as_host
    # After the destination: OpenSSH parses options there too, unless `--` ended them.
    after_host = ssh_config(ssh_argv("10.77.0.11", [HOSTILE], OPTIONS))
    assert after_host["hostname"] == "10.77.0.11"
    assert "proxycommand" not in after_host
    # The real thing it protects against: what the argv was before the `--`.
    before = ssh_argv("10.77.0.11", [HOSTILE], OPTIONS)
    before.remove("--")
    assert "proxycommand" in ssh_config(before)
