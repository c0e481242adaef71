"""A killed VM counts as gone only when none of its threads runs: a thread-group leader that
exited first is a zombie while another thread still holds the process's sockets open."""

from __future__ import annotations

import socket
import subprocess
import sys

from qemu.cluster import is_alive, wait_gone

# The main thread exits on its own (pthread_exit) while a second thread keeps the listener.
LEADER_EXITS_FIRST = r"""
import ctypes, socket, sys, threading, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
threading.Thread(target=lambda: time.sleep(60)).start()
print(listener.getsockname()[1], flush=True)
ctypes.CDLL(None).pthread_exit(None)
"""


def test_a_process_whose_leader_is_a_zombie_but_whose_thread_runs_is_alive() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", LEADER_EXITS_FIRST], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(process.stdout.readline())  # type: ignore[union-attr]
        assert wait_gone(process.pid, 2) is False
        assert is_alive(process.pid)
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # its socket is open
    finally:
        process.kill()
        process.wait()
    assert not is_alive(process.pid)


def test_a_reaped_process_is_gone() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert wait_gone(process.pid, 1)
