"""The orchestrating side of bench/hollow.py: hollow machines spread over worker processes
(bench/hollow_worker.py), each its own event loop, seen from here as one fleet.

Which machine goes where (`plan_workers`): the engine-capable machines (`--engines E`; fleet's
disable_engine on the rest) get a worker of their own when they are not all of them, so the
leading engine's long passes stall only its own loop, as on a real machine; the other
machines are dealt out over `processes` workers. Each worker reports its machines' counts
every 0.1 s; this side keeps the latest report of each and asks for the rest (each machine's
units, a crash, a halt) one request at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKER = Path(__file__).resolve().parent / "hollow_worker.py"
READY_LINE_LIMIT = 2**24  # a placement reply lists every unit: 10,000 names fit many times


def plan_workers(machines: int, engines: int, processes: int) -> list[list[int]]:
    """Machine indices per worker: the first `engines` machines alone in the first worker
    when they are fewer than all, then the rest dealt round-robin over `processes` workers
    (so every worker holds machines of every age)."""
    if machines < 1 or processes < 1 or not 0 <= engines <= machines:
        raise ValueError("need machines >= 1, processes >= 1 and 0 <= engines <= machines")
    first = engines if 0 < engines < machines else 0
    rest = list(range(first, machines))
    groups = [rest[i::processes] for i in range(min(processes, len(rest)))]
    return ([list(range(first))] if first else []) + groups


@dataclass
class WorkerProcess:
    """One worker: its process, its latest status, and the reply awaited, if any."""

    name: str
    machines: list[int]
    process: asyncio.subprocess.Process
    status: dict[str, Any] = field(default_factory=dict)
    passes: list[tuple[float, int]] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    reply: asyncio.Future[dict[str, Any]] | None = None
    halting: bool = False
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def read(self) -> None:
        assert self.process.stdout is not None
        try:
            while line := await self.process.stdout.readline():
                message = json.loads(line)
                if message["kind"] == "status":
                    self.passes.extend((s, n) for s, n in message.pop("passes"))
                    self.lags.extend(message.pop("lags"))
                    self.status = message
                elif self.reply is not None and not self.reply.done():
                    self.reply.set_result(message)
        finally:
            self.status = {}  # a dead worker's machines are gone, as after a power cut
            self.exited.set()
            if self.reply is not None and not self.reply.done():
                self.reply.set_exception(RuntimeError(f"{self.name} exited"))

    async def request(self, op: str, timeout: float, **arguments: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.reply is None
        self.reply = asyncio.get_running_loop().create_future()
        try:
            self.process.stdin.write(json.dumps({"op": op, **arguments}).encode() + b"\n")
            await self.process.stdin.drain()
            async with asyncio.timeout(timeout):
                return await self.reply
        finally:
            self.reply = None


class HollowFleet:
    """Every hollow machine of a run, over its workers (see the module docstring)."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers
        self.readers = [asyncio.create_task(w.read()) for w in workers]
        self.owner = {index: w for w in workers for index in w.machines}
        self.started = time.monotonic()

    @classmethod
    async def start(
        cls, groups: Sequence[list[int]], config: dict[str, Any], root: Path
    ) -> HollowFleet:
        """Start one worker per group; `config` is what every worker shares (see
        hollow_worker.build_machines), `root` the directory their machines' files go under."""
        started = time.monotonic()
        workers = []
        for number, group in enumerate(groups):
            settings = {
                **config,
                "parent": os.getpid(),
                "machines": group,
                "root": str(root / f"worker{number}"),
            }
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                json.dumps(settings),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=READY_LINE_LIMIT,
            )
            workers.append(WorkerProcess(f"worker {number}", group, process))
        fleet = cls(workers)
        fleet.started = started
        return fleet

    def check(self) -> None:
        """Raise if a worker ended that was not told to: its figures would be no fleet's."""
        for worker in self.workers:
            if worker.exited.is_set() and not worker.halting:
                code = worker.process.returncode
                raise RuntimeError(f"{worker.name} (pid {worker.pid}) ended, exit status {code}")

    def total(self, key: str) -> int:
        return sum(w.status.get(key, 0) for w in self.workers)

    def active(self) -> int:
        return self.total("active")

    def registered(self) -> int:
        return self.total("registered")

    def lost_leases(self) -> int:
        return self.total("lost")

    def leader(self) -> int | None:
        leaders = [w.status["leader"] for w in self.workers if w.status.get("leader") is not None]
        return leaders[0] if leaders else None

    def take_passes(self) -> list[tuple[float, int]]:
        taken = [p for w in self.workers for p in w.passes]
        for worker in self.workers:
            worker.passes = []
        return taken

    def take_lags(self) -> dict[str, list[float]]:
        taken = {w.name: w.lags for w in self.workers}
        for worker in self.workers:
            worker.lags = []
        return taken

    async def placement(self) -> dict[int, set[str]]:
        """Each live machine's active units."""
        found: dict[int, set[str]] = {}
        for worker in self.workers:
            if not worker.exited.is_set():
                reply = await worker.request("placement", 60)
                found.update({int(i): set(units) for i, units in reply["units"].items()})
        return found

    async def crash(self, indices: Sequence[int]) -> None:
        """Crash these machines at once (each worker crashes its own)."""
        mine: dict[str, list[int]] = {}
        for index in indices:
            mine.setdefault(self.owner[index].name, []).append(index)
        await asyncio.gather(
            *(w.request("crash", 60, machines=mine[w.name]) for w in self.workers if w.name in mine)
        )

    async def close(self, timeout: float = 60.0) -> dict[str, int]:
        """Halt every machine and wait for the workers to exit (killing what does not);
        how many machines did not stop cleanly, by reason."""
        problems: dict[str, int] = {}

        async def halt(worker: WorkerProcess) -> None:
            worker.halting = True
            with contextlib.suppress(Exception):
                reply = await worker.request("halt", timeout)
                for reason, count in reply["problems"].items():
                    problems[reason] = problems.get(reason, 0) + count
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await worker.process.wait()
            if worker.process.returncode is None:
                worker.process.kill()
                await worker.process.wait()

        await asyncio.gather(*(halt(w) for w in self.workers if not w.exited.is_set()))
        for worker in self.workers:
            worker.halting = True
            if worker.process.returncode is None:
                worker.process.kill()
                await worker.process.wait()
        await asyncio.gather(*self.readers, return_exceptions=True)
        return problems
