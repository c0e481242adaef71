"""The product end to end under QEMU: three VMs from the image, provisioned by Ignition, form an
etcd + fleet cluster; a container unit rendered from a short spec serves HTTP and fails over
when its VM is killed; a signed update rolls through the cluster one reboot at a time. One
cluster is shared by the module (kola's cluster tests, and fleet's functional tests, in one)."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from imagebuild.image import Artifacts
from imagebuild.payload import DEV_KEY_NAME, republish
from imagebuild.serve import serving
from qemu.badness import format_findings, scan_console
from qemu.cluster import Cluster
from qemu.cluster_checks import (
    DEMO_PORT,
    DEMO_UNIT,
    UnitSampler,
    cluster_cli,
    fetch_page,
    fleetctl,
    render_demo_unit,
    wait_for_page,
    wait_until,
)
from qemu.cluster_network import netns_exists
from qemu.cluster_roll import node_status, roll, start_sleepers
from tests.vm.conftest import OUTPUT_DIR

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1500)]
NODES = ["n1", "n2", "n3"]


class Update(NamedTuple):
    port: int  # of the update server on the host
    version: str  # that it serves


@pytest.fixture(scope="module")
def update_server(image: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Update]:
    """The build's payload again as the next version, served to the nodes (as 10.0.2.100)."""
    version = json.loads(image.report.read_text())["version"] + ".1"
    directory = tmp_path_factory.mktemp("update") / "payload"
    payload = republish(image.update, image.update.parent / DEV_KEY_NAME, directory, version)
    with serving(payload) as port:
        yield Update(port, version)


@pytest.fixture(scope="module")
def cluster(image: Artifacts, update_server: Update) -> Iterator[Cluster]:
    """Booted through UEFI and systemd-boot, as on hardware, so that an update's slot B is
    what a node boots next (a direct kernel boot pins USR-A)."""
    name = "vm" + secrets.token_hex(2)
    try:
        result = cluster_cli(name, "up", "--image-dir", str(image.qcow2.parent), "--boot", "uefi",
                             "--host-service", str(update_server.port))  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "fleet lists 3 machines" in result.stdout
        cluster = Cluster(name)
        cluster.load()
        yield cluster
    finally:
        consoles = save_consoles(Cluster(name))
        assert cluster_cli(name, "down").returncode == 0
        assert_nothing_left(Cluster(name))
    for node, console in consoles.items():
        findings = scan_console(console)
        assert not findings, f"console of {node}:\n{format_findings(findings)}"


def save_consoles(cluster: Cluster) -> dict[str, str]:
    consoles = {}
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    for node in NODES:
        path = cluster.node_files(node).console
        if path.exists():
            consoles[node] = path.read_text(errors="replace")
            shutil.copyfile(path, OUTPUT_DIR / f"cluster-{node}.console.log")
    return consoles


def assert_nothing_left(cluster: Cluster) -> None:
    assert not cluster.directory.exists()
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert cluster.firewall_table not in tables.split()
    assert not netns_exists(cluster.netns)
    assert not any(cluster.name in line for line in Path("/proc/mounts").read_text().splitlines())
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            assert str(cluster.directory).encode() not in argv, f"pid {proc.name} is left"


def test_ls_shows_every_node_running_with_its_ports(cluster: Cluster) -> None:
    listing = cluster_cli(cluster.name, "ls").stdout.splitlines()
    rows = [line.split() for line in listing[1:]]
    assert [row[0] for row in rows] == NODES
    assert all(row[1] == "running" for row in rows)
    assert [row[3] for row in rows] == [cluster.inventory.node(n).ip for n in NODES]


def test_fleetctl_on_the_host_lists_three_machines_with_their_private_ips(
    cluster: Cluster,
) -> None:
    machines = fleetctl(cluster, "list-machines", "--no-legend", "--full").splitlines()
    ips = sorted(line.split()[1] for line in machines)
    assert ips == sorted(cluster.inventory.node(n).ip for n in NODES)


def test_etcd_has_three_healthy_members_and_every_node_writes_and_reads(
    cluster: Cluster,
) -> None:
    """kola's etcd cluster check: every member healthy; a key put on one node is read on every
    node, and deleted from each in turn."""
    health = cluster.ssh("n1", "etcdctl endpoint health --cluster 2>&1")
    assert health.count("is healthy") == 3, health
    assert len(cluster.ssh("n1", "etcdctl member list").splitlines()) == 3
    for writer in NODES:
        key, value = f"/kola/{writer}", secrets.token_hex(8)
        cluster.ssh(writer, f"etcdctl put {key} {value}")
        for reader in NODES:
            assert cluster.ssh(reader, f"etcdctl get --print-value-only {key}").strip() == value
        cluster.ssh(writer, f"etcdctl del {key}")
        for reader in NODES:
            assert cluster.ssh(reader, f"etcdctl get --print-value-only {key}").strip() == ""


