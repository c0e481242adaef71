"""fleetctl reaching other machines over SSH, inside lab machine m1: fleet's known-hosts
questions on stdin, and --tunnel to an sshd that forbids forwarding unix sockets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .fleet import FleetCluster
from .test_fleetctl import Fleetctl

pytestmark = pytest.mark.cluster
M3 = "10.77.0.13"
ROOT = ["--ssh-username", "root"]
QUESTION = "Are you sure you want to continue connecting (yes/no)? "


async def test_unknown_hosts_are_asked_about_on_stdin_and_remembered(fleet: FleetCluster) -> None:
    fleetctl = Fleetctl(fleet, "API", Path("/nonexistent"))
    fleetctl.write(
        "remote.service",
        f"[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nMachineID={fleet.ids['m3']}\n",
    )
    assert fleetctl("start", "remote.service").returncode == 0

    def status(answers: str | None, *flags: str) -> tuple[int, str, str]:
        argv = ["fleetctl", *ROOT, *flags, "status", "remote.service"]
        result = fleet.lab.run("m1", argv, check=False, input=answers)
        return result.returncode, result.stdout, result.stderr

    def remembered() -> str:
        return fleet.lab.run("m1", ["cat", "/root/.fleetctl/known_hosts"], check=False).stdout

    # m1 forgets m3's keys (the lab hands every machine the others' keys).
    forget = f"cp /etc/ssh/ssh_known_hosts /tmp/known && sed -i /^{M3},/d /etc/ssh/ssh_known_hosts"
    fleet.lab.run("m1", ["sh", "-c", forget])
    try:
        # No: nothing runs and nothing is remembered; stdin is a pipe here, not a terminal.
        code, out, err = status("no\n")
        assert code == 1 and "Active:" not in out
        assert f"The authenticity of host '{M3}' can't be established." in err
        assert re.search(r"ED25519 key fingerprint is SHA256:[A-Za-z0-9+/]{43}\.", err)
        assert err.count(QUESTION) == 1
        assert err.endswith(f"host key verification failed for {M3}: its key was not accepted\n")
        assert M3 not in remembered()
        assert status(None)[0] == 1  # no answer at all is a no

        # Yes (after an answer that is neither): it runs, and the key is remembered.
        code, out, err = status("maybe\nyes\n")
        assert code == 0 and "Active: active (running)" in out, err
        assert "Please type 'yes' or 'no': " in err
        assert f"Warning: Permanently added '{M3}'" in err
        assert re.search(rf"^{M3} ssh-ed25519 ", remembered(), re.MULTILINE)

        # Remembered: no question, through either driver.
        for flags in ((), ("--driver=etcd", "--endpoint", "http://10.77.0.1:2379")):
            code, out, err = status(None, *flags)
            assert code == 0 and "Active: active (running)" in out, err
            assert QUESTION not in err

        # A key other than the remembered one: refused with fleet's words, nothing runs.
        forge = (
            "rm -f /tmp/forged* && ssh-keygen -q -t ed25519 -N '' -f /tmp/forged && "
            f"sed -i \"s|^{M3} ssh-ed25519 .*|{M3} $(cut -d' ' -f1,2 /tmp/forged.pub)|\" "
            "/root/.fleetctl/known_hosts"
        )
        fleet.lab.run("m1", ["sh", "-c", forge])
        code, out, err = status("yes\n")
        assert code == 1 and "Active:" not in out
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in err and QUESTION not in err
        assert err.endswith(f"host key mismatch for {M3}\n")
        journal = fleet.lab.run(
            "m1", ["fleetctl", *ROOT, "journal", "remote.service"], check=False, input="yes\n"
        )
        assert journal.returncode == 1 and "host key mismatch" in journal.stderr
    finally:
        restore = "rm -f /root/.fleetctl/known_hosts && mv /tmp/known /etc/ssh/ssh_known_hosts"
        fleet.lab.run("m1", ["sh", "-c", restore])


async def test_tunnel_falls_back_to_fd_forward_and_names_the_users_endpoint(
    fleet: FleetCluster,
) -> None:
    fleetctl = Fleetctl(fleet, "API", Path("/nonexistent"))
    tunnel = [*ROOT, "--tunnel", "10.77.0.12"]
    forbid = (
        "echo 'AllowStreamLocalForwarding no' > /etc/ssh/sshd_config.d/00-no-streamlocal.conf"
        " && systemctl reload ssh"
    )
    fleet.lab.run("m2", ["sh", "-c", forbid])
    try:
        names = [f"tun{i}.service" for i in range(4)]
        for name in names:
            fleetctl.write(name, "[Service]\nExecStart=/bin/sleep infinity\n")
        started = fleetctl(*tunnel, "--debug", "start", *names)
        assert started.returncode == 0, started.stderr
        assert "does not forward unix sockets; using fd-forward" in started.stderr
        assert len([line for line in started.stdout.splitlines() if " launched on " in line]) == 4
        listed = fleetctl(*tunnel, "list-units", "--no-legend")
        assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 4, listed.stderr
    finally:
        allow = "rm /etc/ssh/sshd_config.d/00-no-streamlocal.conf && systemctl reload ssh"
        fleet.lab.run("m2", ["sh", "-c", allow])

    # An error through the tunnel names the endpoint and the host given, never the tunnel's
    # local end (a socket in a temporary directory, a port on loopback).
    for driver, endpoint in (("API", "unix:///run/no-fleet.sock"), ("etcd", "http://127.0.0.1:9")):
        failed = fleetctl(
            *tunnel, f"--driver={driver}", "--endpoint", endpoint, "--request-timeout", "2",
            "list-units",
        )  # fmt: skip
        assert failed.returncode == 1
        assert f"{endpoint} (tunnel via 10.77.0.12)" in failed.stderr, failed.stderr
        assert "fleetctl-tunnel-" not in failed.stderr
        assert set(re.findall(r"127\.0\.0\.1:\d+", failed.stderr)) <= {"127.0.0.1:9"}
