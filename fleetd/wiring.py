"""One machine's components, built and wired together: the heart, the agent with its executor
and state publisher, the engine, the deadline keeper, the fence guard and the peer responder.

fleetd (daemon.py) adds what only a real machine has (the event recorder's loop, the address
watch, the API, the metrics listener, the status line); the hollow machines of bench/ use this
as it is, so the figures they measure stay fleetd's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import peers
from . import systemd as sd
from .agent import Agent
from .deadline_keeper import DeadlineKeeper, discard_deadline
from .engine import Engine
from .events import Draft
from .executor import TaskExecutor
from .guard import FenceGuard
from .heart import Heart
from .model import Machine
from .peer_key import obtain_peer_key
from .publisher import StatePublisher
from .registry import Registry


@dataclass(frozen=True)
class Wiring:
    """fleet.conf's settings that shape a machine's components, and where it keeps its files."""

    agent_ttl: float
    agent_interval: float
    engine_interval: float
    request_timeout: float
    peer_port: int
    units_directory: Path
    run_directory: Path  # the lease id, the peer key and list: they outlive a fleetd restart
    deadline_file: Path  # read by fleetd-backstop
    fencing: bool = True
    engine: bool = True  # False: disable_engine
    record: Callable[[Draft], None] | None = None  # the event recorder's, if events are kept


@dataclass
class MachineParts:
    heart: Heart
    executor: TaskExecutor
    publisher: StatePublisher
    agent: Agent
    responder: asyncio.DatagramTransport
    engine: Engine | None = None
    keeper: DeadlineKeeper | None = None
    guard: FenceGuard | None = None
    # name -> the coroutine to run as a task; the heart first (it outlives the others at a leave)
    components: dict[str, Coroutine[Any, Any, None]] = field(default_factory=dict)


async def wire_machine(
    registry: Registry, systemd: sd.Systemd, machine: Machine, wiring: Wiring
) -> MachineParts:
    """Build and connect one machine's components; nothing runs until `components` do."""
    run = wiring.run_directory
    heart = Heart(registry, machine, wiring.agent_ttl, run / "lease")
    executor = TaskExecutor(systemd, wiring.units_directory)
    publisher = StatePublisher(registry, systemd, heart, lambda: executor.loaded)
    executor.on_unloaded.append(publisher.forget)
    agent = Agent(
        registry, systemd, heart, executor, publisher, wiring.agent_interval, record=wiring.record
    )
    publisher.on_signal.append(agent.observe_state)
    executor.on_unloaded.append(agent.transitions.forget)
    heart.on_new_lease.append(agent.republish)
    heart.on_contact.append(agent.unfence)
    keeper = None
    if wiring.fencing:
        keeper = DeadlineKeeper(wiring.deadline_file, heart, agent, executor.units_directory)
        heart.on_contact.append(keeper.renew)
    else:
        discard_deadline(wiring.deadline_file)  # the backstop must not fence for us either
    peer_key = await obtain_peer_key(registry, run / "peer-key")
    responder = await peers.serve(machine.ip, wiring.peer_port, peer_key, heart.etcd_age)
    parts = MachineParts(heart, executor, publisher, agent, responder, keeper=keeper)
    parts.components = {
        "heart": heart.run(),
        "agent": agent.run(),
        # Its systemd connection gone for good, it fails: fleetd restarts.
        "state publisher": publisher.run(),
    }
    if wiring.engine:
        parts.engine = Engine(registry, heart, wiring.engine_interval, record=wiring.record)
        parts.components["engine"] = parts.engine.run()
    if keeper is not None:
        parts.guard = FenceGuard(
            registry,
            heart,
            agent,
            keeper,
            wiring.peer_port,
            wiring.request_timeout,
            run / "peers",
            peer_key,
        )
        parts.components["fence guard"] = parts.guard.run()
    return parts
