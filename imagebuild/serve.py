"""`imagebuild serve-update`: the update payload over HTTP, read-only, on loopback.

VMs on QEMU's user network reach it as 10.0.2.100:PORT through a guestfwd rule per port
(qemu/command.py's `host_services`; their network stays `restrict=on`). Plain HTTP is enough:
the payload is signed, and machines check the signature before they fetch anything big
(flotilla/update/fetch.py).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from flotilla.update.manifest import MANIFEST_NAME

from .tree import ImageError

DEFAULT_HOST = "127.0.0.1"


class PayloadHandler(SimpleHTTPRequestHandler):
    """GET and HEAD of the payload's files; no directory listings."""

    def list_directory(self, path: str) -> None:
        self.send_error(404, "no listings")


class QuietPayloadHandler(PayloadHandler):
    """The same, without a line on stderr per request (a server inside a test or benchmark)."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def make_server(
    directory: Path, port: int, host: str = DEFAULT_HOST, quiet: bool = False
) -> ThreadingHTTPServer:
    """A server for `directory` (not started); port 0 picks a free one (server.server_port)."""
    if not (directory / MANIFEST_NAME).is_file():
        raise ImageError(f"{directory} holds no update payload (no {MANIFEST_NAME}); build first")
    kind = QuietPayloadHandler if quiet else PayloadHandler
    handler = functools.partial(kind, directory=str(directory.resolve()))
    ThreadingHTTPServer.allow_reuse_address = True
    return ThreadingHTTPServer((host, port), handler)


@contextmanager
def serving(directory: Path, port: int = 0) -> Iterator[int]:
    """`directory` served on loopback from a thread while the block runs; yields the port."""
    server = make_server(directory, port, quiet=True)
    thread = threading.Thread(target=server.serve_forever, name="serve-update", daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