def test_only_root_reaches_the_forwarded_etcd_ports(cluster: Cluster) -> None:
    """etcd has no authentication: another user on the host could run units as root on every
    node through a forwarded port."""
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    for node in NODES:
        port = cluster.host_port(node, 2379)
        connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
        as_root = subprocess.run(["/usr/bin/python3", "-c", connect], capture_output=True)
        assert as_root.returncode == 0, as_root.stderr
        as_nobody = subprocess.run(
            [*nobody, "/usr/bin/python3", "-c", connect], capture_output=True, text=True
        )
        assert "ConnectionRefusedError" in as_nobody.stderr, f"{node}: {as_nobody.stderr}"


def test_ignition_applied_the_whole_config(cluster: Cluster) -> None:
    node = cluster.inventory.node("n1")
    assert cluster.ssh("n1", "hostname").strip() == "n1"
    hosts = cluster.ssh("n1", "cat /etc/hosts")
    assert all(f"{peer.ip}\t{peer.name}" in hosts for peer in cluster.inventory.nodes)
    assert node.ip in cluster.ssh("n1", "ip -4 -o addr show")
    assert cluster.ssh("n1", "stat -c %a /etc/flotilla").strip() == "755"
    assert cluster.ssh("n1", "readlink /etc/flotilla/fleet.conf").strip() == "/etc/fleet/fleet.conf"
    assert f"FLOTILLA_NODE_IP={node.ip}" in cluster.ssh("n1", "cat /etc/flotilla/node.env")
    enabled = cluster.ssh("n1", "systemctl is-enabled etcd fleetd podman-auto-update.timer", 30,
                          check=False).split()  # fmt: skip
    assert enabled == ["enabled", "enabled", "masked"]
    drop_ins = cluster.ssh("n1", "systemctl show -p DropInPaths --value etcd fleetd")
    assert drop_ins.count("20-cluster.conf") == 2
    key = cluster.key.with_suffix(".pub").read_text().split()[1]
    assert key in cluster.ssh("n1", "cat ~/.ssh/authorized_keys.d/ignition")
    result = json.loads(cluster.ssh("n1", "sudo cat /etc/.ignition-result.json"))
    assert result["userConfigProvided"] is True
    # The boot tooling dropped the first-boot flag from the disk's own boot entry, too.
    done = "systemctl is-active flotilla-ignition-done"
    wait_until(lambda: cluster.ssh("n1", done, check=False).strip() == "active", 120, done)
    entries = cluster.ssh("n1", "sudo sh -c 'cat /boot/loader/entries/*.conf'")
    assert "ignition.firstboot" not in entries and "ignition.platform.id=qemu" in entries


def test_a_container_unit_fails_over_to_another_vm_and_never_runs_twice(
    cluster: Cluster, tmp_path: Path
) -> None:
    unit = render_demo_unit(tmp_path)
    fleetctl(cluster, "start", str(unit), timeout=180)
    origin, page = wait_for_page(cluster, NODES, time.monotonic() + 180)
    assert page.strip() == f"hello from {origin}"
    survivors = [node for node in NODES if node != origin]
    machine_id = cluster.ssh(origin, "cat /etc/machine-id").strip()
    ignition_result = cluster.ssh(origin, "sudo cat /etc/.ignition-result.json")
    # Ignition runs once: a file it wrote and we deleted stays deleted across the next boot.
    cluster.ssh(origin, "sudo rm /etc/flotilla/node.env && sync")

    old_port = cluster.host_port(origin, DEMO_PORT)
    with UnitSampler(cluster, DEMO_UNIT) as sampler:
        killed_at = time.monotonic()
        assert cluster_cli(cluster.name, "kill", origin).returncode == 0
        with pytest.raises(ConnectionRefusedError):  # its QEMU, and its forwards, are gone
            socket.create_connection(("127.0.0.1", old_port), timeout=2).close()
        new_home, page = wait_for_page(cluster, survivors, killed_at + 180)
        failover = time.monotonic() - killed_at
        assert page.strip() == f"hello from {new_home}"
        for node in survivors:  # etcd kept its quorum
            endpoints = ",".join(f"http://{cluster.inventory.node(n).ip}:2379" for n in survivors)
            health = cluster.ssh(node, f"etcdctl endpoint health --endpoints={endpoints} 2>&1")
            assert health.count("is healthy") == 2, health

        started = cluster_cli(cluster.name, "start", origin)
        assert started.returncode == 0, started.stderr
        assert cluster.ssh(origin, "cat /etc/machine-id").strip() == machine_id
        wait_until(
            lambda: machine_id in fleetctl(cluster, "list-machines", "--full", "--no-legend"),
            120,
            f"{origin} to rejoin fleet",
        )
        time.sleep(10)  # samples while the rejoined machine settles

    assert sampler.rounds, "the sampler never answered"
    assert not sampler.doubles, f"{DEMO_UNIT} ran on two machines at once: {sampler.doubles}"
    assert fetch_page(cluster, new_home) == page
    running = [node for node in NODES if sampler.active_on(node)]
    assert running == [new_home]
    containers = {
        node: cluster.ssh(node, "sudo podman ps -a -q --filter name=hello-web") for node in NODES
    }
    assert [node for node, ids in containers.items() if ids.strip()] == [new_home]
    # The rejoined machine was not provisioned again.
    assert "/etc/flotilla/node.env" not in cluster.ssh(origin, "ls /etc/flotilla/")
    assert cluster.ssh(origin, "sudo cat /etc/.ignition-result.json") == ignition_result
    assert "ignition.firstboot" not in cluster.ssh(origin, "cat /proc/cmdline")
    print(f"failover of {DEMO_UNIT}: {failover:.1f}s from the kill of {origin} to {new_home}")

    # Destroyed, the unit leaves no container anywhere, not even a stopped one.
    fleetctl(cluster, "destroy", DEMO_UNIT, timeout=120)
    leftover = f"sudo podman ps -a -q --filter name=hello-web; systemctl is-active {DEMO_UNIT}"
    wait_until(
        lambda: all(
            cluster.ssh(node, leftover, check=False).split() == ["inactive"] for node in NODES
        ),
        120,
        "no hello-web container and no active unit on any VM",
    )


