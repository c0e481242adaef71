"""Hollow machines: fleetd's real components, many machines in one process, systemd simulated.

Each `HollowMachine` is wired by fleetd's own `wiring.wire_machine`, as fleetd wires a real
one: its own etcd connection (a Registry with its own gRPC channel), Heart (lease +
keepalives), TaskExecutor (writing unit files into its own directory), StatePublisher, Agent,
Engine, DeadlineKeeper, FenceGuard and peer responder (UDP on its own loopback address,
127.X.Y.Z). Only PID 1 is the simulation of bench/hollow_systemd.py, and there is no HTTP
API, event recorder or status line (fleetctl uses the etcd driver).

`crash()` is a power cut: every task of the machine stops at once (no more keepalives, no
graceful leave), its etcd connection drops and its units vanish; its lease expires by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.hollow_systemd import Latencies, SimulatedSystemd
from fleetd.engine import Engine
from fleetd.heart import Heart
from fleetd.keys import Keys
from fleetd.model import Machine
from fleetd.registry import Registry
from fleetd.wiring import Wiring, wire_machine

HALT_SECONDS = 5.0


@dataclass(frozen=True)
class HollowSettings:
    """What every hollow machine of one run shares (fleet.conf's settings, as fleetd's)."""

    endpoint: str
    keys: Keys
    agent_ttl: float = 10.0
    engine_interval: float = 2.0
    agent_interval: float = 5.0
    request_timeout: float = 3.0
    peer_port: int = 7007  # every machine answers on its own address, all on this port
    fencing: bool = True
    engine: bool = True  # False: disable_engine
    latencies: Latencies = field(default_factory=Latencies)


def hollow_identity(index: int) -> Machine:
    """Machine `index`'s id (32 hex digits) and loopback address (127.1.0.1, ...)."""
    machine_id = hashlib.md5(f"hollow-{index}".encode()).hexdigest()
    high, low = divmod(index, 250)
    return Machine(machine_id, f"127.1.{high}.{low + 1}", {"hollow": "true"})


class HollowMachine:
    def __init__(self, index: int, settings: HollowSettings, root: Path) -> None:
        self.index = index
        self.settings = settings
        self.machine = hollow_identity(index)
        self.root = root / f"m{index:05d}"
        self.systemd = SimulatedSystemd(settings.latencies)
        self.tasks: list[asyncio.Task[Any]] = []
        self.stack = contextlib.AsyncExitStack()
        self.heart: Heart | None = None
        self.engine: Engine | None = None
        self.registry: Registry | None = None

    @property
    def alive(self) -> bool:
        return bool(self.tasks) and not any(task.done() for task in self.tasks)

    async def start(self) -> None:
        """Wire the components as fleetd does (fleetd/wiring.py) and start them."""
        s = self.settings
        registry = await self.stack.enter_async_context(
            Registry.open(s.endpoint, s.keys, s.request_timeout)
        )
        self.registry = registry
        wiring = Wiring(
            agent_ttl=s.agent_ttl,
            agent_interval=s.agent_interval,
            engine_interval=s.engine_interval,
            request_timeout=s.request_timeout,
            peer_port=s.peer_port,
            units_directory=self.root / "units",
            run_directory=self.root / "run",
            deadline_file=self.root / "run" / "deadline",
            fencing=s.fencing,
            engine=s.engine,
        )
        parts = await wire_machine(registry, self.systemd, self.machine, wiring)  # type: ignore[arg-type]
        self.stack.callback(parts.responder.close)
        self.heart, self.engine = parts.heart, parts.engine
        self.tasks = [asyncio.create_task(c) for c in parts.components.values()]

    async def crash(self) -> None:
        """A power cut: keepalives stop mid-beat, the connection drops, the units vanish."""
        self.systemd.crash()
        await self.halt()

    async def halt(self) -> str | None:
        """Stop every task and close the connection; what did not stop in time, if anything."""
        for task in self.tasks:
            task.cancel()
        stuck = None
        try:
            async with asyncio.timeout(HALT_SECONDS):
                await asyncio.gather(*self.tasks, return_exceptions=True)
        except TimeoutError:
            stuck = f"its components did not end within {HALT_SECONDS:.0f}s of being cancelled"
            for task in self.tasks:  # they end with the connection closed under them: expected
                task.add_done_callback(lambda done: done.cancelled() or done.exception())
        self.tasks = []
        try:
            async with asyncio.timeout(HALT_SECONDS):
                await self.stack.aclose()
        except TimeoutError:
            stuck = "closing the etcd connection hung"
        except Exception as error:  # a crash's connection may fail to close cleanly
            stuck = None if self.systemd.closed else f"closing failed: {error!r}"
        return stuck

    def active_units(self) -> set[str]:
        return {u for u, s in self.systemd.states.items() if s.active_state == "active"}
