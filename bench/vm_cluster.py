"""Benchmark: the VM cluster under QEMU (TCG) on this host. Seconds from launch until fleetctl
lists every machine; failover of the demo container unit (SIGKILL of its VM's QEMU until the page
answers from another VM), repeated; memory per VM. Prints its figures and the targets.

    .venv/bin/python bench/vm_cluster.py [--repeats 5] [--cpus 1] [--memory 1024] [--spec FILE]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from flotilla.process import run
from qemu.cluster import Cluster
from qemu.cluster_checks import (
    BIN,
    DEMO_SPEC,
    cluster_cli,
    fleetctl,
    wait_for_page,
)
from qemu.cluster_up import wait_for_machines

REPO = Path(__file__).resolve().parents[1]
AGENT_TTL = 10.0  # the member template's agent_ttl
TARGETS = {"ready": "≤ 120 s", "failover": f"≤ agent_ttl + 10 s = {AGENT_TTL + 10:.0f} s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--memory", type=int, default=1024)
    parser.add_argument("--spec", type=Path, default=DEMO_SPEC)
    args = parser.parse_args()
    run([BIN / "imagebuild", "build"])
    name = "bench" + secrets.token_hex(2)
    try:
        ready = bring_up(name, args.cpus, args.memory)
        cluster = Cluster(name)
        cluster.load()
        memory = memory_per_vm(cluster)
        failovers = fail_over_repeatedly(cluster, args.spec, args.repeats)
    finally:
        cluster_cli(name, "down")
    report(args, ready, failovers, memory)


def bring_up(name: str, cpus: int, memory: int) -> float:
    result = cluster_cli(name, "up", "--cpus", str(cpus), "--memory", str(memory))
    if result.returncode != 0:
        raise SystemExit(f"up failed:\n{result.stdout}{result.stderr}")
    line = next(line for line in result.stdout.splitlines() if "fleet lists" in line)
    return float(line.rsplit(", ", 1)[1].split("s after", 1)[0])


def fail_over_repeatedly(cluster: Cluster, spec: Path, repeats: int) -> list[float]:
    with tempfile.TemporaryDirectory() as scratch:
        run([BIN / "flotilla-unit", "render", spec, "-o", scratch])
        (unit,) = Path(scratch).glob("*.service")
        fleetctl(cluster, "start", str(unit), timeout=180)
    home, _ = wait_for_page(cluster, cluster.running_nodes(), time.monotonic() + 180)
    seconds = []
    for repeat in range(repeats):
        survivors = [node for node in cluster.running_nodes() if node != home]
        killed_at = time.monotonic()
        cluster_cli(cluster.name, "kill", home)
        new_home, _ = wait_for_page(cluster, survivors, killed_at + 300)
        seconds.append(time.monotonic() - killed_at)
        print(f"failover {repeat + 1}: {seconds[-1]:.1f}s ({home} -> {new_home})", flush=True)
        cluster_cli(cluster.name, "start", home)
        wait_for_machines(cluster, len(cluster.inventory.nodes), time.monotonic() + 300)
        home = new_home
    return seconds


def memory_per_vm(cluster: Cluster) -> dict[str, float]:
    """Host side: each QEMU's PSS; guest side: memory in use as the guest reports it (MiB)."""
    pss = []
    for node in cluster.running_nodes():
        rollup = Path(f"/proc/{cluster.pid(node)}/smaps_rollup").read_text()
        kib = next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
        pss.append(kib / 1024)
    used = [
        int(cluster.ssh(node, "free -m | awk '/^Mem:/ {print $3}'").strip())
        for node in cluster.running_nodes()
    ]
    return {"qemu_pss_mib": statistics.mean(pss), "guest_used_mib": statistics.mean(used)}


def report(
    args: argparse.Namespace, ready: float, failovers: list[float], memory: dict[str, float]
) -> None:
    print(f"\nVM cluster: 3 VMs, {args.cpus} vCPU and {args.memory} MiB each, TCG, 2 host cores")
    print(f"  launch -> fleetctl lists 3 machines  {ready:6.1f} s        target {TARGETS['ready']}")
    median, worst = statistics.median(failovers), max(failovers)
    print(
        f"  container failover, {len(failovers)} runs       median {median:.1f} s, "
        f"max {worst:.1f} s   target {TARGETS['failover']}"
    )
    print(
        f"  memory per VM                       QEMU PSS {memory['qemu_pss_mib']:.0f} MiB,"
        f" guest in use {memory['guest_used_mib']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
