"""systemd socket activation and which API listeners fleetd may serve, as pure decisions.

systemd passes the sockets of a unit like fleet.socket to the service it starts as file
descriptors 3, 4, ... and says so in LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES (sd_listen_fds(3)).
The descriptors are opened in listeners.py; what the environment means is decided here.

A TCP listener serves the API to anyone who can reach the port, and the API can start any
command on every machine: without TLS and client certificates it is refused, unless the
operator said `api_insecure_tcp=true` (fleet served such sockets in plain HTTP).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

FIRST_PASSED_FD = 3  # SD_LISTEN_FDS_START
INSECURE_OPTION = "api_insecure_tcp"


class ActivationError(ValueError):
    """The socket-activation variables are malformed (systemd never sets them so)."""


@dataclass(frozen=True)
class PassedSocket:
    fd: int
    name: str  # FileDescriptorName= of the socket unit, or its unit name; "unknown" without


def passed_sockets(environ: Mapping[str, str], pid: int) -> list[PassedSocket]:
    """The sockets systemd passed to process `pid`: none without LISTEN_FDS, or when LISTEN_PID
    names another process (the variables were inherited from a parent that took them)."""
    pid_text, count_text = environ.get("LISTEN_PID"), environ.get("LISTEN_FDS")
    if pid_text is None or count_text is None:
        return []
    if parse_count("LISTEN_PID", pid_text) != pid:
        return []
    count = parse_count("LISTEN_FDS", count_text)
    names_text = environ.get("LISTEN_FDNAMES", "")
    names = names_text.split(":") if names_text else ["unknown"] * count
    if len(names) != count:
        raise ActivationError(
            f"LISTEN_FDNAMES names {len(names)} sockets but LISTEN_FDS passes {count}"
        )
    return [PassedSocket(FIRST_PASSED_FD + index, name) for index, name in enumerate(names)]


def parse_count(variable: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ActivationError(f"{variable}={text!r}: expected a non-negative number")
    return int(text)


class TcpPolicy(enum.Enum):
    TLS = "served over TLS, client certificates required"
    PLAIN = f"served in plain HTTP ({INSECURE_OPTION}=true)"
    REFUSED = "refused"


def tcp_policy(tls_configured: bool, insecure_accepted: bool) -> TcpPolicy:
    """How a TCP API listener is served: TLS whenever it is configured; plain HTTP only when the
    operator accepted the risk; else every request on it is refused."""
    if tls_configured:
        return TcpPolicy.TLS
    return TcpPolicy.PLAIN if insecure_accepted else TcpPolicy.REFUSED


def refusal_message(where: str) -> str:
    """What a client of a refused TCP listener is told, and the log says, naming the way out."""
    return (
        f"fleetd refuses the API on {where}: plain TCP would let anyone who reaches it run"
        " commands on every machine; set api_tls_cert, api_tls_key and api_tls_client_ca,"
        f" or accept the risk with {INSECURE_OPTION}=true in fleet.conf"
    )


def insecure_warning(where: str) -> str:
    return (
        f"SECURITY WARNING: the fleet API is served WITHOUT TLS on {where} "
        f"({INSECURE_OPTION}=true): anyone who can reach it can run any command on every"
        " machine of the cluster"
    )
