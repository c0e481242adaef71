"""`fleetctl dashboard`: a read-only web page of the cluster on 127.0.0.1, served through the
same driver (and --tunnel) as every other command. The server lives in dashboard_server.py and
is imported only when the command runs (aiohttp is heavy to import)."""

from __future__ import annotations

import errno
import socket

import click

from .driver import Driver
from .session import Failure, run

HOST = "127.0.0.1"  # never another address: the page shows the whole cluster to whoever reaches it


def listen(port: int) -> socket.socket:
    """The page's socket, bound before the cluster is reached, so a port in use fails at once."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((HOST, port))
        listener.listen(128)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise Failure(
                f"cannot serve the dashboard: port {port} on {HOST} is in use"
                " (choose another with --port, or 0 for any free port)"
            ) from error
        raise Failure(f"cannot serve the dashboard on {HOST}:{port}: {error.strerror}") from error
    return listener


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port on 127.0.0.1 to serve the page on (0: any free port).",
)
@click.pass_context
def dashboard(ctx: click.Context, port: int) -> None:
    """Serve a read-only web page of the cluster on 127.0.0.1 and print its URL."""
    from .dashboard_server import serve

    listener = listen(port)
    url = f"http://{HOST}:{listener.getsockname()[1]}/"

    async def action(driver: Driver) -> None:
        await serve(driver, listener, f"fleetctl dashboard: {url} (Ctrl-C stops it)")

    with listener:
        run(ctx, action)
