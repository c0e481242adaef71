"""`make man`: a page for every console script, generated from the CLIs themselves."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def make_man() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_man", REPO / "scripts/make_man.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("man")
    return {path.stem: path.read_text() for path in make_man().write_pages(out)}


def test_every_console_script_has_a_page(pages: dict[str, str]) -> None:
    assert set(pages) == set(SCRIPTS)
    for name, text in pages.items():
        assert text.startswith(f'.TH "{name.upper()}" 1 ')
        assert ".SH SYNOPSIS" in text and ".SH OPTIONS" in text


def test_pages_carry_the_options_and_subcommands(pages: dict[str, str]) -> None:
    assert '.SS "fleetctl list\\-units"' in pages["fleetctl"]
    assert "\\-\\-etcd_servers" in pages["fleetd"]  # an argparse tool, read from its parser
    assert "\\-\\-deadline\\-file" in pages["fleetd-backstop"]
    assert '.SS "imagebuild build"' in pages["imagebuild"]
    assert "\\fB\\-h, \\-\\-help\\fR" in pages["flotilla-qemu"]


def test_no_page_names_the_machine_it_was_made_on(pages: dict[str, str]) -> None:
    for text in pages.values():
        assert str(REPO) not in text.replace("\\-", "-")


def test_escapes() -> None:
    assert make_man().roff(".hidden\n'quoted\na-b\\c") == "\\&.hidden\n\\&'quoted\na\\-b\\ec"


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_pages_render_without_warnings(tmp_path: Path) -> None:
    for path in make_man().write_pages(tmp_path):
        result = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", "-z", path], capture_output=True, text=True
        )
        assert (result.returncode, result.stderr) == (0, ""), path.name
