"""/etc/flotilla/update.conf: KEY=VALUE with defaults, every mistake named by file and line."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flotilla.update.config import ConfigError, UpdateConfig, parse_config
from flotilla.update.window import window


def test_defaults_and_values() -> None:
    assert parse_config("") == UpdateConfig(server=None, reboot_strategy="reboot", boot_tries=3)
    text = '# comment\n\nSERVER="http://10.0.2.2:8470/"\nREBOOT_STRATEGY=off\nBOOT_TRIES=1\n'
    assert parse_config(text) == UpdateConfig("http://10.0.2.2:8470/", "off", 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SERVER=ftp://x", "update.conf:1: SERVER must be an http"),
        ("\nREBOOT_STRATEGY=etcd", "update.conf:2: REBOOT_STRATEGY 'etcd' is not one of"),
        ("BOOT_TRIES=0", "BOOT_TRIES must be a number from 1 to 9"),
        ("GROUP=stable", "unknown key 'GROUP'"),
        ("SERVER", "expected KEY=VALUE"),
    ],
)
def test_mistakes_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, "/etc/flotilla/update.conf")


def test_etcd_lock_keys() -> None:
    text = (
        "REBOOT_STRATEGY=etcd-lock\n"
        "ETCD_ENDPOINTS=http://10.0.0.11:2379, http://10.0.0.12:2379\n"
        "REBOOT_LOCK_TTL=5m\n"
        'REBOOT_WINDOW_START="Thu 04:00"\n'
        "REBOOT_WINDOW_LENGTH=1h30m\n"
    )
    config = parse_config(text)
    assert config.reboot_strategy == "etcd-lock"
    assert config.etcd_endpoints == ("http://10.0.0.11:2379", "http://10.0.0.12:2379")
    assert config.reboot_lock_ttl == timedelta(minutes=5)
    assert config.reboot_window == window("Thu 04:00", "1h30m")
    assert parse_config("").reboot_lock_ttl == timedelta(minutes=10)
    assert parse_config("").reboot_window is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ETCD_ENDPOINTS=", "update.conf:1: ETCD_ENDPOINTS must be etcd client URLs"),
        ("ETCD_ENDPOINTS=ftp://x:1", "ETCD_ENDPOINTS must be etcd client URLs.*'ftp://x:1'"),
        ("ETCD_ENDPOINTS=http://a:1,https://b:1", "mixes http:// and https://"),
        ("\nREBOOT_LOCK_TTL=5", "update.conf:2: REBOOT_LOCK_TTL: expected a duration"),
        ("REBOOT_LOCK_TTL=5s", "REBOOT_LOCK_TTL must be from 10s to 24h"),
        ("REBOOT_WINDOW_START=Thu 04:00", "update.conf:1: REBOOT_WINDOW_START needs REBOOT_WIN"),
        ("\n\nREBOOT_WINDOW_LENGTH=1h", "update.conf:3: REBOOT_WINDOW_LENGTH needs REBOOT_WIN"),
        ("REBOOT_WINDOW_START=Xyz 04:00\nREBOOT_WINDOW_LENGTH=1h", "update.conf:1: REBOOT_WIN"),
        ("REBOOT_WINDOW_START=04:00\nREBOOT_WINDOW_LENGTH=1d", "update.conf:2: REBOOT_WINDOW_L"),
        ("REBOOT_STRATEGY=locksmith", "REBOOT_STRATEGY 'locksmith' is not one of etcd-lock"),
    ],
)
def test_etcd_lock_mistakes_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, "/etc/flotilla/update.conf")


def test_every_strategy_the_config_accepts_has_its_reboot() -> None:
    from flotilla.update.config import REBOOT_STRATEGIES
    from flotilla.update.reboot import STRATEGIES

    assert set(STRATEGIES) == set(REBOOT_STRATEGIES)
