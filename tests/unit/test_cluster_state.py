"""What flotilla-cluster remembers between commands survives a save and a load unchanged."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import pytest

from provision.inventory import plan_inventory
from qemu.cluster import (
    Cluster,
    ClusterError,
    ClusterSpec,
    NodeRecord,
    make_efi_vars,
    runs_under,
)
from qemu.command import OVMF_VARS


def test_state_round_trips(tmp_path: Path) -> None:
    cluster = Cluster("demo", tmp_path)
    cluster.directory.mkdir()
    cluster.spec = ClusterSpec(
        image=Path("/b/flotilla.qcow2"),
        kernel=Path("/b/flotilla.vmlinuz"),
        initrd=Path("/b/flotilla.initrd"),
        cmdline="root=PARTUUID=x",
        provision="cloud-config",
        publish=(8080, 9000),
        host_services=(8470,),
    )
    cluster.inventory = plan_inventory("demo", 2)
    cluster.records = {
        "n1": NodeRecord("n1", "10.1.1.11", {22: 40001, 2379: 40002}, provisioned=True, pid=7),
        "n2": NodeRecord("n2", "10.1.1.12"),
    }
    cluster.save()
    again = Cluster("demo", tmp_path)
    again.load()
    assert again.spec == cluster.spec
    assert again.inventory == cluster.inventory
    assert again.records == cluster.records
    assert not list(cluster.directory.glob("*.partial"))  # written whole, then renamed


def test_a_cluster_that_is_not_there_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="flotilla-cluster up"):
        Cluster("nothing", tmp_path).load()


def test_a_second_cluster_of_the_same_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    with pytest.raises(ClusterError, match="--name demo down"):
        Cluster("demo", tmp_path).check_absent()


def test_a_state_file_from_before_host_services_still_loads(tmp_path: Path) -> None:
    cluster = Cluster("old", tmp_path)
    cluster.directory.mkdir()
    cluster.spec = ClusterSpec(Path("/i"), Path("/k"), Path("/r"), "quiet")
    cluster.inventory = plan_inventory("old", 1)
    cluster.records = {"n1": NodeRecord("n1", "10.1.1.11")}
    cluster.save()
    state = json.loads(cluster.state_file.read_text())
    del state["spec"]["host_services"]
    cluster.state_file.write_text(json.dumps(state))
    again = Cluster("old", tmp_path)
    again.load()
    assert again.spec.host_services == ()


def test_a_uefi_cluster_boots_its_disks_entries_not_the_builds_kernel(tmp_path: Path) -> None:
    cluster = Cluster("demo", tmp_path)
    cluster.directory.mkdir()
    spec = ClusterSpec(Path("/i"), Path("/k"), Path("/r"), "quiet", host_services=(8470,))
    cluster.inventory = plan_inventory("demo", 1)
    record = NodeRecord("n1", "10.1.1.11")
    node = cluster.inventory.node("n1")
    cluster.spec = spec
    direct = cluster.vm_config(node, record, tap=5)
    assert (direct.kernel, direct.append, direct.host_services) == (Path("/k"), "quiet", (8470,))
    cluster.spec = dataclasses.replace(spec, boot="uefi")
    uefi = cluster.vm_config(node, record, tap=5)
    assert (uefi.kernel, uefi.initrd, uefi.append) == (None, None, None)
    assert not uefi.direct_kernel and uefi.ignition is not None  # handed in on the first boot


def test_a_uefi_node_gets_its_own_variable_store_once_and_keeps_it(tmp_path: Path) -> None:
    store = tmp_path / "n1" / "efi-vars.fd"
    store.parent.mkdir()
    make_efi_vars(store)
    assert store.read_bytes() == OVMF_VARS.read_bytes()
    store.write_bytes(b"boot order the firmware wrote")
    make_efi_vars(store)  # a restart: the node's NVRAM stays
    assert store.read_bytes() == b"boot order the firmware wrote"


def test_a_process_is_found_by_its_executable_even_when_it_retitled_itself(
    tmp_path: Path,
) -> None:
    """An SSH connection master rewrites its argv[0] ("ssh: <control path> [mux]")."""
    node = tmp_path / "n1"
    retitled = subprocess.Popen(["bash", "-c", f"exec -a 'ssh: {node}/ssh.ctl [mux]' sleep 30"])
    try:
        deadline = time.monotonic() + 10
        while not runs_under(retitled.pid, tmp_path, program=b"sleep"):
            assert time.monotonic() < deadline, "never found"
            time.sleep(0.05)
        assert not runs_under(retitled.pid, tmp_path / "other", program=b"sleep")
        assert not runs_under(retitled.pid, tmp_path)  # not a QEMU
    finally:
        retitled.kill()
        retitled.wait()
