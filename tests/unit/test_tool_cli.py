"""What every click tool offers anyone: help without root, and a bash completion script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleetlab.cli import main as fleetlab_main

REPO = Path(__file__).resolve().parents[2]
# Every click tool in pyproject's [project.scripts] but fleetctl (its completion of unit and
# machine names is documented and tested with fleetctl).
CLICK_TOOLS = {
    "fleetlab": "fleetlab.cli",
    "imagebuild": "imagebuild.cli",
    "flotilla-qemu": "qemu.cli",
    "flotilla-cluster": "qemu.cluster_cli",
    "flotilla-cloudinit": "provision.cloudinit_cli",
    "flotilla-unit": "podunits.cli",
    "flotilla-update": "flotilla.update.cli",
}
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="switching to nobody needs root"
)


def tool(
    prog: str, *args: str, env: dict[str, str] | None = None, user: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool from this checkout under its installed name (click derives the completion
    variable and the usage line from it)."""
    code = f"from {CLICK_TOOLS[prog]} import main; main(prog_name={prog!r})"
    return subprocess.run(
        [*(user or []), sys.executable, "-c", code, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def completion_variable(prog: str) -> str:
    return f"_{prog.replace('-', '_').upper()}_COMPLETE"


@pytest.mark.parametrize("prog", sorted(CLICK_TOOLS))
def test_each_click_tool_writes_a_bash_completion_script(prog: str) -> None:
    script = tool(prog, env={completion_variable(prog): "bash_source"})
    assert script.returncode == 0, script.stderr
    function = f"_{prog.replace('-', '_')}_completion"
    assert f"{function}() {{" in script.stdout
    # bash itself takes it: the function is defined and bound to the tool's name.
    loaded = subprocess.run(
        [
            "bash",
            "-c",
            f'eval "$1" && declare -F {function} && complete -p {prog}',
            "-",
            script.stdout,
        ],
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert f"-F {function} {prog}" in loaded.stdout


def test_completion_offers_fleetlab_commands() -> None:
    words = tool(
        "fleetlab",
        env={
            completion_variable("fleetlab"): "bash_complete",
            "COMP_WORDS": "fleetlab pa",
            "COMP_CWORD": "1",
        },
    )
    assert words.stdout.split() == ["plain,partition"]


@needs_root
@pytest.mark.parametrize("command", sorted(fleetlab_main.commands))
def test_fleetlab_help_works_without_root(command: str) -> None:
    for flag in ("-h", "--help"):
        result = tool("fleetlab", command, flag, user=AS_NOBODY)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"Usage: fleetlab {command} ")


@needs_root
def test_fleetlab_version_and_completion_work_without_root() -> None:
    assert tool("fleetlab", "--version", user=AS_NOBODY).stdout.startswith("fleetlab ")
    env = {completion_variable("fleetlab"): "bash_source"}
    assert tool("fleetlab", env=env, user=AS_NOBODY).returncode == 0


@needs_root
@pytest.mark.parametrize("command", [["ls"], ["down"], ["ls", "--output", "json"]])
def test_fleetlab_commands_still_refuse_without_root(command: list[str]) -> None:
    result = tool("fleetlab", *command, user=AS_NOBODY)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "fleetlab: fleetlab must run as root (it creates namespaces, mounts and cgroups);"
        " run it with sudo\n"
    )
