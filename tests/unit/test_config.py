"""fleetd's configuration: fleet.conf, FLEET_* variables and flags, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.config import Config, ConfigError, load_config, parse_duration, read_config_file


def test_defaults_match_fleet_where_fleet_has_the_option() -> None:
    config = load_config({}, {}, {})
    assert config == Config()
    assert config.agent_ttl == 10.0 and config.engine_reconcile_interval == 2.0
    assert config.units_directory == "/run/fleet/units/"


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "fleet.conf"
    path.write_text(
        '# comment\netcd_servers=["http://10.0.0.1:2379"]\nmetadata="region=eu,disk=ssd"\n'
        "agent_ttl=30s\npublic_ip=10.0.0.5\n"
    )
    config = load_config(
        read_config_file(path), {"FLEET_AGENT_TTL": "1m30s"}, {"public_ip": "10.0.0.9"}
    )
    assert config.etcd_servers == ("http://10.0.0.1:2379",)
    assert dict(config.metadata) == {"region": "eu", "disk": "ssd"}
    assert config.agent_ttl == 90.0
    assert config.public_ip == "10.0.0.9"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("agent_ttl=soon", "fleet.conf:1: agent_ttl: invalid duration 'soon'"),
        ("disable_engine=maybe", "disable_engine: invalid boolean 'maybe'"),
        ("metadata=region", "invalid metadata entry 'region'"),
        ("peer_port=70000", "invalid port"),
        ("colour=blue", "unknown option 'colour'"),
        ("agent_ttl=0.5s", "agent_ttl: must be at least 1s"),
        ("etcd_cafile=/nonexistent/ca.pem", "etcd_cafile: no such file '/nonexistent/ca.pem'"),
        ("etcd_certfile=/etc/hostname", "etcd_certfile and etcd_keyfile go together"),
        ("no equals sign", "expected key=value"),
        (
            "api_listen=10.0.0.1:4002",
            "a TCP API needs api_tls_cert, api_tls_key and api_tls_client_ca",
        ),
    ],
)
def test_bad_values_name_the_file_line_and_option(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "fleet.conf"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(read_config_file(path), {}, {})


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="FLEET_AGENT_TTL"):
        load_config({}, {"FLEET_AGENT_TTL": "-3s"}, {})


def test_durations() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2.5") == 2.5
    assert parse_duration("1h1m1s") == 3661.0
    with pytest.raises(ValueError):
        parse_duration("10 s")
