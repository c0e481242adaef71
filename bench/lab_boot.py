"""Benchmark: seconds for a lab of 3 and of 10 machines to reach systemd `running`, and the
memory of an idle machine (proportional set size of all its processes, so the shared rootfs
pages are split fairly between machines). Prints its figures; targets from the foundation issue.

    .venv/bin/python bench/lab_boot.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from fleetlab import cgroups
from fleetlab.lab import Lab
from imagebuild.rootfs import build_rootfs

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = {3: 3.0, 10: 10.0}
TARGET_MB_PER_MACHINE = 60.0
IDLE_SETTLE_SECONDS = 3.0


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def machine_memory_mb(lab: Lab, name: str) -> float:
    cgroup = lab.layout.machine(name).cgroup
    return sum(pss_kib(pid) for pid in cgroups.pids(cgroup)) / 1024


def boot_once(count: int, rootfs: Path, measure_memory: bool) -> tuple[float, list[float]]:
    lab = Lab(f"bench{count}")
    lab.down()
    started = time.monotonic()
    try:
        lab.up(count, rootfs, REPO)
        seconds = time.monotonic() - started
        memory: list[float] = []
        if measure_memory:
            time.sleep(IDLE_SETTLE_SECONDS)
            memory = [machine_memory_mb(lab, f"m{i}") for i in range(1, count + 1)]
        return seconds, memory
    finally:
        lab.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="boots per lab size (median kept)")
    rounds = parser.parse_args().rounds

    started = time.monotonic()
    rootfs = build_rootfs()
    print(f"rootfs cache lookup: {time.monotonic() - started:.2f}s ({rootfs})")
    for count, target in TARGET_SECONDS.items():
        results = [boot_once(count, rootfs, measure_memory=(i == 0)) for i in range(rounds)]
        times = [seconds for seconds, _ in results]
        median = statistics.median(times)
        verdict = "ok" if median <= target else "OVER TARGET"
        print(
            f"{count:>2} machines to running: median {median:.2f}s "
            f"(runs: {', '.join(f'{t:.2f}' for t in times)}; target <= {target:.0f}s) {verdict}"
        )
        memory = results[0][1]
        mean = statistics.mean(memory)
        verdict = "ok" if max(memory) <= TARGET_MB_PER_MACHINE else "OVER TARGET"
        print(
            f"{count:>2} machines idle memory (PSS): mean {mean:.1f} MB, max {max(memory):.1f} MB "
            f"per machine (target <= {TARGET_MB_PER_MACHINE:.0f} MB) {verdict}"
        )


if __name__ == "__main__":
    main()