@pytest.mark.timeout(2400)
def test_a_rolling_update_reboots_one_node_at_a_time_and_never_runs_a_unit_twice(
    cluster: Cluster, update_server: Update, tmp_path: Path
) -> None:
    """Issue 12's rolling update: every node's update agent starts at once; the reboot lock
    (REBOOT_STRATEGY=etcd-lock, one holder) lets one node at a time drain through fleet,
    reboot into slot B, come back healthy, undrain and release. A watcher samples systemd on
    every node, the lock and a quorum write throughout."""
    units = start_sleepers(cluster, tmp_path, 3)
    machine_ids = {node: cluster.ssh(node, "cat /etc/machine-id").strip() for node in NODES}
    report = roll(cluster, update_server.port, update_server.version, units, timeout=2100)
    print("\n" + "\n".join(report.lines()))
    assert not report.doubles, f"units active on two nodes at once: {report.doubles[:5]}"
    assert sorted(report.reboots) == NODES
    assert all(len(boots) == 2 for boots in report.boots.values()), report.boots  # once each
    assert report.most_holders == 1
    assert report.most_down <= 1
    # Never a lost quorum (that would last a whole reboot, 60-90 s, and most_down says no
    # second node was down). A refused write here is a new leader's election, or etcdctl
    # waiting out its 10 s timeout on the rebooting member, whose port QEMU still accepts.
    assert report.longest_quorum_loss <= 45.0
    # One unit moves at a time and its new copy starts once the old one stopped.
    assert max(report.longest_gap.values()) <= 60.0, report.longest_gap
    machines = fleetctl(cluster, "list-machines", "--full", "--no-legend").splitlines()
    assert len(machines) == 3 and "drain" not in "\n".join(machines)  # all schedulable again
    for node in NODES:
        status = node_status(cluster, node)
        assert status is not None, f"{node} did not answer"
        assert (status["booted_slot"], status["version"]) == ("b", update_server.version)
        assert status["boot_entry"] == "flotilla-b.conf"  # marked good
        # ROOT's state came through the reboot: the same machine, provisioned once.
        assert cluster.ssh(node, "cat /etc/machine-id").strip() == machine_ids[node]
    active = fleetctl(cluster, "list-units", "--no-legend", "--fields=unit,active").split()
    assert active.count("active") == len(units), active
    fleetctl(cluster, "destroy", *units, timeout=120)


def test_a_clean_stop_leaves_the_cluster_at_once(cluster: Cluster) -> None:
    """`stop` is an ACPI shutdown: fleetd leaves gracefully, so the machine is gone from fleet
    without waiting for its lease."""
    node = "n3"
    machine_id = cluster.ssh(node, "cat /etc/machine-id").strip()
    result = cluster_cli(cluster.name, "stop", node, timeout=180)
    assert result.returncode == 0 and "stopped" in result.stdout, result.stdout
    assert cluster.pid(node) is None
    machines = fleetctl(cluster, "list-machines", "--full", "--no-legend")
    assert machine_id not in machines
    assert len(machines.splitlines()) == 2
