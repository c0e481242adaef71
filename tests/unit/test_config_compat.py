"""fleet.conf written for fleet keeps working: fleet's keys Flotilla ignores, unknown keys and
unknown FLEET_* variables are warnings (one per key, naming where), never errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.config import (
    COMPATIBILITY_KEYS,
    SETTINGS_BY_NAME,
    Config,
    ConfigError,
    default_text,
    load_config,
    read_config_file,
)

FLEETS_IGNORED_KEYS = [
    "token_limit",
    "disable_watches",
    "enable_grpc",
    "verify_units",
    "authorized_keys_file",
    "systemd_user",
]


def load_file(tmp_path: Path, text: str) -> tuple[Config, list[str], Path]:
    path = tmp_path / "fleet.conf"
    path.write_text(text)
    config, warnings = load_config(read_config_file(path), {}, {})
    return config, warnings, path


def test_the_compatibility_keys_are_fleets_keys_flotilla_does_not_act_on() -> None:
    assert [key.name for key in COMPATIBILITY_KEYS] == FLEETS_IGNORED_KEYS
    assert not set(FLEETS_IGNORED_KEYS) & set(SETTINGS_BY_NAME)


@pytest.mark.parametrize("name", FLEETS_IGNORED_KEYS)
def test_a_compatibility_key_in_the_file_is_one_warning(tmp_path: Path, name: str) -> None:
    config, warnings, path = load_file(tmp_path, f"agent_ttl=20s\n{name}=true\n")
    assert config == Config(agent_ttl=20.0)
    assert warnings == [
        f"{path}:2: {name} is accepted for compatibility with fleet and has no effect"
        f" ({next(k.help for k in COMPATIBILITY_KEYS if k.name == name)})"
    ]


@pytest.mark.parametrize("value", ["100", "lots", "", "-1", "[1, 2]", "maybe"])
def test_any_value_of_a_compatibility_key_is_accepted(tmp_path: Path, value: str) -> None:
    """fleet never refuses one (its loader drops a value it cannot parse), so neither do we."""
    _, warnings, _ = load_file(tmp_path, f"token_limit={value}\ndisable_watches={value}\n")
    assert len(warnings) == 2


def test_a_compatibility_key_set_in_several_places_is_still_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "fleet.conf"
    path.write_text("enable_grpc=true\nenable_grpc=false\n")
    environ = {"FLEET_ENABLE_GRPC": "true", "FLEET_SYSTEMD_USER": "true"}
    _, warnings = load_config(read_config_file(path), environ, {"systemd_user": "false"})
    assert len(warnings) == 2
    assert warnings[0].startswith("environment variable FLEET_ENABLE_GRPC: enable_grpc is ")
    assert warnings[1].startswith("flag --systemd_user: systemd_user is accepted")


def test_an_unknown_key_is_a_warning_naming_the_file_and_line(tmp_path: Path) -> None:
    config, warnings, path = load_file(tmp_path, "# fleet\n\ncolour=blue\npublic_ip=10.0.0.5\n")
    assert config.public_ip == "10.0.0.5"
    assert warnings == [f"{path}:3: unknown key 'colour', ignored"]


def test_an_unknown_key_close_to_a_setting_suggests_it(tmp_path: Path) -> None:
    config, warnings, path = load_file(tmp_path, "agent_tll=30s\n")
    assert config.agent_ttl == Config().agent_ttl  # the typo is not taken for agent_ttl
    assert warnings == [f"{path}:1: unknown key 'agent_tll', ignored; did you mean agent_ttl?"]


def test_unknown_fleet_variables_are_warnings_and_others_are_not_read() -> None:
    environ = {
        "FLEET_COLOUR": "blue",
        "FLEET_agent_ttl": "30s",  # fleet reads FLEET_<KEY> in upper case only
        "FLEETCTL_ENDPOINT": "unix:///var/run/fleet.sock",  # fleetctl's, not ours
        "PATH": "/usr/bin",
    }
    config, warnings = load_config({}, environ, {})
    assert config == Config()
    assert warnings == [
        "environment variable FLEET_COLOUR: no such key, ignored",
        "environment variable FLEET_agent_ttl: no such key, ignored; did you mean FLEET_AGENT_TTL?",
    ]


def test_an_unknown_flag_is_still_an_error() -> None:
    """argparse refuses unknown flags before this (as fleet's flag parsing does)."""
    with pytest.raises(ConfigError, match="flag --colour: unknown option 'colour'"):
        load_config({}, {}, {"colour": "blue"})


def test_a_bad_value_of_a_setting_is_still_an_error_next_to_warnings(tmp_path: Path) -> None:
    path = tmp_path / "fleet.conf"
    path.write_text("colour=blue\ntoken_limit=5\nagent_ttl=soon\n")
    with pytest.raises(ConfigError, match=f"{path}:3: agent_ttl: invalid duration"):
        load_config(read_config_file(path), {}, {})


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("agent_ttl", "10s"),
        ("etcd_request_timeout", "1s"),
        ("etcd_servers", "http://127.0.0.1:2379"),
        ("disable_engine", "false"),
        ("metadata", ""),
        ("peer_port", "7007"),
        ("units_directory", "/run/fleet/units/"),
    ],
)
def test_defaults_are_shown_as_one_would_write_them(name: str, text: str) -> None:
    setting = SETTINGS_BY_NAME[name]
    assert default_text(setting) == text
    if text:  # and they load back to the default
        config, _ = load_config({name: (text, "fleet.conf:1")}, {}, {})
        assert getattr(config, name) == getattr(Config(), name)
