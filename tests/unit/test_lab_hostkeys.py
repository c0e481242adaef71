from pathlib import Path

from fleetlab import hostkeys


def test_every_machine_key_is_known_under_its_address_and_its_name(tmp_path: Path) -> None:
    hostkeys.make_host_keys(tmp_path / "m1", "test")
    keys = hostkeys.public_keys(tmp_path / "m1")
    text = hostkeys.known_hosts([("10.77.0.11", "m1", keys), ("10.77.0.12", "m2", ["k2"])])
    lines = text.splitlines()
    assert [line.split()[1] for line in lines[:2]] == ["ssh-ed25519", "ecdsa-sha2-nistp256"]
    assert all(line.startswith("10.77.0.11,m1 ") for line in lines[:2])
    assert lines[2] == "10.77.0.12,m2 k2"


def test_private_keys_are_installed_readable_by_root_only(tmp_path: Path) -> None:
    hostkeys.make_host_keys(tmp_path / "keys", "test")
    hostkeys.install(tmp_path / "keys", tmp_path / "etc", "known\n")
    ssh = tmp_path / "etc/ssh"
    assert (ssh / "ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
    assert (ssh / "ssh_known_hosts").read_text() == "known\n"
