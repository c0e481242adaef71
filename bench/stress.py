"""Benchmark: stress. 1,000 units started on 10 lab machines while a CPU hog runs in every
machine (a busy loop per CPU) and etcd's disk is throttled, then held under that load; at the
default agent_ttl nothing may fail over. Prints what the load was (CPU, etcd's fsync latency),
seconds until every unit ran, the least lease TTL and backstop margin any machine had left, what
fleetd's journals say, and every false failover found (the target: none).

    .venv/bin/python bench/stress.py [--units 1000] [--machines 10] [--ttl 10] [--hold 60]
                                     [--write-iops 30]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from fleetbench import fleet_lab

from fleetlab.stress import StressSettings, run_stress

SHOWN_FAILOVERS = 40


async def main(machines: int, settings: StressSettings) -> int:
    started = time.monotonic()
    async with fleet_lab("benchload", machines, settings.ttl) as (lab, _):
        report = await run_stress(lab, settings)
    print("stress: " + "\n  ".join(report.lines()))
    print(f"  took {time.monotonic() - started:.0f}s with the lab's setup and teardown")
    found = report.false_failovers()
    for line in found[:SHOWN_FAILOVERS]:
        print(f"  FALSE FAILOVER {line}")
    if len(found) > SHOWN_FAILOVERS:
        print(f"  ... and {len(found) - SHOWN_FAILOVERS} more")
    return 1 if found else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=10.0, help="agent_ttl (fleetd's default)")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds under load after")
    parser.add_argument("--write-iops", type=int, default=30, help="etcd's disk writes/s")
    args = parser.parse_args()
    settings = StressSettings(args.units, args.ttl, args.hold, args.write_iops)
    sys.exit(asyncio.run(main(args.machines, settings)))
