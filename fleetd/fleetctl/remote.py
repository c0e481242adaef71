"""fleetctl's reach into other machines, all through OpenSSH (which does the host-key checks):
commands on a unit's machine (status, journal, ssh) and `--tunnel` to a cluster's API or etcd.

A machine's address comes from its record in etcd, which anyone who can write to etcd controls;
it reaches an ssh argv only once it parsed as an IP address (`machine_address`), and every argv
ends its options with `--` before the destination, so that no value can be read as an option
(OpenSSH also parses options after the destination unless `--` came first).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import selectors
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .known_hosts import HostKeyError, confirm_host

LOCAL_MACHINE_ID = Path("/etc/machine-id")
log = logging.getLogger("fleetctl")


class TunnelError(Exception):
    """The SSH tunnel could not be set up."""


class AddressError(ValueError):
    """A machine's recorded address is not an IP address; the message names the machine."""


def machine_address(machine_id: str, ip: str) -> str:
    """The IP address a machine record gives, checked; AddressError for anything else."""
    if not ip:
        raise AddressError("Could not determine address of machine.")  # fleet's words
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError as error:
        raise AddressError(
            f"Machine {machine_id} has no valid IP address in etcd ({ip!r});"
            " refusing to pass it to ssh."
        ) from error


@dataclass(frozen=True)
class SshOptions:
    username: str = "core"
    port: int = 22
    strict_host_key_checking: bool = True
    known_hosts_file: str = "~/.fleetctl/known_hosts"
    timeout: float = 10.0


def local_machine_id() -> str:
    try:
        return LOCAL_MACHINE_ID.read_text().strip()
    except OSError:
        return ""


def checking_options(options: SshOptions) -> list[str]:
    """Strict checking is OpenSSH's `yes` against fleetctl's known-hosts file (and the system's):
    `confirm` asked about an unknown host before, on stdin as fleet does, and remembered its key
    there. Otherwise nothing is checked."""
    if options.strict_host_key_checking:
        known_hosts = Path(options.known_hosts_file).expanduser()
        return ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}"]
    return [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]


def confirm(host: str, options: SshOptions) -> None:
    """With strict checking: return once the host's key is known or accepted (asked on stdin);
    HostKeyError (a changed key, a no, no SSH server) before any real connection."""
    if options.strict_host_key_checking:
        name, port = split_host(host, options.port)
        confirm_host(name, port, options.known_hosts_file, options.timeout)


def split_host(host: str, default_port: int) -> tuple[str, int]:
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    return (name, int(port)) if port else (host, default_port)


def ssh_base(host: str, options: SshOptions, extra: Sequence[str] = ()) -> list[str]:
    name, port = split_host(host, options.port)
    return [
        "ssh",
        *checking_options(options),
        "-o",
        f"ConnectTimeout={int(options.timeout)}",
        *extra,
        "-p",
        str(port),
        "-l",
        options.username,
        "--",
        name,
    ]


def ssh_argv(
    host: str,
    command: Sequence[str],
    options: SshOptions,
    tty: bool = False,
    forward_agent: bool = False,
) -> list[str]:
    extra = [*(["-t"] if tty else []), *(["-A"] if forward_agent else [])]
    # Like fleet (and ssh itself), the words of the command are joined for the remote shell.
    return [*ssh_base(host, options, extra), *command]


def run_on(machine_id: str, ip: str, command: Sequence[str], options: SshOptions) -> int:
    """Run command on that machine with this terminal; its exit status. Over ssh the command's
    words are quoted for the remote shell (they are ours: a unit name, journalctl's options)."""
    if machine_id == local_machine_id():
        argv = list(command)
    else:
        remote = [shlex.join(command)]
        argv = ssh_argv(machine_address(machine_id, ip), remote, options)
    return subprocess.run(argv, check=False).returncode


