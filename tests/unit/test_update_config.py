"""/etc/flotilla/update.conf: KEY=VALUE with defaults, every mistake named by file and line."""

from __future__ import annotations

import pytest

from flotilla.update.config import ConfigError, UpdateConfig, parse_config


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
