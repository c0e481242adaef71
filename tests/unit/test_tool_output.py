"""`--output json` of fleetlab ls, flotilla-qemu and flotilla-cluster ls, and imagebuild
build's report: the documented keys, one JSON document, the human forms unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetlab.listing import format_table, machines_document
from imagebuild.report import report_document, report_json, report_lines
from provision.inventory import plan_inventory
from qemu.cluster import Cluster, ClusterSpec, NodeRecord
from qemu.cluster_listing import NodeRow, format_nodes, nodes_document
from qemu.summary import VmSummary, summary_document, summary_lines
from tests.test_tooling import REPO, io_imports

FORMATTERS = [
    "fleetlab/listing.py",
    "qemu/summary.py",
    "qemu/cluster_listing.py",
    "imagebuild/report.py",
]


@pytest.mark.parametrize("module", FORMATTERS)
def test_formatters_are_pure(module: str) -> None:
    assert io_imports(REPO / module) == []


@dataclass
class Status:
    name: str
    machine_id: str
    ip: str
    state: str
    connected: bool


MACHINES = [
    Status("m1", "a" * 32, "10.9.0.11", "running", True),
    Status("m2", "b" * 32, "10.9.0.12", "down", False),
]


def test_fleetlab_ls_table_is_unchanged() -> None:
    assert format_table(MACHINES).splitlines() == [
        "MACHINE  MACHINE-ID                        IP         STATE    NETWORK",
        f"m1       {'a' * 32}  10.9.0.11  running  connected",
        f"m2       {'b' * 32}  10.9.0.12  down     partitioned",
    ]


def test_fleetlab_ls_json_has_the_documented_keys() -> None:
    document = json.loads(json.dumps(machines_document("default", MACHINES)))
    assert document == {
        "lab": "default",
        "machines": [
            {
                "name": "m1",
                "machine_id": "a" * 32,
                "ip": "10.9.0.11",
                "state": "running",
                "network": "connected",
            },
            {
                "name": "m2",
                "machine_id": "b" * 32,
                "ip": "10.9.0.12",
                "state": "down",
                "network": "partitioned",
            },
        ],
    }


def test_fleetlab_ls_json_of_an_empty_lab_is_still_one_document() -> None:
    assert machines_document("x", []) == {"lab": "x", "machines": []}


VM = VmSummary(
    name="flotilla",
    kvm=False,
    direct_kernel=False,
    run_dir=Path("/var/tmp/flotilla-qemu/flotilla"),
    console=Path("/var/tmp/flotilla-qemu/flotilla/console.log"),
    qmp=Path("/var/tmp/flotilla-qemu/flotilla/qmp.sock"),
    pid=4242,
    ports={22: 40022, 8080: 48080},
    command=("qemu-system-x86_64", "-name", "flotilla vm"),
)


def test_flotilla_qemu_text_is_unchanged() -> None:
    assert summary_lines(VM, verbose=True) == [
        "VM flotilla (TCG, UEFI from disk) running; run dir /var/tmp/flotilla-qemu/flotilla",
        "  console  /var/tmp/flotilla-qemu/flotilla/console.log",
        "  qmp      /var/tmp/flotilla-qemu/flotilla/qmp.sock",
        "  ssh      ssh -p 40022 core@127.0.0.1",
        "  forward  127.0.0.1:48080 -> 8080",
        "  command  qemu-system-x86_64 -name 'flotilla vm'",
    ]
    assert len(summary_lines(VM, verbose=False)) == 5


def test_flotilla_qemu_json_has_the_documented_keys() -> None:
    document = json.loads(json.dumps(summary_document(VM, ssh_seconds=12.345)))
    assert document == {
        "name": "flotilla",
        "accelerator": "tcg",
        "boot": "uefi",
        "pid": 4242,
        "run_dir": "/var/tmp/flotilla-qemu/flotilla",
        "console": "/var/tmp/flotilla-qemu/flotilla/console.log",
        "qmp": "/var/tmp/flotilla-qemu/flotilla/qmp.sock",
        "ssh_port": 40022,
        "ssh_command": "ssh -p 40022 core@127.0.0.1",
        "forwards": [{"host": 48080, "guest": 8080}],
        "ssh_seconds": 12.3,
        "command": ["qemu-system-x86_64", "-name", "flotilla vm"],
    }
    assert summary_document(VM, ssh_seconds=None)["ssh_seconds"] is None


ROWS = [
    NodeRow("n1", "10.77.0.11", 100, {22: 2201, 2379: 2301, 8080: 8001}),
    NodeRow("n2", "10.77.0.12", None),
]


def test_flotilla_cluster_ls_table_is_unchanged() -> None:
    assert format_nodes((8080,), ROWS) == [
        "NODE\tSTATE\tPID\tIP\t\tSSH\tETCD\tPUBLISHED (8080)",
        "n1\trunning\t100\t10.77.0.11\t2201\t2301\t8001",
        "n2\tstopped\t-\t10.77.0.12\t-\t-\t-",
    ]


def test_flotilla_cluster_ls_json_has_the_documented_keys() -> None:
    assert nodes_document("flotilla", (8080, 9090), ROWS) == {
        "cluster": "flotilla",
        "nodes": [
            {
                "name": "n1",
                "state": "running",
                "pid": 100,
                "ip": "10.77.0.11",
                "ssh_port": 2201,
                "etcd_port": 2301,
                "published": [{"guest": 8080, "host": 8001}, {"guest": 9090, "host": None}],
            },
            {
                "name": "n2",
                "state": "stopped",
                "pid": None,
                "ip": "10.77.0.12",
                "ssh_port": None,
                "etcd_port": None,
                "published": [{"guest": 8080, "host": None}, {"guest": 9090, "host": None}],
            },
        ],
    }


def run_tool(module: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    code = f"import sys; from {module} import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True
    )


def test_flotilla_cluster_ls_json_of_a_real_cluster_state(tmp_path: Path) -> None:
    """A cluster's saved state (as `up` leaves it, its VMs gone): one document on stdout."""
    cluster = Cluster("jsontest", tmp_path)
    cluster.directory.mkdir()
    cluster.spec = ClusterSpec(Path("/i.qcow2"), Path("/k"), Path("/r"), "quiet", publish=(8080,))
    cluster.inventory = plan_inventory("jsontest", 2)
    cluster.records = {n.name: NodeRecord(n.name, n.ip) for n in cluster.inventory.nodes}
    cluster.save()
    result = run_tool(
        "qemu.cluster_cli",
        "--name", "jsontest", "--state-dir", str(tmp_path), "ls", "--output", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [node["name"] for node in document["nodes"]] == ["n1", "n2"]
    assert {node["state"] for node in document["nodes"]} == {"stopped"}
    table = run_tool("qemu.cluster_cli", "--name", "jsontest", "--state-dir", str(tmp_path), "ls")
    assert table.stdout.startswith("NODE\tSTATE")


def test_flotilla_qemu_json_failure_leaves_stdout_empty(tmp_path: Path) -> None:
    result = run_tool("qemu.cli", "--output", "json", "-I", str(tmp_path / "none.qcow2"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "no disk image" in result.stderr


# A report as `imagebuild build` writes it (trimmed partitions).
REPORT = {
    "name": "flotilla",
    "version": "0.1.0",
    "source_date_epoch": 1796063310,
    "build_seconds": 12.8,
    "kernel": "6.1.0-57-amd64",
    "cmdline": "quiet",
    "packages": 204,
    "sizes": {
        "usr_content_bytes": 338564880,
        "usr_filesystem_bytes": 176123904,
        "usr_partition_bytes": 2147483648,
        "kernel_bytes": 8247232,
        "initrd_bytes": 24698648,
        "root_content_bytes": 1749281,
        "disk_bytes": 7786725376,
        "raw_allocated_bytes": 293605376,
        "qcow2_bytes": 170852352,
    },
    "usr_sha256": "e7" * 32,
    "container_images": ["localhost/busybox:latest"],
    "partitions": [
        {"number": 1, "label": "EFI-SYSTEM", "type": "esp", "uuid": "c3", "offset": 1, "size": 2}
    ],
}


def test_imagebuild_json_is_the_report_file_as_one_document() -> None:
    text = json.dumps(REPORT, indent=2) + "\n"
    document = report_document(text, Path("build/flotilla.report.json"))
    printed = report_json(document)
    assert json.loads(printed) == REPORT
    assert printed + "\n" == text  # the same bytes as the file, key order included


@pytest.mark.parametrize("text", ["{", "[1, 2]", ""])
def test_imagebuild_report_that_is_not_an_object_is_an_error_naming_the_file(text: str) -> None:
    with pytest.raises(ValueError, match=r"build/flotilla\.report\.json: not a JSON report"):
        report_document(text, Path("build/flotilla.report.json"))


def test_imagebuild_summary_names_the_outputs() -> None:
    lines = report_lines(REPORT, Path("build"))
    assert lines[0] == "flotilla 0.1.0: kernel 6.1.0-57-amd64, 204 packages, built in 12.8s"
    assert "build/flotilla.qcow2  162.9 MiB" in lines[1]
    assert any("build/flotilla.report.json" in line for line in lines)


def test_imagebuild_build_help_offers_json_and_verbose() -> None:
    result = run_tool("imagebuild.cli", "build", "-h")
    assert result.returncode == 0
    assert "--json" in result.stdout and "--verbose" in result.stdout
