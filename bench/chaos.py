"""Benchmark: chaos. A seeded random sequence of faults (kill, stop, start, partition, heal,
fleetd SIGKILL and SIGSTOP, etcd stop and start) and fleetctl start/stop/destroy on a lab, with
systemd sampled on every machine every 0.25 s. Reports double runs and lost units (the target:
0 and 0) and writes the event log to build/chaos-<seed>.log and a timeline picture (per unit,
where it ran over time, every fault and repair marked) to build/chaos-<seed>.svg.

    .venv/bin/python bench/chaos.py [--events 1000] [--seed 1] [--machines 5] [--ttl 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from fleetbench import fleet_lab

from fleetd.client import FleetClient
from fleetd.events import decode_page
from fleetlab.chaos import Chaos, ChaosFailure, timeline

LOG_DIR = Path(__file__).resolve().parents[1] / "build"


async def event_history_size(client: FleetClient) -> tuple[int, int]:
    """How many keys the event history holds in etcd, and how many events they carry."""
    registry = client.registry
    found = await registry.client.get_prefix(registry.keys.events)
    return len(found.kvs), sum(len(decode_page(kv.value)) for kv in found.kvs)


async def main(events: int, seed: int, machines: int, ttl: float) -> int:
    async with fleet_lab("benchchaos", machines, ttl) as (lab, client):
        chaos = Chaos(lab, client, ttl, seed)
        started = time.monotonic()
        failure = None
        try:
            await chaos.run(events)
        except ChaosFailure as error:
            failure = str(error)
        elapsed = time.monotonic() - started
        event_keys, events = await event_history_size(client)
    LOG_DIR.mkdir(exist_ok=True)
    log_path = LOG_DIR / f"chaos-{seed}.log"
    log_path.write_text("\n".join(chaos.log) + "\n")
    picture_path = LOG_DIR / f"chaos-{seed}.svg"
    title = f"chaos seed {seed}: {machines} machines, agent_ttl {ttl:g}s"
    picture_path.write_text(
        timeline(chaos.sampler.runs, chaos.moments, chaos.started, time.monotonic(), title)
    )
    print(f"chaos: seed {seed}, {machines} machines, agent_ttl {ttl:g}s, {elapsed:.0f}s")
    print(f"  events            {sum(chaos.counts.values())} (the cluster restored included)")
    print(f"  checkpoints       {chaos.checkpoints}")
    print(f"  runs observed     {len(chaos.sampler.runs)}")
    print(f"  double runs       {len(chaos.sampler.double_runs())}")
    print(f"  lost units        {0 if failure is None or 'lost' not in failure else 'yes'}")
    print(f"  event log         {log_path}")
    print(f"  timeline          {picture_path} (per unit, where it ran; faults marked)")
    print(f"  event history     {events} events in {event_keys} etcd keys (bounded per machine)")
    print("  by kind           " + ", ".join(f"{k} {n}" for k, n in sorted(chaos.counts.items())))
    if failure:
        print(failure, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--machines", type=int, default=5)
    parser.add_argument("--ttl", type=float, default=3.0)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.events, args.seed, args.machines, args.ttl)))
