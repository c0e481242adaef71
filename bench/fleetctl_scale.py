"""Benchmark: fleetctl at scale. `list-units` and `list-unit-files` with 1,000 and 10,000 units
(through the API inside a machine, and through etcd from the host), and `start` of 1,000 units
in one command.

    .venv/bin/python bench/fleetctl_scale.py

Targets (issue 4): listings <= 1 s at 10,000 units; the 1,000-unit start within fleetd's
throughput target (1,000 units active on 10 machines in 7 s; this lab has 3).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from fleetbench import SLEEPER, fleet_lab

from fleetlab.lab import Lab

FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))


def timed(
    argv: list[str], env: dict[str, str] | None = None, lab: Lab | None = None
) -> tuple[float, str]:
    started = time.monotonic()
    if lab is not None:
        result = lab.run("m1", argv, timeout=600)
    else:
        result = subprocess.run(
            argv, env=env, capture_output=True, text=True, check=True, timeout=600
        )
    return time.monotonic() - started, result.stdout


def listings(lab: Lab, count: int) -> None:
    env = {**os.environ, "FLEETCTL_DRIVER": "etcd", "FLEETCTL_ENDPOINT": lab.host_etcd_endpoint}
    for command in ("list-unit-files", "list-units"):
        for driver, argv, where in (
            ("etcd", [FLEETCTL, command, "--no-legend"], None),
            ("API", ["fleetctl", command, "--no-legend"], lab),
        ):
            seconds, out = timed(argv, env=env if where is None else None, lab=where)
            rows = len(out.splitlines())
            verdict = "ok" if seconds <= 1 or count < 10_000 else "OVER TARGET"
            print(
                f"{command:<16} {driver:<4} driver, {count:>6} units: {seconds:.2f}s ({rows} rows)"
                f"{' (target <= 1 s) ' + verdict if count >= 10_000 else ''}",
                flush=True,
            )


async def run() -> None:
    async with fleet_lab("benchctl", 3, 10.0) as (lab, client):
        names = [f"scale-{i:05d}.service" for i in range(10_000)]
        await client.submit(dict.fromkeys(names[:1000], SLEEPER))
        env = {**os.environ, "FLEETCTL_DRIVER": "etcd", "FLEETCTL_ENDPOINT": lab.host_etcd_endpoint}
        seconds, _ = timed([FLEETCTL, "start", *names[:1000]], env=env)
        print(
            f"fleetctl start of 1000 units (blocking, until all launched): {seconds:.2f}s",
            flush=True,
        )
        listings(lab, 1000)
        await client.submit(dict.fromkeys(names[1000:], SLEEPER))
        listings(lab, 10_000)


if __name__ == "__main__":
    asyncio.run(run())
