"""flotilla-cloudinit on a real machine (systemd as PID 1): a config drive's cloud-config applied
for real, a config with an error refused before any change, and `--validate` on the host."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetlab.lab import Lab

pytestmark = [pytest.mark.cluster, pytest.mark.machines(1)]

REPO = Path(__file__).resolve().parents[2]
CLOUDINIT = "/usr/bin/flotilla-cloudinit"
DRIVE = "/run/test-config-2"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFlotillaTestKeyOnlyForTests alice@test"
# `openssl passwd -6 -salt flotilla secret`: any crypt(3) hash does for chpasswd --encrypted.
PASSWD = (
    "$6$flotilla$BR2VQ7rfeSYoymgV/i1LcCjrQZGxmoXHmjStwNw5DG/qkIVu"
    "ilK9AH82eg8ZEFq7PY3SaAVaoQovq/qYGIGCf/"
)

GOOD = f"""#cloud-config
hostname: cloudy
users:
  - name: alice
    passwd: {PASSWD}
    groups: [sudo]
    shell: /bin/bash
    ssh_authorized_keys:
      - {KEY}
write_files:
  - path: /etc/demo/app.conf
    permissions: "0640"
    owner: alice:sudo
    content: |
      greeting=hello
manage_etc_hosts: localhost
coreos:
  etcd2:
    name: cloudy
    initial-cluster-state: new
  fleet:
    public-ip: 10.77.0.11
    metadata: role=web
    etcd-password: 'pa"s$s`w\\o rd'
  units:
    - name: hello.service
      command: start
      content: |
        [Service]
        ExecStart=/bin/sleep infinity
      drop-ins:
        - name: 10-greeting.conf
          content: |
            [Service]
            Environment=GREETING=hi
"""

# Valid up to one error on line 7: nothing at all may change.
BAD = """#cloud-config
hostname: never
write_files:
  - path: /etc/never.conf
    content: x
  - path: /usr/lib/never.conf
    content: y
coreos:
  units:
    - name: never.service
      command: start
      content: |
        [Service]
        ExecStart=/bin/sleep infinity
