"""Replay a chaos seed and keep every machine's journal (fleetd, its backstop, the units) and the
event log under build/chaos-replay-<seed>/ when it fails: what a failing seed needs to be read.

    .venv/bin/python bench/replay_chaos.py --seed 7 [--events 1000] [--machines 5] [--ttl 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from fleetlab.chaos import Chaos, ChaosFailure
from fleetlab.fleet import fleet_client, start_fleetd
from fleetlab.lab import Lab
from imagebuild.rootfs import build_rootfs

OUT = Path(__file__).resolve().parents[1] / "build"


async def main(events: int, seed: int, machines: int, ttl: float) -> int:
    lab = Lab("replay")
    lab.down()
    lab.up(machines, build_rootfs(), Path(__file__).resolve().parents[1])
    failure = None
    try:
        start_fleetd(lab, ttl)
        async with fleet_client(lab) as client:
            chaos = Chaos(lab, client, ttl, seed)
            try:
                await chaos.run(events)
            except ChaosFailure as error:
                failure = str(error)
        if failure:
            out = OUT / f"chaos-replay-{seed}"
            out.mkdir(parents=True, exist_ok=True)
            (out / "events.log").write_text("\n".join(chaos.log) + "\n" + failure + "\n")
            for record in lab.require_state().machines:
                options = ["-o", "short-monotonic", "--no-pager"]
                (out / f"{record.name}.journal").write_text(lab.journal_text(record.name, options))
            print(f"failed; journals in {out}\n{failure}")
        else:
            print(f"seed {seed}: {events} events, no failure")
    finally:
        lab.down()
    return 1 if failure else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--machines", type=int, default=5)
    parser.add_argument("--ttl", type=float, default=3.0)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.events, args.seed, args.machines, args.ttl)))