@contextmanager
def tunnel(host: str, endpoint: str, options: SshOptions) -> Iterator[str]:
    """An SSH local forward to `endpoint` as seen from `host`; yields the local endpoint.

    A unix:// API socket is forwarded to a local unix socket, an http:// address (etcd, or a
    TCP API) to a local TCP port on loopback. When the host's sshd forbids forwarding unix
    sockets (AllowStreamLocalForwarding no), each connection is carried instead by fleet's own
    `fleetctl fd-forward` run on the host, over the same SSH connection."""
    try:
        confirm(host, options)
    except HostKeyError as error:
        raise TunnelError(str(error)) from error
    parts = urlsplit(endpoint)
    with tempfile.TemporaryDirectory(prefix="fleetctl-tunnel-") as directory:
        control = os.path.join(directory, "ssh")  # the connection's control socket: sessions
        if parts.scheme == "unix":  # over it need no new handshake
            local = os.path.join(directory, "fleet.sock")
            forward, local_endpoint, ready = f"{local}:{parts.path}", f"unix://{local}", local
        else:
            port = free_port()
            forward = f"127.0.0.1:{port}:{parts.hostname}:{parts.port or 80}"
            local_endpoint, ready = f"{parts.scheme}://127.0.0.1:{port}", ""
        master = ["-M", "-S", control, "-N", "-o", "ExitOnForwardFailure=yes", "-L", forward]
        process = subprocess.Popen(
            ssh_base(host, options, master),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_forward(process, ready, port_of(local_endpoint), options.timeout)
            if ready and not answers_http(ready, options.timeout):
                log.debug("tunnel: %s does not forward unix sockets; using fd-forward", host)
                relay = os.path.join(directory, "relay.sock")
                session = ssh_base(host, options, ["-S", control, "-o", "ControlMaster=no", "-T"])
                command = [*session, shlex.join(["fleetctl", "fd-forward", parts.path])]
                with relayed_connections(relay, command, directory):
                    yield f"unix://{relay}"
            else:
                yield local_endpoint
        finally:
            process.terminate()
            process.wait()


def answers_http(socket_path: str, timeout: float) -> bool:
    """Whether a request through the forwarded socket gets any answer: sshd closes a forward it
    refuses at once, without a byte."""
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(socket_path)
            probe.sendall(b"GET /fleet/v1/discovery HTTP/1.0\r\nHost: fleet\r\n\r\n")
            return bool(probe.recv(1))
        except OSError:
            return False


@contextmanager
def relayed_connections(path: str, command: Sequence[str], directory: str) -> Iterator[None]:
    """A unix socket at `path` whose every connection becomes the stdin and stdout of its own
    run of `command` (fleet's fd-forward over an SSH session); all of them end on exit."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    children: list[subprocess.Popen[bytes]] = []
    errors = open(os.path.join(directory, "fd-forward.log"), "ab")  # noqa: SIM115

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # the listener was closed: the tunnel is done
                return
            with connection:
                children.append(
                    subprocess.Popen(command, stdin=connection, stdout=connection, stderr=errors)
                )

    acceptor = threading.Thread(target=accept, name="fd-forward relay", daemon=True)
    acceptor.start()
    try:
        yield
    finally:
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        listener.close()
        acceptor.join(timeout=5)
        for child in children:
            child.terminate()
            child.wait()
        errors.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_of(endpoint: str) -> int | None:
    return urlsplit(endpoint).port


def wait_for_forward(
    process: subprocess.Popen[str], socket_path: str, port: int | None, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TunnelError(
                f"ssh tunnel failed: {(process.stderr.read() if process.stderr else '').strip()}"
            )
        try:
            if socket_path:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(socket_path)
            else:
                socket.create_connection(("127.0.0.1", port or 0), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TunnelError(f"ssh tunnel not up after {timeout:.0f}s")


def forward_stdio(socket_path: str) -> int:
    """Copy stdin to a unix socket and the socket to stdout until both ends close."""
    with socket.socket(socket.AF_UNIX) as connection:
        try:
            connection.connect(socket_path)
        except OSError as error:
            print(f"unable to connect to {socket_path}: {error.strerror}", file=sys.stderr)
            return 1
        selector = selectors.DefaultSelector()
        selector.register(sys.stdin.buffer, selectors.EVENT_READ)
        selector.register(connection, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select():
                if key.fileobj is connection:
                    data = connection.recv(65536)
                    if not data:
                        return 0
                    sys.stdout.buffer.write(data)
                    sys.stdout.buffer.flush()
                else:
                    data = os.read(sys.stdin.fileno(), 65536)
                    if not data:  # keep the socket open for the answer (HTTP servers close
                        selector.unregister(sys.stdin.buffer)  # a half-closed connection)
                    else:
                        connection.sendall(data)
    return 0
