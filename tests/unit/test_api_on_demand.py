"""fleetd's API from the first connection on (fleetd/api_on_demand.py): the daemon does not load
the HTTP stack until a client connects, and that first client is answered."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

from fleetd.api_on_demand import ApiOnDemand
from fleetd.config import Config
from fleetd.daemon import api_at_once
from fleetd.listeners import Listener

REPO = Path(__file__).resolve().parents[2]


def test_the_daemon_does_not_import_the_http_stack() -> None:
    probe = "import sys, fleetd.daemon; print(sorted(m for m in sys.modules if 'aiohttp' in m))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def unix_listener(path: Path) -> Listener:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    sock.setblocking(False)
    return Listener(sock, f"unix:{path}")


class EchoServer:
    """Stands in for the API's server: answers each connection with one line."""

    def __init__(self, server: asyncio.AbstractServer) -> None:
        self.server = server

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def test_the_first_connection_starts_the_server_which_answers_it(tmp_path: Path) -> None:
    listener = unix_listener(tmp_path / "api.sock")
    starts = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await writer.drain()
        writer.close()

    async def start() -> EchoServer:
        nonlocal starts
        starts += 1
        return EchoServer(await asyncio.start_unix_server(answer, sock=listener.duplicate()))

    api = ApiOnDemand([listener], start)
    component = asyncio.create_task(api.run())
    await asyncio.sleep(0.05)
    assert starts == 0, "nobody connected yet"
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "api.sock"))
    assert await asyncio.wait_for(reader.readline(), 5) == b"hello\n"
    writer.close()
    assert starts == 1
    component.cancel()
    await asyncio.gather(component, return_exceptions=True)
    await api.close()
    listener.sock.close()


async def test_a_server_that_cannot_start_fails_the_component(tmp_path: Path) -> None:
    async def start() -> EchoServer:
        raise OSError("no such certificate")

    api = ApiOnDemand([], start)
    component = asyncio.create_task(api.run(at_once=True))
    await asyncio.wait([component], timeout=5)
    assert isinstance(component.exception(), OSError)


def test_tcp_or_tls_starts_the_api_with_fleetd(tmp_path: Path) -> None:
    unix = unix_listener(tmp_path / "a.sock")
    tcp = Listener(socket.socket(socket.AF_INET, socket.SOCK_STREAM), "tcp:127.0.0.1:1")
    try:
        assert not api_at_once(Config(), [unix])
        assert api_at_once(Config(), [unix, tcp])
        assert api_at_once(Config(api_listen="127.0.0.1:4002"), [unix])
        assert api_at_once(Config(api_tls_cert="/cert.pem"), [unix])
    finally:
        unix.sock.close()
        tcp.sock.close()


LAG_PROBE = """
import asyncio, sys, time
from fleetd.daemon import load_api_modules

async def main():
    gaps = []
    async def tick():
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.002)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
    task = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    gaps.clear()
    start = time.monotonic()
    await load_api_modules()
    took = time.monotonic() - start
    await asyncio.sleep(0.01)
    task.cancel()
    assert "aiohttp" in sys.modules
    print(took, max(gaps))

asyncio.run(main())
"""


def test_loading_the_api_leaves_the_event_loop_running() -> None:
    """The HTTP stack is imported in a thread: imported in the event loop, it held the loop (and
    the watchdog's pings) for the whole import, seconds on a busy VM."""
    result = subprocess.run(
        [sys.executable, "-c", LAG_PROBE], capture_output=True, text=True, check=True, cwd=REPO
    )
    took, longest_gap = map(float, result.stdout.split())
    assert took > 0.03, "the import did the work here (not already loaded)"
    assert longest_gap < took / 2, (took, longest_gap)