"""


def sh(lab: Lab, script: str, input: str | None = None) -> str:
    return lab.run("m1", ["sh", "-c", script], input=input).stdout.strip()


def apply_from_drive(lab: Lab, user_data: str) -> subprocess.CompletedProcess[str]:
    """Lay out a config drive as OpenStack does and run flotilla-cloudinit on it."""
    sh(
        lab,
        f"mkdir -p {DRIVE}/openstack/latest && cat > {DRIVE}/openstack/latest/user_data",
        user_data,
    )
    return lab.run("m1", [CLOUDINIT, "--from-configdrive", DRIVE], check=False)


def wait_active(lab: Lab, unit: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = lab.run("m1", ["systemctl", "is-active", unit], check=False).stdout.strip()
        if state == "active" or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def systemd_environment(lab: Lab, unit: str) -> str:
    return sh(lab, f"systemctl show --value -p Environment {unit}")


def test_a_config_drive_is_applied(lab: Lab) -> None:
    result = apply_from_drive(lab, GOOD)
    assert result.returncode == 0, result.stderr

    assert sh(lab, "hostname") == "cloudy"
    assert sh(lab, "head -n1 /etc/hosts") == "127.0.0.1 localhost cloudy"

    assert sh(lab, "id -nG alice").split() == ["alice", "sudo"]
    assert sh(lab, "getent passwd alice | cut -d: -f6,7") == "/home/alice:/bin/bash"
    assert sh(lab, "getent shadow alice | cut -d: -f2") == PASSWD
    keys = "/home/alice/.ssh/authorized_keys.d/coreos-cloudinit"
    assert sh(lab, f"cat {keys}") == KEY
    assert sh(lab, f"stat -c '%a %U %G' /home/alice/.ssh {keys}").splitlines() == [
        "700 alice alice",
        "600 alice alice",
    ]

    assert sh(lab, "stat -c '%a %U %G' /etc/demo /etc/demo/app.conf").splitlines() == [
        "755 root root",
        "640 alice sudo",
    ]
    assert sh(lab, "cat /etc/demo/app.conf") == "greeting=hello"

    assert wait_active(lab, "hello.service") == "active"
    assert "GREETING=hi" in systemd_environment(lab, "hello.service")

    # etcd.service is masked in the image until a config asks for etcd.
    assert sh(lab, "systemctl show --value -p LoadState etcd.service") == "loaded"
    etcd = systemd_environment(lab, "etcd.service")
    assert "ETCD_NAME=cloudy" in etcd and "ETCD_INITIAL_CLUSTER_STATE=new" in etcd
    fleet = systemd_environment(lab, "fleetd.service")
    assert "FLEET_PUBLIC_IP=10.77.0.11" in fleet and "FLEET_METADATA=role=web" in fleet
    # The password is in no world-readable place, and systemd hands fleetd exactly the value.
    assert "o rd" not in fleet and "FLEET_ETCD_PASSWORD" not in fleet
    secrets = sh(lab, "systemctl show --value -p EnvironmentFiles fleetd.service").split()[0]
    assert sh(lab, f"stat -c '%a %U' {secrets}") == "600 root"
    assert "o rd" not in sh(lab, "cat /run/systemd/system/fleetd.service.d/*")
    printed = sh(
        lab,
        f"systemd-run --quiet --wait --pipe -p EnvironmentFile={secrets} "
        "/bin/sh -c 'printf %s \"$FLEET_ETCD_PASSWORD\"'",
    )
    assert printed == 'pa"s$s`w\\o rd'


def test_applying_twice_changes_nothing_more(lab: Lab) -> None:
    """It runs on every boot: the second run must succeed on the machine the first configured."""
    assert apply_from_drive(lab, GOOD).returncode == 0
    second = apply_from_drive(lab, GOOD)
    assert second.returncode == 0, second.stderr
    assert sh(lab, "grep -c '^alice:' /etc/passwd") == "1"
    assert wait_active(lab, "hello.service") == "active"


def test_a_config_with_an_error_changes_nothing(lab: Lab) -> None:
    before = sh(lab, "hostname; cat /etc/passwd /etc/group; ls -R /etc /run/systemd/system")
    result = apply_from_drive(lab, BAD)
    assert result.returncode == 1
    assert "line 6: error: /usr/lib/never.conf: file cannot be written" in result.stderr
    assert "not applied" in result.stderr
    after = sh(lab, "hostname; cat /etc/passwd /etc/group; ls -R /etc /run/systemd/system")
    assert after == before
    assert sh(lab, "systemctl is-active never.service || true") == "inactive"


def test_a_config_drive_without_user_data_is_nothing_to_do(lab: Lab) -> None:
    sh(lab, "mkdir -p /run/empty-drive/openstack/latest")
    result = lab.run("m1", [CLOUDINIT, "--from-configdrive", "/run/empty-drive"], check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "provision.cloudinit_cli", *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    "text, status, output",
    [
        ("#cloud-config\nhostname: a\n", 0, ""),
        ("", 0, ""),
        (
            "#cloud-config\nhostname: a\nunits: []\nwrite_files:\n  - path: /usr/x\n",
            1,
            'line 3: warning: unrecognized key "units" (did you mean coreos.units?); ignored\n'
            "line 5: error: /usr/x: file cannot be written to a read-only filesystem (/usr)\n",
        ),
        ("#cloud-config\nfoo: 1\n", 1, 'line 2: warning: unrecognized key "foo"; ignored\n'),
        ("#!/bin/sh\n", 1, "line 1: error: scripts (#!) are not supported"),
    ],
)
def test_validate_on_the_host(tmp_path: Path, text: str, status: int, output: str) -> None:
    user_data = tmp_path / "user_data"
    user_data.write_text(text)
    result = cli("--validate", "--from-file", str(user_data))
    assert result.returncode == status, result.stderr
    assert result.stdout.startswith(output)
    assert result.stdout or not output
