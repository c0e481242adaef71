"""Provisioning under QEMU beyond the Ignition cluster: an Ignition config that fails at boot
stops the boot visibly, and a machine provisioned by cloud-config from a config-2 drive."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.process import run
from imagebuild.image import Artifacts
from provision.checks import check_config
from provision.render import Rendered
from qemu.badness import scan_console
from qemu.cluster import Cluster, qemu_pids_under
from qemu.cluster_checks import BIN, cluster_cli, fleetctl
from qemu.cluster_network import netns_exists
from qemu.vm import Vm, ssh_banner
from tests.vm.conftest import OUTPUT_DIR, RUN_ROOT, direct_boot, vm_config

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

# Valid for ignition-validate, impossible on the machine: /etc/machine-id is a file.
FAILING_CONFIG = {
    "ignition": {"version": "3.3.0"},
    "storage": {
        "files": [{"path": "/etc/machine-id/impossible", "contents": {"source": "data:,x"}}]
    },
}


def test_an_ignition_config_that_fails_at_boot_stops_provisioning_visibly(
    image: Artifacts, ssh_key: Path, tmp_path: Path
) -> None:
    config = tmp_path / "failing.ign"
    config.write_text(json.dumps(FAILING_CONFIG))
    check_config(Rendered(config, config.read_text()), "ignition", "vm")  # the validator passes
    vm = Vm(vm_config(image, ssh_key, ignition=config, **direct_boot(image)),
            RUN_ROOT / f"ignfail{secrets.token_hex(2)}", identity=ssh_key)  # fmt: skip
    with vm:
        deadline = time.monotonic() + 240
        while "IGNITION FAILED (end of log)" not in vm.console_text():
            assert time.monotonic() < deadline, "no Ignition failure banner on the console"
            assert vm.alive()
            time.sleep(1)
        time.sleep(5)
        console = vm.console_text()
        assert not ssh_banner(vm.ssh_port), "the boot went on to sshd half-provisioned"
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUTPUT_DIR / "ignition-failure.console.log").write_text(console)
    shutil.rmtree(vm.files.directory, ignore_errors=True)  # its console is kept just above
    assert "/etc/machine-id/impossible" in console  # Ignition's own reason is on the console
    kinds = {finding.pattern for finding in scan_console(console)}
    assert "ignition failure" in kinds  # qemu/badness.py flags it
    assert "multi-user.target" not in console.split("IGNITION FAILED", 1)[1]


def test_down_cleans_up_after_the_tool_itself_was_killed(image: Artifacts) -> None:
    """SIGKILL `flotilla-cluster up` while its VMs boot: `down` still finds and removes every
    QEMU, the namespace with its taps, and the files, from the cluster's name alone."""
    name = "crash" + secrets.token_hex(2)
    cluster = Cluster(name)
    argv = [str(BIN / "flotilla-cluster"), "--name", name, "up", "--nodes", "2",
            "--image-dir", str(image.qcow2.parent)]  # fmt: skip
    tool = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        # A QEMU writes its pid file once it has daemonized: both VMs are up and running.
        while not all((cluster.directory / n / "qemu.pid").exists() for n in ("n1", "n2")):
            assert time.monotonic() < deadline, "the VMs never started"
            assert tool.poll() is None, "up ended before it could be killed"
            time.sleep(0.2)
        tool.kill()
        tool.wait()
        assert netns_exists(cluster.netns) and cluster.directory.exists()
    finally:
        result = cluster_cli(name, "down")
    assert result.returncode == 0, result.stderr
    assert qemu_pids_under(cluster.directory) == []
    assert not netns_exists(cluster.netns)
    assert not cluster.directory.exists()
    assert f"flc-{name}" not in run(["ip", "netns", "list"]).stdout  # the taps lived in it


@pytest.fixture(scope="module")
def cloud_config_node(image: Artifacts) -> Iterator[Cluster]:
    name = "cc" + secrets.token_hex(2)
    try:
        result = cluster_cli(name, "up", "--nodes", "1", "--provision", "cloud-config",
                             "--image-dir", str(image.qcow2.parent))  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        cluster = Cluster(name)
        cluster.load()
        yield cluster
    finally:
        path = Cluster(name).node_files("n1").console
        console = path.read_text(errors="replace") if path.exists() else ""
        OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        (OUTPUT_DIR / "cloud-config.console.log").write_text(console)
        assert cluster_cli(name, "down").returncode == 0
    findings = scan_console(console)
    assert not findings, findings


def test_cloud_config_from_the_config_drive_provisions_a_fleet_machine(
    cloud_config_node: Cluster,
) -> None:
    cluster = cloud_config_node
    node = cluster.inventory.node("n1")
    assert cluster.ssh("n1", "hostname").strip() == "n1"
    assert f"{node.ip}\tn1" in cluster.ssh("n1", "cat /etc/hosts")
    assert cluster.ssh("n1", "stat -c %a /etc/flotilla/node.env").strip() == "644"
    assert node.ip in cluster.ssh("n1", "ip -4 -o addr show")
    key = cluster.key.with_suffix(".pub").read_text().split()[1]
    assert key in cluster.ssh("n1", "cat ~/.ssh/authorized_keys.d/coreos-cloudinit")
    drop_ins = cluster.ssh("n1", "cat /run/systemd/system/etcd.service.d/20-cloudinit.conf")
    assert "ETCD_NAME=n1" in drop_ins
    assert (
        cluster.ssh("n1", "systemctl is-active flotilla-cloudinit etcd fleetd").split()
        == ["active"] * 3
    )
    assert "no config drive" not in cluster.ssh("n1", "journalctl -b -u flotilla-cloudinit")
    machines = fleetctl(cluster, "list-machines", "--full", "--no-legend").splitlines()
    assert [line.split()[1] for line in machines] == [node.ip]
    assert "cloudconfig.py" in cluster.ssh("n1", "ls /usr/lib/flotilla/src/provision").split()
