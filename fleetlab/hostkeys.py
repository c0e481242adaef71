"""SSH host keys the lab makes before its machines boot, so that every machine already knows
every other machine's key: fleetctl status, journal and ssh inside a lab machine work with strict
host-key checking, as on a cluster whose operator handed out a known-hosts file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flotilla.process import run

# The two types the image's sshd serves (imagebuild/rootfs-files/etc/ssh/sshd_config.d).
KEY_TYPES = ("ed25519", "ecdsa")


def make_host_keys(directory: Path, comment: str) -> None:
    """A private and public key of each type in directory, named as sshd expects them."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for key_type in KEY_TYPES:
        path = directory / f"ssh_host_{key_type}_key"
        run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", path])


def public_keys(directory: Path) -> list[str]:
    """Each public key as `type base64`, without the comment."""
    return [
        " ".join((directory / f"ssh_host_{key_type}_key.pub").read_text().split()[:2])
        for key_type in KEY_TYPES
    ]


def known_hosts(machines: Sequence[tuple[str, str, Sequence[str]]]) -> str:
    """ssh_known_hosts lines for (ip, name, public keys) triples: each key under both names."""
    lines = [f"{ip},{name} {key}" for ip, name, keys in machines for key in keys]
    return "\n".join(lines) + "\n"


def install(directory: Path, etc: Path, known: str) -> None:
    """Copy one machine's keys into its /etc/ssh (as sshd demands: private keys 0600) and the
    lab's known hosts into /etc/ssh/ssh_known_hosts, which ssh reads for every user."""
    ssh = etc / "ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    for key_type in KEY_TYPES:
        name = f"ssh_host_{key_type}_key"
        (ssh / name).write_bytes((directory / name).read_bytes())
        (ssh / name).chmod(0o600)
        (ssh / f"{name}.pub").write_text((directory / f"{name}.pub").read_text())
    (ssh / "ssh_known_hosts").write_text(known)
