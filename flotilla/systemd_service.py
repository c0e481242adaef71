"""A service's two messages to systemd, in the standard library only: readiness and watchdog
through sd_notify, and log lines with fields through the journal's native protocol.

fleetd and fleetd-backstop used systemd-python for these, which Debian ships but pip must
compile (libsystemd-dev, pkg-config, a C compiler), so a venv could not run them under systemd.
Both protocols are one datagram on a Unix socket (systemd's sd_notify(3) and
systemd.journal-fields(7) / the journal's "native protocol" document them).
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import re
import socket
import struct
from collections.abc import Mapping

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# A field name journald keeps: upper case, digits, underscore, not starting with "_" (those are
# trusted fields journald sets itself). Others are dropped by journald; we drop them first.
FIELD_NAME = re.compile(r"[A-Z0-9][A-Z0-9_]{0,63}")
# Python's levels as syslog priorities (journalctl -p).
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
DEBUG_PRIORITY = 7
MEMFD_SEALS = ("F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE", "F_SEAL_SEAL")


def notify_address(environ: Mapping[str, str]) -> str | None:
    """$NOTIFY_SOCKET as a socket address (a leading "@" is the abstract namespace)."""
    value = environ.get("NOTIFY_SOCKET", "")
    if not value:
        return None
    return "\0" + value[1:] if value.startswith("@") else value


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """sd_notify: tell systemd `state` ("READY=1", "WATCHDOG=1", ...). False when not run by
    systemd as a notify service or when the message could not be sent; never raises, since a
    lost notification must not stop the service."""
    address = notify_address(environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True


def encode_field(name: str, value: str | bytes) -> bytes:
    """One field in the native protocol: NAME=value, or for a value with a newline NAME, its
    length as 64-bit little endian, then the bytes."""
    data = value if isinstance(value, bytes) else value.encode("utf-8", "replace")
    if b"\n" not in data:
        return name.encode() + b"=" + data + b"\n"
    return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"


def encode_entry(fields: Mapping[str, object]) -> bytes:
    """A journal entry; fields journald would drop (bad names, None) are left out."""
    return b"".join(
        encode_field(name, value if isinstance(value, bytes) else str(value))
        for name, value in fields.items()
        if value is not None and FIELD_NAME.fullmatch(name)
    )


def priority(level: int) -> int:
    return next((p for threshold, p in PRIORITIES if level >= threshold), DEBUG_PRIORITY)


def record_fields(record: logging.LogRecord, message: str) -> dict[str, object]:
    """The entry for one log record: the message, where it came from, and any `extra=` fields
    whose names are journal field names (OBJECT_SYSTEMD_UNIT puts a line in `journalctl -u`)."""
    fields: dict[str, object] = {
        "MESSAGE": message,
        "PRIORITY": priority(record.levelno),
        "LOGGER": record.name,
        "THREAD_NAME": record.threadName,
        "CODE_FILE": record.pathname,
        "CODE_LINE": record.lineno,
        "CODE_FUNC": record.funcName,
    }
    fields.update({k: v for k, v in vars(record).items() if FIELD_NAME.fullmatch(k)})
    return fields


class JournalHandler(logging.Handler):
    """A logging handler writing to the journal with fields; keyword arguments are fields added
    to every entry (SYSLOG_IDENTIFIER="fleetd", ...), as systemd-python's handler takes them."""

    def __init__(self, level: int = logging.NOTSET, *, socket_path: str = JOURNAL_SOCKET,
                 **fields: str) -> None:  # fmt: skip
        super().__init__(level)
        self.fields = fields
        self.socket_path = socket_path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = encode_entry({**self.fields, **record_fields(record, self.format(record))})
            self.send(entry)
        except Exception:
            self.handleError(record)

    def send(self, entry: bytes) -> None:
        try:
            self.sock.sendto(entry, self.socket_path)
        except OSError as error:
            if error.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self.send_large(entry)

    def send_large(self, entry: bytes) -> None:
        """An entry too big for one datagram goes in a sealed memfd whose descriptor is sent
        (journald accepts a memfd only once it can no longer change)."""
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            with open(fd, "wb", closefd=False) as memfd:
                memfd.write(entry)
            seals = 0
            for name in MEMFD_SEALS:
                seals |= getattr(fcntl, name)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            self.sock.sendmsg([], rights, 0, self.socket_path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()
        super().close()
