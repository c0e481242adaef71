"""A TCP forwarder from the host's loopback into the lab's network namespace.

The lab's bridge lives in a namespace of its own with no route to the host, yet tests and
tools on the host need the lab's etcd. This process binds its listening socket in the host's
namespace first, then moves itself into the lab's: the listener stays where it was created,
every new outgoing connection is made inside the lab. Nothing but loopback is ever exposed.

    python -m fleetlab.forward LISTEN_PORT NETNS_PATH TARGET_HOST TARGET_PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

from flotilla.netns import enter_netns


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


async def serve(listener: socket.socket, host: str, port: int) -> None:
    async def forward(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, target_writer), pipe(target_reader, client_writer))

    server = await asyncio.start_server(forward, sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    listen_port, netns_path, host, port = argv
    listener = socket.create_server(("127.0.0.1", int(listen_port)))
    enter_netns(netns_path)  # the process is single-threaded here, so all of it moves
    asyncio.run(serve(listener, host, int(port)))


if __name__ == "__main__":
    main(sys.argv[1:])
