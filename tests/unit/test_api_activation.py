"""systemd socket activation (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES) and the TCP listener rule."""

from __future__ import annotations

import pytest

from fleetd.activation import (
    ActivationError,
    PassedSocket,
    TcpPolicy,
    insecure_warning,
    passed_sockets,
    refusal_message,
    tcp_policy,
)
from fleetd.config import ConfigError, load_config

PID = 4242


def test_sockets_passed_to_this_process_start_at_fd_3_with_their_names() -> None:
    environ = {"LISTEN_PID": str(PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "fleet.socket:tcp"}
    assert passed_sockets(environ, PID) == [
        PassedSocket(3, "fleet.socket"),
        PassedSocket(4, "tcp"),
    ]


def test_without_names_every_socket_is_unknown() -> None:
    environ = {"LISTEN_PID": str(PID), "LISTEN_FDS": "2"}
    assert [s.name for s in passed_sockets(environ, PID)] == ["unknown", "unknown"]


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"LISTEN_FDS": "1"},  # no LISTEN_PID: not from systemd
        {"LISTEN_PID": str(PID + 1), "LISTEN_FDS": "1"},  # inherited from a parent
        {"LISTEN_PID": str(PID), "LISTEN_FDS": "0"},
    ],
)
def test_sockets_meant_for_no_one_or_another_process_are_not_taken(
    environ: dict[str, str],
) -> None:
    assert passed_sockets(environ, PID) == []


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LISTEN_PID": "me", "LISTEN_FDS": "1"}, "LISTEN_PID='me'"),
        ({"LISTEN_PID": str(PID), "LISTEN_FDS": "-1"}, "LISTEN_FDS='-1'"),
        ({"LISTEN_PID": str(PID), "LISTEN_FDS": "two"}, "LISTEN_FDS='two'"),
        (
            {"LISTEN_PID": str(PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "one"},
            "LISTEN_FDNAMES names 1 sockets but LISTEN_FDS passes 2",
        ),
    ],
)
def test_malformed_variables_are_an_error_naming_the_variable(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ActivationError, match=message):
        passed_sockets(environ, PID)


@pytest.mark.parametrize(
    ("tls", "insecure", "policy"),
    [
        (True, False, TcpPolicy.TLS),
        (True, True, TcpPolicy.TLS),  # TLS, when configured, always wins
        (False, True, TcpPolicy.PLAIN),
        (False, False, TcpPolicy.REFUSED),
    ],
)
def test_tcp_without_tls_is_refused_unless_the_risk_is_accepted(
    tls: bool, insecure: bool, policy: TcpPolicy
) -> None:
    assert tcp_policy(tls, insecure) is policy


def test_the_refusal_and_the_warning_name_the_listener_and_the_option() -> None:
    assert "tcp:10.0.0.1:4002" in refusal_message("tcp:10.0.0.1:4002")
    assert "api_insecure_tcp=true" in refusal_message("tcp:10.0.0.1:4002")
    assert "api_tls_cert" in refusal_message("tcp:10.0.0.1:4002")
    assert insecure_warning("tcp:10.0.0.1:4002").startswith("SECURITY WARNING")


def test_api_listen_without_tls_needs_the_insecure_option() -> None:
    with pytest.raises(ConfigError, match="api_insecure_tcp=true"):
        load_config({}, {}, {"api_listen": "127.0.0.1:4002"})
    config, _ = load_config({}, {}, {"api_listen": "127.0.0.1:4002", "api_insecure_tcp": "true"})
    assert config.api_insecure_tcp
    with pytest.raises(ConfigError, match="api_listen"):  # half a TLS setup is no consent
        load_config(
            {}, {}, {"api_listen": "127.0.0.1:4002", "api_insecure_tcp": "1", "api_tls_cert": "c"}
        )
