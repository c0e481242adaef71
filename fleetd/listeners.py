"""The API's listening sockets: the ones systemd passed (fleet.socket and its drop-ins), else a
unix socket fleetd makes itself, for members of the `fleet` group as on CoreOS.

They are taken once per process and kept across SIGHUP reloads (fleet kept its listeners too):
each reload serves duplicates of them, so closing one server never closes the sockets.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

from .activation import ActivationError, passed_sockets

log = logging.getLogger(__name__)
FLEET_GROUP = "fleet"  # may use the API socket without root (fleetctl without sudo)
ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


@dataclass(frozen=True)
class Listener:
    sock: socket.socket
    where: str  # for logs and errors: unix:/run/fleet.sock, tcp:10.0.0.1:4002

    @property
    def is_tcp(self) -> bool:
        return self.sock.family in (socket.AF_INET, socket.AF_INET6)

    def duplicate(self) -> socket.socket:
        """A copy for one server, which closes it when it stops; this one stays open."""
        return self.sock.dup()


def take_passed_listeners(environ: MutableMapping[str, str] = os.environ) -> list[Listener]:
    """The sockets systemd passed to fleetd; the variables are removed, so no process fleetd
    starts mistakes them for its own (as sd_listen_fds(1) does)."""
    try:
        passed = passed_sockets(environ, os.getpid())
    finally:
        for name in ACTIVATION_VARIABLES:
            environ.pop(name, None)
    listeners = []
    for entry in passed:
        try:
            sock = socket.socket(fileno=entry.fd)
        except OSError as error:
            raise ActivationError(
                f"systemd passed file descriptor {entry.fd} ({entry.name}), which is not a"
                f" socket: {error.strerror}"
            ) from error
        sock.set_inheritable(False)
        if sock.type != socket.SOCK_STREAM:
            raise ActivationError(
                f"systemd passed {describe(sock)} ({entry.name}), which is not a stream"
                " socket: the API needs ListenStream="
            )
        listeners.append(Listener(sock, describe(sock)))
    return listeners


def describe(sock: socket.socket) -> str:
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        name = address.decode(errors="replace") if isinstance(address, bytes) else address
        return f"unix:{name or '(unnamed)'}"
    if sock.family == socket.AF_INET6:
        return f"tcp:[{address[0]}]:{address[1]}"
    if sock.family == socket.AF_INET:
        return f"tcp:{address[0]}:{address[1]}"
    return f"socket family {sock.family}"


def unix_listener(path: Path) -> Listener:
    """fleetd's own API socket (without fleet.socket): root and the `fleet` group may use it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o117)  # created 0660: no moment where others can connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    group = fleet_group()
    if group is not None:
        os.chown(path, -1, group)
    else:
        log.info("no %s group on this machine: only root can use %s", FLEET_GROUP, path)
    sock.listen(128)
    return Listener(sock, f"unix:{path}")


def fleet_group() -> int | None:
    with contextlib.suppress(KeyError):
        return grp.getgrnam(FLEET_GROUP).gr_gid
    return None
