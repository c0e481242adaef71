"""fleetctl's etcd driver on many units and large ones, against a real etcd (no machines: the
desired states and the registry's keys are what is checked). Transactions stay within etcd's
default limits (128 operations, 1.5 MiB a request) however many units one command names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fleetd.fleetctl.cli import main
from fleetd.keys import Keys
from fleetd.model import DesiredState
from fleetd.registry import Registry
from fleetlab.etcd import EtcdServer

pytestmark = pytest.mark.cluster
SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"


def fleetctl(etcd: EtcdServer, cwd: Path, *args: str) -> Result:
    endpoint = f"http://{etcd.host}:{etcd.port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        return CliRunner().invoke(
            main, ["--driver=etcd", f"--endpoint={endpoint}", *args], prog_name="fleetctl"
        )


def desired_states(etcd: EtcdServer) -> dict[str, DesiredState]:
    async def read() -> dict[str, DesiredState]:
        async with Registry.open(f"http://{etcd.host}:{etcd.port}", Keys(), 5.0) as registry:
            return {name: job.desired for name, job in (await registry.jobs()).items()}

    return asyncio.run(read())


def test_a_thousand_units_through_their_life_in_one_command_each(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    names = [f"many-{i:04d}.service" for i in range(1000)]
    for name in names:
        (tmp_path / name).write_text(SLEEPER)
    assert fleetctl(etcd, tmp_path, "submit", *names).exit_code == 0
    assert set(desired_states(etcd).values()) == {DesiredState.INACTIVE}
    started = fleetctl(etcd, tmp_path, "start", "--no-block", *names)
    assert started.exit_code == 0, started.output
    assert started.stdout.splitlines()[-1] == f"Triggered unit {names[-1]} start"
    assert set(desired_states(etcd).values()) == {DesiredState.LAUNCHED}
    # No machine publishes a state for them, so destroy waits for nothing; in fleet's order.
    destroyed = fleetctl(etcd, tmp_path, "destroy", *names)
    assert destroyed.exit_code == 0, destroyed.output
    assert destroyed.stdout.splitlines() == [f"Destroyed {name}" for name in names]
    assert desired_states(etcd) == {}


def test_large_units_are_stored_in_transactions_etcd_accepts(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    # Three files of about 600 KiB: together over etcd's 1.5 MiB request limit.
    environment = "".join(f"Environment=V{i}={'x' * 1000}\n" for i in range(600))
    names = [f"large-{i}.service" for i in range(3)]
    for index, name in enumerate(names):
        (tmp_path / name).write_text(f"[Service]\n{environment}ExecStart=/bin/sleep {index}\n")
    submitted = fleetctl(etcd, tmp_path, "submit", *names)
    assert submitted.exit_code == 0, submitted.output
    assert set(desired_states(etcd)) == set(names)
    assert fleetctl(etcd, tmp_path, "cat", names[2]).stdout.endswith("ExecStart=/bin/sleep 2\n")
