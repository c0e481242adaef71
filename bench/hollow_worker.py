"""One worker process of bench/hollow.py: some hollow machines in their own event loop.

    python bench/hollow_worker.py '<settings as JSON>'   (started by bench/hollow.py only)

Why a process of its own: in one event loop, every callback that runs long (the leading
engine planning 10,000 units, a flood of agent passes) delays every other machine's keepalive
in that loop, which a machine with its own fleetd never suffers. bench/hollow.py therefore puts
the engine-capable machines in one worker and spreads the rest over `--processes` workers; it
only orchestrates and measures.

The protocol is JSON lines. On stdout (this process's only use of it; anything printed goes to
stderr), every STATUS_INTERVAL: the machines' counts (alive, registered, units active, leases
replaced), the leading engine if it is here, the engine passes that wrote since the last line, and
this loop's lag samples. On stdin, one request at a time: `placement` (each machine's active
units), `crash` (a list of machine indices), `halt` (stop every machine, then exit). EOF on
stdin, or the parent's death (PR_SET_PDEATHSIG), ends the process: it never outlives the run.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import json
import logging
import os
import resource
import signal
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.hollow_machine import HollowMachine, HollowSettings
from bench.hollow_measure import EnginePasses, LoopLag
from bench.hollow_systemd import Latencies
from fleetd import guard
from fleetd.keys import Keys

STATUS_INTERVAL = 0.1
BOOT_TOGETHER = 50  # machines started at once (as after a power cut of a rack, not a data centre)
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (and exit if it already has)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(3)


def build_machines(config: dict[str, Any]) -> list[HollowMachine]:
    root = Path(config["root"])
    root.mkdir(parents=True, exist_ok=True)
    return [
        HollowMachine(
            index,
            HollowSettings(
                config["endpoint"],
                Keys(config["prefix"]),
                agent_ttl=config["agent_ttl"],
                peer_port=config["peer_port"],
                engine=index < config["engines"],
                latencies=Latencies(config["start_latency"], config["stop_latency"]),
            ),
            root,
        )
        for index in config["machines"]
    ]


class Worker:
    def __init__(self, machines: list[HollowMachine], out: TextIO) -> None:
        self.machines = machines
        self.by_index = {m.index: m for m in machines}
        self.out = out
        self.passes = EnginePasses()
        self.lag = LoopLag()
        self.unhandled_kinds: collections.Counter[str] = collections.Counter()
        self.leases: dict[int, int] = {}  # machine -> the lease last seen
        self.replaced = 0

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message, separators=(",", ":")) + "\n")
        self.out.flush()

    def count_new_leases(self) -> int:
        """Leases replaced since boot, in all (a machine's lease expired and it registered
        again); Heart.lost_lease only says whether it ever happened to that machine."""
        for machine in self.machines:
            lease = machine.heart.lease if machine.heart else None
            if lease is None:
                continue
            before = self.leases.setdefault(machine.index, lease)
            if lease != before:
                self.leases[machine.index] = lease
                self.replaced += 1
        return self.replaced

    def status(self) -> dict[str, Any]:
        alive = [m for m in self.machines if m.alive]
        leaders = [m.index for m in alive if m.engine and m.engine.leading_since is not None]
        return {
            "kind": "status",
            "alive": len(alive),
            "registered": sum(bool(m.heart and m.heart.registered.is_set()) for m in alive),
            "active": sum(len(m.active_units()) for m in alive),
            "lost": self.count_new_leases(),
            "leader": leaders[0] if leaders else None,
            "passes": self.passes.take(),
            "lags": [round(lag, 4) for lag in self.lag.take()],
        }

    async def boot(self) -> None:
        for first in range(0, len(self.machines), BOOT_TOGETHER):
            await asyncio.gather(*(m.start() for m in self.machines[first : first + BOOT_TOGETHER]))
        for machine in self.machines:
            if machine.engine is not None:
                self.passes.instrument(machine.engine)

    async def report(self) -> None:
        while True:
            self.send(self.status())
            await asyncio.sleep(STATUS_INTERVAL)

    async def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "placement":
            units = {m.index: sorted(m.active_units()) for m in self.machines if m.alive}
            return {"kind": "placement", "units": units}
        if op == "crash":
            victims = [self.by_index[index] for index in request["machines"]]
            await asyncio.gather(*(m.crash() for m in victims))
            return {"kind": "crashed", "machines": request["machines"]}
        if op == "halt":
            return {"kind": "halted", "problems": await self.halt()}
        raise ValueError(f"unknown request {op!r}")

    def unhandled(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Log the first of each kind in full, then only count it: a thousand machines
        stopping at once would repeat one traceback a thousand times."""
        error = context.get("exception")
        kind = f"{context.get('message')}: {error!r}"
        self.unhandled_kinds[kind] += 1
        if self.unhandled_kinds[kind] == 1:
            loop.default_exception_handler(context)

    async def halt(self) -> dict[str, int]:
        stuck = await asyncio.gather(*(m.halt() for m in self.machines), return_exceptions=True)
        problems = collections.Counter(str(reason) for reason in stuck if reason is not None)
        problems.update(
            {
                f"unhandled in the loop (first one logged): {k}": n
                for k, n in self.unhandled_kinds.items()
            }
        )
        return dict(problems)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self.unhandled)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        probe = asyncio.create_task(self.lag.run())
        reporter = asyncio.create_task(self.report())
        boot = asyncio.create_task(self.boot())
        try:
            while line := await reader.readline():
                request = json.loads(line)
                if request["op"] != "halt":
                    await boot  # a request about machines waits until they all exist
                elif not boot.done():
                    boot.cancel()
                reply = await self.answer(request)
                self.send(self.status())  # what the reply changed is seen before the reply
                self.send(reply)
                if request["op"] == "halt":
                    return
            await self.halt()  # EOF: the parent is gone or gave up on us
        finally:
            for task in (probe, reporter, boot):
                task.cancel()


def stop_hard_after(seconds: float) -> None:
    """The last resort of a bounded run, from a thread: exit even if the loop never returns."""
    timer = threading.Timer(seconds, lambda: os._exit(2))
    timer.daemon = True
    timer.start()


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    die_with_parent(config["parent"])
    stop_hard_after(config["deadline"])
    logging.basicConfig(
        level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a channel and a socket per machine
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")  # the protocol's; prints go to stderr
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if config.get("peer_refresh"):  # an experiment on fleetd's constant, named in the output
        guard.PEER_REFRESH_SECONDS = config["peer_refresh"]
    worker = Worker(build_machines(config), out)
    asyncio.run(worker.serve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
