"""The example units in examples/ are what fleetctl submit accepts, and between them they show
every [X-Fleet] option; the sample fleet.conf has every key, with its default."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.config import (
    COMPATIBILITY_KEYS_BY_NAME,
    SETTINGS_BY_NAME,
    Config,
    load_config,
    read_config_file,
)
from fleetd.unitfile import Requirements, parse_unit_file, requirements
from fleetd.unitname import check_unit_name, parse_unit_name

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UNIT_FILES = sorted(EXAMPLES.glob("*.service"))


def instance_name(path: Path) -> str:
    """A template is submitted through an instance of it."""
    return path.name.replace("@.", "@1.")


def example_requirements(path: Path) -> Requirements:
    name = instance_name(path)
    check_unit_name(name)
    return requirements(parse_unit_file(path.read_text(), str(path)), parse_unit_name(name))


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda path: path.name)
def test_every_example_is_a_unit_fleet_accepts(path: Path) -> None:
    example_requirements(path)


def test_the_examples_show_every_x_fleet_option() -> None:
    found = [example_requirements(path) for path in UNIT_FILES]
    assert any(r.machine_id for r in found)
    assert any(r.machine_of for r in found)
    assert any(r.metadata for r in found)
    assert any(r.conflicts for r in found)
    assert any(r.replaces for r in found)
    assert any(r.is_global for r in found)


def test_the_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    assert [path.name for path in UNIT_FILES if f"`{path.name}`" not in readme] == []


SAMPLE = EXAMPLES / "fleet.conf.sample"


def uncommented_sample(tmp_path: Path) -> Path:
    """The sample with every key line switched on."""
    lines = SAMPLE.read_text().splitlines()
    keys = [line[1:] for line in lines if line.startswith("#") and "=" in line and " " not in line]
    path = tmp_path / "fleet.conf"
    path.write_text("\n".join(keys) + "\n")
    return path


def test_the_sample_fleet_conf_has_every_key_with_its_default(tmp_path: Path) -> None:
    file_values = read_config_file(uncommented_sample(tmp_path))
    assert set(file_values) == set(SETTINGS_BY_NAME) | set(COMPATIBILITY_KEYS_BY_NAME)
    config, warnings = load_config(file_values, {}, {})
    assert config == Config()
    assert len(warnings) == len(COMPATIBILITY_KEYS_BY_NAME)
