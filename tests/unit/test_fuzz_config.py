"""Fuzz: any fleet.conf, FLEET_* variable or flag gives a Config or a ConfigError (Hypothesis).

fleetd reads its configuration before it can log anything useful: any other exception there is
a traceback instead of a message naming the file, the line and the setting.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fleetd.config import SETTINGS, Config, ConfigError, load_config, read_config_file

from .fuzzing import fuzz, soup

NAMES = [setting.name for setting in SETTINGS]
DURATIONS = ["agent_ttl", "engine_reconcile_interval", "agent_reconcile_interval"]
DURATIONS += ["etcd_request_timeout"]
VALUE_TOKENS = ["10s", "1m30s", "500ms", "2.5", "0", "-1", "1_0", "9" * 30, "nan", "inf"]
VALUE_TOKENS += ["1e400", "true", "no", "[", "]", ",", '"', "a=b", "=", " ", "/", "#"]
VALUE_TOKENS += ['["http://a:2379", "http://b:2379"]', '[1, {"a": null}]', "/run/fleet/units/"]
VALUE_TOKENS += ["/etc/systemd/system", "/usr/lib", "..", "127.0.0.1", "::1", "65536", "7007"]
values = soup(VALUE_TOKENS, max_size=6)
_line = st.one_of(
    st.builds(
        "{}{}{}".format,
        st.sampled_from([*NAMES, "colour", "FLEET_AGENT_TTL", "", " agent_ttl "]),
        st.sampled_from(["=", " = ", "=\t", " "]),
        values,
    ),
    soup(["#", ";", "=", " ", "agent_ttl", "\r"], max_size=6),
)
config_texts = st.lists(_line, max_size=8).map("\n".join)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz-config") / "fleet.conf"


def load(path: Path) -> Config | None:
    """The config fleetd would run with, or None for a ConfigError (whose message names a
    source)."""
    try:
        return load_config(read_config_file(path), {}, {})[0]
    except ConfigError as error:
        assert str(error)
        return None


@fuzz(300)
@given(config_texts)
def test_any_config_file_gives_a_config_or_config_error(config_file: Path, text: str) -> None:
    # Lone surrogates cannot be in a file; "?" stands in for them.
    config_file.write_bytes(text.encode("utf-8", "replace"))
    load(config_file)


@fuzz(300)
@given(
    st.dictionaries(st.sampled_from(NAMES), values, max_size=4),
    st.dictionaries(st.sampled_from([*NAMES, "colour"]), values, max_size=3),
)
def test_any_environment_and_flags_give_a_config_or_config_error(
    environment: dict[str, str], flags: dict[str, str]
) -> None:
    environ = {f"FLEET_{name.upper()}": value for name, value in environment.items()}
    try:
        load_config({}, environ, flags)
    except ConfigError as error:
        assert str(error)


@fuzz(100)
@given(st.binary(max_size=40))
@example(b"\xff\n")
def test_a_file_that_is_not_utf8_gives_a_config_or_config_error(
    config_file: Path, data: bytes
) -> None:
    config_file.write_bytes(data)
    load(config_file)


@fuzz(20)
@given(st.integers(0, 200_000))
@example(100_000)
def test_a_deeply_nested_list_gives_config_error(config_file: Path, depth: int) -> None:
    config_file.write_text("etcd_servers=" + "[" * depth + "\n")
    load(config_file)


@fuzz(200)
@given(st.sampled_from(DURATIONS), values)
@example("agent_ttl", "nan")
@example("agent_ttl", "inf")
@example("etcd_request_timeout", "1e400")
def test_every_duration_of_a_config_is_finite_and_positive(
    config_file: Path, name: str, value: str
) -> None:
    config_file.write_text(f"{name}={value}\n", errors="surrogatepass")
    config = load(config_file)
    if config is not None:
        assert all(0 < getattr(config, duration) < math.inf for duration in DURATIONS)
