"""The API served from the first connection on: until a client connects to fleet.sock, fleetd
holds the listening sockets and not the HTTP stack (aiohttp, server and client, is about 13 MiB
of a fleetd's 55 and 0.1 s of its start-up). In a cluster driven from one place most fleetds
never load it.

The kernel queues connections on a listening socket until someone accepts them, so nothing is
lost while the server starts: a readable listening socket (a connection waiting) starts it, and
the server then accepts that connection like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from .listeners import Listener


class RunningServer(Protocol):
    async def close(self) -> None: ...


class ApiOnDemand:
    def __init__(
        self, listeners: Sequence[Listener], start: Callable[[], Awaitable[RunningServer]]
    ) -> None:
        self.listeners = listeners
        self.start = start
        self.server: RunningServer | None = None
        self.connection_waiting = asyncio.Event()

    async def run(self, at_once: bool = False) -> None:
        """A component: start the server at the first connection (or now), then serve. A
        server that cannot start fails the component, and fleetd with it."""
        if not at_once:
            await self.first_connection()
        self.server = await self.start()
        await asyncio.Event().wait()  # the server serves from the event loop by itself

    async def first_connection(self) -> None:
        loop = asyncio.get_running_loop()
        descriptors = [listener.sock.fileno() for listener in self.listeners]
        for descriptor in descriptors:
            loop.add_reader(descriptor, self.connection_waiting.set)
        try:
            await self.connection_waiting.wait()
        finally:
            for descriptor in descriptors:
                loop.remove_reader(descriptor)

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None
