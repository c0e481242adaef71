"""sd_notify and the journal's native protocol, against real Unix sockets standing in for
systemd's (the lab's fleetd tests then check the journal fields under real journald)."""

from __future__ import annotations

import array
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla import systemd_service as service


def parse_entry(data: bytes) -> dict[str, bytes]:
    """The native protocol read back: NAME=value lines, or NAME, 64-bit length, bytes."""
    fields: dict[str, bytes] = {}
    while data:
        line_end = data.index(b"\n")
        line = data[:line_end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            data = data[line_end + 1 :]
        else:
            name = line
            (length,) = struct.unpack("<Q", data[line_end + 1 : line_end + 9])
            value = data[line_end + 9 : line_end + 9 + length]
            assert data[line_end + 9 + length : line_end + 10 + length] == b"\n"
            data = data[line_end + 10 + length :]
        fields[name.decode()] = value
    return fields


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "journal.socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        yield sock, path


def receive(sock: socket.socket) -> tuple[dict[str, bytes], int | None]:
    """One entry, sent inline or as a memfd (journald takes both), and the memfd's seals."""
    fd_size = array.array("i").itemsize
    data, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(fd_size))
    seals = None
    if ancillary:
        (level, kind, payload) = ancillary[0]
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        fd = array.array("i", payload[:fd_size])[0]
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        with open(fd, "rb") as memfd:
            memfd.seek(0)  # the offset is shared with the sender's, which wrote the entry
            data = memfd.read()
    return parse_entry(data), seals


def receive_entry(sock: socket.socket) -> dict[str, bytes]:
    entry, seals = receive(sock)
    assert seals is None
    return entry


def test_notify_sends_the_state_to_notify_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        assert service.notify("READY=1", {"NOTIFY_SOCKET": path})
        assert sock.recv(100) == b"READY=1"


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"flotilla-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert service.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"WATCHDOG=1"


def test_notify_outside_systemd_or_to_nobody_is_false_not_an_error(tmp_path: Path) -> None:
    assert service.notify("READY=1", {}) is False
    assert service.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_a_log_line_carries_its_fields_and_the_handlers(
    journal: tuple[socket.socket, str],
) -> None:
    sock, path = journal
    handler = service.JournalHandler(
        socket_path=path, SYSLOG_IDENTIFIER="fleetd", FLEET_MACHINE="ab"
    )
    logger = logging.getLogger("test.journal")
    logger.addHandler(handler)
    try:
        fields = {"OBJECT_SYSTEMD_UNIT": "web.service", "lowercase": "dropped"}
        logger.warning("starting %s", "web.service", extra=fields)
    finally:
        logger.removeHandler(handler)
        handler.close()
    entry = receive_entry(sock)
    assert entry["MESSAGE"] == b"starting web.service"
    assert entry["PRIORITY"] == b"4"
    assert entry["SYSLOG_IDENTIFIER"] == b"fleetd"
    assert entry["FLEET_MACHINE"] == b"ab"
    assert entry["OBJECT_SYSTEMD_UNIT"] == b"web.service"
    assert entry["LOGGER"] == b"test.journal"
    assert entry["CODE_FUNC"] == b"test_a_log_line_carries_its_fields_and_the_handlers"
    assert "lowercase" not in entry and "msg" not in entry


def test_a_multi_line_message_is_length_prefixed(journal: tuple[socket.socket, str]) -> None:
    sock, path = journal
    handler = service.JournalHandler(socket_path=path)
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = __import__("sys").exc_info()
        handler.emit(record)
    handler.close()
    entry = receive_entry(sock)
    assert entry["MESSAGE"].startswith(b"failed\nTraceback")
    assert b"ValueError: boom" in entry["MESSAGE"]
    assert entry["PRIORITY"] == b"3"


def test_an_entry_too_big_for_a_datagram_goes_in_a_sealed_memfd(
    journal: tuple[socket.socket, str],
) -> None:
    sock, path = journal
    handler = service.JournalHandler(socket_path=path)
    handler.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    message = "x" * 100_000
    handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, message, (), None))
    handler.close()
    entry, seals = receive(sock)
    assert seals is not None and seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK
    assert entry["MESSAGE"] == message.encode()
    assert entry["PRIORITY"] == b"6"


@pytest.mark.parametrize(
    ("level", "priority"),
    [(logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6),
     (logging.DEBUG, 7), (25, 6)],
)  # fmt: skip
def test_levels_become_syslog_priorities(level: int, priority: int) -> None:
    assert service.priority(level) == priority
