"""fleetctl's host-key decisions (pure) and its reading of known-hosts files, checked against
OpenSSH's own ssh-keygen: fingerprints, hashed names, ports. The prompt itself is tested on a
lab (tests/cluster/test_fleetctl.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fleetd.fleetctl.known_hosts import (
    HostKey,
    Verdict,
    host_name,
    judge,
    parse_key_lines,
    remember,
    remembered,
)

ED25519 = HostKey(
    "ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIBZkDrDQxBdi10OllGxgnGIP4CJTNazdNfspgZ1vKI1O"
)
OTHER_ED25519 = HostKey(
    "ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
)
ECDSA = HostKey("ecdsa-sha2-nistp256", "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY=")
needs_openssh = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")


@pytest.mark.parametrize(
    ("offered", "known", "verdict"),
    [
        ([ED25519, ECDSA], [], Verdict.UNKNOWN),
        ([ED25519, ECDSA], [ED25519], Verdict.KNOWN),
        ([ED25519, ECDSA], [ECDSA], Verdict.KNOWN),
        ([ED25519], [OTHER_ED25519], Verdict.CHANGED),
        # A matching key of one type does not excuse a changed key of another.
        ([ED25519, ECDSA], [OTHER_ED25519, ECDSA], Verdict.CHANGED),
        # Two remembered keys of one type (a rotation): either one is fine.
        ([ED25519], [OTHER_ED25519, ED25519], Verdict.KNOWN),
        # Only a key of a type the host no longer offers: nothing to compare, so asked about.
        ([ED25519], [ECDSA], Verdict.UNKNOWN),
    ],
)
def test_the_verdict_on_a_hosts_keys(
    offered: list[HostKey], known: list[HostKey], verdict: Verdict
) -> None:
    assert judge(offered, known) is verdict


def test_a_host_off_port_22_is_named_as_openssh_names_it() -> None:
    assert host_name("10.77.0.12", 22) == "10.77.0.12"
    assert host_name("m2", 2222) == "[m2]:2222"


def test_key_lines_leave_out_comments_and_marked_lines() -> None:
    text = (
        "# 10.77.0.12:22 SSH-2.0-OpenSSH_9.2\n"
        f"10.77.0.12 {ED25519.type} {ED25519.blob}\n"
        "\n"
        f"@revoked * {ECDSA.type} {ECDSA.blob}\n"
        f"10.77.0.12,m2 {ECDSA.type} {ECDSA.blob} a comment\n"
    )
    assert parse_key_lines(text) == [ED25519, ECDSA]


@needs_openssh
def test_a_fingerprint_is_the_one_ssh_keygen_shows(tmp_path: Path) -> None:
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    shown = subprocess.run(
        ["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()
    public = HostKey(*key.with_suffix(".pub").read_text().split()[:2])
    assert (public.fingerprint(), f"({public.label()})") == (shown[1], shown[-1])


@needs_openssh
def test_remembered_keys_are_found_as_ssh_finds_them(tmp_path: Path) -> None:
    mine = tmp_path / "fleetctl" / "known_hosts"
    remember(mine, "10.77.0.12", [ED25519])
    remember(mine, "[10.77.0.13]:2222", [ECDSA])
    hashed = tmp_path / "hashed"
    hashed.write_text(f"10.77.0.14 {OTHER_ED25519.type} {OTHER_ED25519.blob}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", hashed], capture_output=True, check=True)
    assert "10.77.0.14" not in hashed.read_text()  # only its hash is left
    files = [str(mine), str(hashed), str(tmp_path / "missing")]
    assert [k.key for k in remembered("10.77.0.12", files)] == [ED25519]
    assert [k.key for k in remembered("[10.77.0.13]:2222", files)] == [ECDSA]
    assert remembered("10.77.0.13", files) == []  # the same host on port 22 is another host
    found = remembered("10.77.0.14", files)
    assert [(k.key, k.file) for k in found] == [(OTHER_ED25519, str(hashed))]
