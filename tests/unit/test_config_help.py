"""`fleetd --help` lists every setting and says which keys are accepted for compatibility only;
the compatibility keys are accepted as flags too, with their warning."""

from __future__ import annotations

import os
import re

import pytest

from fleetd.config import COMPATIBILITY_KEYS, SETTINGS
from fleetd.daemon import parse_args, read_config


def help_text(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_setting_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys)
    settings = text[text.index("\nsettings:") : text.index("\naccepted for compatibility")]
    for setting in SETTINGS:
        assert f"--{setting.name} VALUE" in settings
    assert "FLEET_<KEY>" in settings and "KEY=VALUE" in settings
    assert re.search(r"--agent_ttl VALUE\s+lease TTL.*\[default: 10s\]", settings, re.S)


def test_help_says_which_keys_are_accepted_for_compatibility_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_text(capsys)
    compatibility = text[text.index("\naccepted for compatibility with fleet only:") :]
    for key in COMPATIBILITY_KEYS:
        assert re.search(rf"--{key.name} VALUE\s+no effect: ", compatibility)
    assert all(f"--{setting.name} " not in compatibility for setting in SETTINGS)


def test_a_compatibility_flag_is_accepted_with_its_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [name for name in os.environ if name.startswith("FLEET_")]:
        monkeypatch.delenv(variable)
    args = parse_args(["--config", "/dev/null", "--token_limit", "50", "--agent_ttl", "20s"])
    config, warnings = read_config(args)
    assert config.agent_ttl == 20.0
    assert warnings == [
        "flag --token_limit: token_limit is accepted for compatibility with fleet and has no"
        " effect (fleet's API page size; the API pages by 100, fleet's default)"
    ]
