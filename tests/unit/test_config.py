"""fleetd's configuration: fleet.conf, FLEET_* variables and flags, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.config import Config, ConfigError, load_config, parse_duration, read_config_file


def test_defaults_match_fleet_where_fleet_has_the_option() -> None:
    config, warnings = load_config({}, {}, {})
    assert config == Config() and warnings == []
    assert config.agent_ttl == 10.0 and config.engine_reconcile_interval == 2.0
    assert config.units_directory == "/run/fleet/units/"


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "fleet.conf"
    path.write_text(
        '# comment\netcd_servers=["http://10.0.0.1:2379"]\nmetadata="region=eu,disk=ssd"\n'
        "agent_ttl=30s\npublic_ip=10.0.0.5\n"
    )
    config, _ = load_config(
        read_config_file(path), {"FLEET_AGENT_TTL": "1m30s"}, {"public_ip": "10.0.0.9"}
    )
    assert config.etcd_servers == ("http://10.0.0.1:2379",)
    assert dict(config.metadata) == {"region": "eu", "disk": "ssd"}
    assert config.agent_ttl == 90.0
    assert config.public_ip == "10.0.0.9"


def test_an_empty_variable_counts_as_unset(tmp_path: Path) -> None:
    path = tmp_path / "fleet.conf"
    path.write_text("agent_ttl=30s\n")
    environ = {"FLEET_AGENT_TTL": "", "FLEET_PUBLIC_IP": ""}
    config, warnings = load_config(read_config_file(path), environ, {})
    assert (config.agent_ttl, config.public_ip, warnings) == (30.0, "", [])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("agent_ttl=soon", "fleet.conf:1: agent_ttl: invalid duration 'soon'"),
        ("disable_engine=maybe", "disable_engine: invalid boolean 'maybe'"),
        ("metadata=region", "invalid metadata entry 'region'"),
        ("peer_port=70000", "invalid port"),
        ("=blue", "expected key=value"),
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


@pytest.mark.parametrize(
    ("directory", "message"),
    [
        ("/etc/systemd/system", "is systemd's own unit directory /etc/systemd/system"),
        ("/etc/systemd/system/", "is systemd's own unit directory /etc/systemd/system"),
        ("/run/systemd/system", "is systemd's own unit directory /run/systemd/system"),
        ("/lib/systemd/system", "is systemd's own unit directory /lib/systemd/system"),
        ("/run/systemd/transient", "is systemd's own unit directory /run/systemd/transient"),
        ("/run/systemd/x/../system", "is systemd's own unit directory /run/systemd/system"),
        (
            "/etc/systemd/system/multi-user.target.wants",
            "is inside systemd's own unit directory /etc/systemd/system",
        ),
        ("/run", "contains systemd's own unit directory /run/systemd/system"),
        ("/", "contains systemd's own unit directory"),
        ("/usr/lib/systemd/system", "is under /usr, which is read-only on Flotilla machines"),
        ("/usr/local/fleet", "is under /usr, which is read-only on Flotilla machines"),
        ("run/fleet/units", "must be an absolute path"),
    ],
)
def test_units_directory_is_never_one_of_systemds_own(directory: str, message: str) -> None:
    """The agent unloads and deletes every unit file in units_directory the cluster did not
    assign: pointed at systemd's own directory it would wipe the machine's units."""
    with pytest.raises(ConfigError) as caught:
        load_config({"units_directory": (directory, "fleet.conf:3")}, {}, {})
    assert str(caught.value).startswith("fleet.conf:3: units_directory: ")
    assert message in str(caught.value)
    assert "/run/fleet/units/" in str(caught.value) or "absolute" in message  # what to do


def test_units_directory_reached_through_a_symbolic_link_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "units").symlink_to("/etc/systemd/system")
    with pytest.raises(ConfigError, match="systemd's own unit directory /etc/systemd/system"):
        load_config({}, {"FLEET_UNITS_DIRECTORY": str(tmp_path / "units")}, {})


@pytest.mark.parametrize("directory", ["/run/fleet/units/", "/var/lib/fleet/units", "/run/fleet"])
def test_a_directory_of_fleetds_own_is_fine(directory: str) -> None:
    config, _ = load_config({}, {}, {"units_directory": directory})
    assert config.units_directory == directory


@pytest.mark.parametrize("value", ["-oProxyCommand=sh", "10.0.0.300", "host.example", "10.0.0.1 x"])
def test_public_ip_must_be_an_ip_address(value: str) -> None:
    # fleetctl ssh/status/journal hand a machine's published address to ssh.
    with pytest.raises(ConfigError, match="public_ip"):
        load_config({}, {"FLEET_PUBLIC_IP": value}, {})


@pytest.mark.parametrize("value", ["10.77.0.11", "fd00::1", ""])
def test_public_ip_accepts_ipv4_ipv6_and_empty(value: str) -> None:
    config, _ = load_config({}, {}, {"public_ip": value})
    assert config.public_ip == value
