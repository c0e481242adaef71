"""Benchmark: one fleetd's footprint on real lab machines. Boot to registered (fleetd started on
3 fresh machines at once until all 3 are in etcd's machine list, as `list-machines` shows them)
and the memory each fleetd holds at rest: RSS, PSS, and where the RSS is (the largest mappings,
heap and anonymous memory apart from the shared libraries).

    .venv/bin/python bench/fleetd_footprint.py [--rounds 3]

Targets (issue 13): boot to registered at or below fleet's 1.2-1.3 s; RSS <= 35 MiB per fleetd
(fleet's holds 14-20 MiB).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code, here and (bind-mounted) on the machines

from fleetd.keys import Keys  # noqa: E402
from fleetd.registry import Registry  # noqa: E402
from fleetlab.fleet import configure_fleetd  # noqa: E402
from fleetlab.lab import Lab  # noqa: E402
from imagebuild.rootfs import build_rootfs  # noqa: E402

MACHINES = 3
TARGET_REGISTERED_SECONDS = 1.3
TARGET_RSS_MIB = 35.0
IDLE_SECONDS = 5.0
IMPORT_PROBE = (
    "import time, resource; t = time.perf_counter(); import fleetd.daemon; "
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
)


def fleetd_pid(lab: Lab, machine: str) -> int:
    procs = lab.layout.machine(machine).cgroup / "system.slice/fleetd.service/cgroup.procs"
    return int(procs.read_text().split()[0])


def memory_of(pid: int) -> dict[str, float]:
    """MiB: RSS, PSS and private memory, and the RSS of each mapping (by file, [heap], [anon])."""
    totals: collections.Counter[str] = collections.Counter()
    by_mapping: collections.Counter[str] = collections.Counter()
    mapping = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            mapping = fields[5] if len(fields) > 5 else "[anon]"
        elif fields[0] in ("Rss:", "Pss:", "Private_Clean:", "Private_Dirty:"):
            totals[fields[0]] += int(fields[1])
            if fields[0] == "Rss:":
                by_mapping[mapping] += int(fields[1])
    figures = {
        "rss": totals["Rss:"] / 1024,
        "pss": totals["Pss:"] / 1024,
        "private": (totals["Private_Clean:"] + totals["Private_Dirty:"]) / 1024,
    }
    figures.update({name: kib / 1024 for name, kib in by_mapping.most_common(8)})
    return figures


async def registered_after(lab: Lab) -> float:
    """Start fleetd on every machine at once; seconds until etcd lists them all."""
    machines = lab.running_machines()
    async with Registry.open(lab.host_etcd_endpoint, Keys(), timeout=2.0) as registry:
        started = time.monotonic()
        await asyncio.gather(
            *(
                asyncio.to_thread(lab.run, m, ["systemctl", "start", "--no-block", "fleetd"])
                for m in machines
            )
        )
        while len(await registry.machines()) < len(machines):
            if time.monotonic() - started > 30:
                raise TimeoutError("fleetd did not register every machine within 30 s")
            await asyncio.sleep(0.01)
        return time.monotonic() - started


async def one_round(rootfs: Path, measure_memory: bool) -> tuple[float, list[dict[str, float]]]:
    lab = Lab("benchfoot")
    lab.down()
    lab.up(MACHINES, rootfs, REPO)
    try:
        for machine in lab.running_machines():
            configure_fleetd(lab, machine, 10.0)
        seconds = await registered_after(lab)
        memory = []
        if measure_memory:
            # Where the start-up time goes, on one machine: systemd's jobs and fleetd's steps.
            argv = ["journalctl", "-o", "short-monotonic", "--no-pager", "-u", "fleetd*"]
            print(lab.run("m1", argv).stdout)
            await asyncio.sleep(IDLE_SECONDS)
            memory = [memory_of(fleetd_pid(lab, m)) for m in lab.running_machines()]
            # The API (aiohttp) loads at its first connection: what it adds to a fleetd.
            lab.run("m1", ["fleetctl", "list-machines"])
            with_api = memory_of(fleetd_pid(lab, "m1"))["rss"]
            print(f"fleetd RSS on m1 once the API served fleetctl: {with_api:.1f} MiB")
            probe = lab.run("m1", ["python3", "-c", IMPORT_PROBE]).stdout.split()
            print(
                f"import fleetd.daemon inside a machine: {float(probe[0]):.2f}s,"
                f" peak RSS {int(probe[1]) / 1024:.1f} MiB (a process that only imports)"
            )
        return seconds, memory
    finally:
        lab.down()


async def run(rounds: int) -> None:
    rootfs = build_rootfs()
    results = [await one_round(rootfs, measure_memory=i == 0) for i in range(rounds)]
    times = [seconds for seconds, _ in results]
    median = statistics.median(times)
    verdict = "ok" if median <= TARGET_REGISTERED_SECONDS else "OVER TARGET"
    print(
        f"boot to registered ({MACHINES} fresh machines, fleetd started at once): median"
        f" {median:.2f}s (runs: {', '.join(f'{t:.2f}' for t in times)};"
        f" target <= {TARGET_REGISTERED_SECONDS}s, fleet 1.2-1.3 s) {verdict}"
    )
    memory = results[0][1]
    worst = max(memory, key=lambda figures: figures["rss"])
    verdict = "ok" if worst["rss"] <= TARGET_RSS_MIB else "OVER TARGET"
    rss_list = ", ".join(f"{figures['rss']:.1f}" for figures in memory)
    print(
        f"fleetd memory at rest: RSS {rss_list} MiB"
        f" (target <= {TARGET_RSS_MIB:.0f} MiB, fleet 14-20) {verdict};"
        f" PSS {statistics.mean(m['pss'] for m in memory):.1f} MiB,"
        f" private {statistics.mean(m['private'] for m in memory):.1f} MiB"
    )
    parts = {k: v for k, v in worst.items() if k not in ("rss", "pss", "private")}
    print("  where the RSS is: " + ", ".join(f"{Path(k).name} {v:.1f}" for k, v in parts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="labs booted (median kept)")
    asyncio.run(run(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
