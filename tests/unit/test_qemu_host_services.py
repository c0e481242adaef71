"""A VM on a restrict=on network reaches chosen ports of the host's loopback as 10.0.2.100 (an
update server), through one guestfwd rule per port, and nothing else."""

from __future__ import annotations

import base64
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

from qemu.command import BRIDGE_CODE, VmConfig, network_args


def test_each_host_service_is_one_guestfwd_rule_and_restrict_stays() -> None:
    netdev = network_args(VmConfig(image=Path("x"), host_services=(8470, 8471)))[1]
    assert ",restrict=on," in netdev
    rules = re.findall(r",guestfwd=tcp:10\.0\.2\.100:(\d+)-cmd:", netdev)
    assert rules == ["8470", "8471"]
    assert "guestfwd" not in network_args(VmConfig(image=Path("x")))[1]


def test_the_guestfwd_command_joins_its_stdio_to_the_host_port() -> None:
    """The bridge QEMU would run per connection, run here on a real socket pair."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        connection, _ = listener.accept()
        with connection:
            request = connection.recv(100)
            connection.sendall(b"echo:" + request)

    thread = threading.Thread(target=answer)
    thread.start()
    code = base64.b64decode(BRIDGE_CODE).decode()
    bridge = subprocess.run([sys.executable, "-c", code, str(port)], input=b"ping",
                            capture_output=True, timeout=10)  # fmt: skip
    thread.join(timeout=10)
    listener.close()
    assert bridge.stdout == b"echo:ping"
