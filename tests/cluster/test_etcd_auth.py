"""etcd credentials on a real etcd with authentication enabled: the token the registry holds
is replaced when etcd forgets it, and the password is neither logged nor sent unwarned."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fleetd.fleetctl.cli import main
from fleetd.keys import Keys
from fleetd.model import Machine
from fleetd.registry import Registry, RegistryError
from fleetlab.etcd import LoopbackMember, loopback_etcd_cluster
from flotilla.process import run

pytestmark = pytest.mark.cluster
PASSWORD = "test-only-secret-4b1d"
MACHINE = Machine("c" * 32, "10.0.0.3")


def etcdctl(member: LoopbackMember, *args: str, input: str | None = None) -> None:
    run(["etcdctl", "--endpoints", member.endpoint, *args], env={"ETCDCTL_API": "3"}, input=input)


@pytest.fixture
def member(tmp_path: Path) -> Iterator[LoopbackMember]:
    """One etcd with authentication on (user root). A snapshot after every entry means a
    restart replays no Authenticate from the log: etcd forgets every token, as a member that
    has run for a while does."""
    data = tmp_path / "etcd"
    with loopback_etcd_cluster(data, size=1, extra_args=["--snapshot-count", "1"]) as (member,):
        etcdctl(member, "user", "add", "root", "--interactive=false", input=f"{PASSWORD}\n")
        etcdctl(member, "auth", "enable")
        yield member


def restart(member: LoopbackMember) -> None:
    member.stop()
    member.start()
    member.wait_healthy()


async def test_a_request_after_an_etcd_restart_gets_a_new_token(member: LoopbackMember) -> None:
    async with Registry.open(member.endpoint, Keys(), 2.0, "root", PASSWORD) as registry:
        lease = await registry.grant_lease(30)
        await registry.publish_machine(MACHINE, lease)
        restart(member)  # while the client is idle: its channel reconnects without an error
        # Refused once with "invalid auth token", authenticated again, sent again.
        assert list(await registry.machines()) == [MACHINE.id]
        assert await registry.keep_alive(lease) == 30
        await registry.publish_machine(MACHINE, lease)


async def test_a_watch_after_an_etcd_restart_works_again(member: LoopbackMember) -> None:
    keys = Keys()
    async with Registry.open(member.endpoint, keys, 2.0, "root", PASSWORD) as registry:
        await registry.publish_machine(MACHINE, await registry.grant_lease(30))
        revision = await registry.revision_of(keys.machine(MACHINE.id))
        restart(member)
        # The first watch after the restart is refused (etcd says "permission denied" for a
        # token it forgot); the token is replaced and the watch stream opened again, so the
        # next attempt (fleetd's watchers retry every second) works.
        for _ in range(10):
            try:
                async with asyncio.timeout(5):
                    event = await anext(registry.watch(keys.machines, revision))
                break
            except RegistryError:
                await asyncio.sleep(0.2)
        else:
            pytest.fail("the watch never worked again after the restart")
        assert event.key == MACHINE.id


async def test_the_password_stays_out_of_errors_and_logs(
    member: LoopbackMember, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = PASSWORD + "-wrong"
    async with Registry.open(member.endpoint, Keys(), 2.0, "root", wrong) as registry:
        with pytest.raises(RegistryError) as refused:
            await registry.machines()
    assert "authentication failed" in str(refused.value)
    for text in [str(refused.value), caplog.text]:
        assert PASSWORD not in text


async def test_credentials_over_plain_http_are_warned_about(
    member: LoopbackMember, caplog: pytest.LogCaptureFixture
) -> None:
    async with Registry.open(member.endpoint, Keys(), 2.0, "root", PASSWORD) as registry:
        await registry.machines()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("http://" in message and "root" in message for message in warnings)
    assert PASSWORD not in caplog.text


def fleetctl(member: LoopbackMember, *args: str, password: str | None = None) -> Result:
    """fleetctl's etcd driver in this process (its own event loop: the tests are sync)."""
    argv = ["--driver=etcd", "--endpoint", member.endpoint, *args]
    return CliRunner().invoke(main, argv, env={"FLEETCTL_ETCD_PASSWORD": password})


def test_fleetctl_takes_the_password_from_the_environment_or_a_file(
    member: LoopbackMember, tmp_path: Path
) -> None:
    as_root = ["--etcd-username", "root", "list-machines"]
    assert fleetctl(member, *as_root, password=PASSWORD).exit_code == 0
    password_file = tmp_path / "etcd-password"
    password_file.write_text(f"{PASSWORD}\n")
    password_file.chmod(0o600)
    from_file = fleetctl(member, "--etcd-password-file", str(password_file), *as_root)
    assert from_file.exit_code == 0, from_file.output
    missing = fleetctl(member, *as_root)
    assert missing.exit_code == 1
    assert "FLEETCTL_ETCD_PASSWORD" in missing.output
    # No flag takes the password: argv is readable by every user of the machine.
    assert fleetctl(member, "--etcd-password", PASSWORD, *as_root).exit_code == 2
