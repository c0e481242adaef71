"""Every etcd_servers endpoint is used: the registry on a real 3-member etcd cluster keeps its
lease alive when the member it talks to is killed (SIGKILL) or hangs (SIGSTOP), a new client
(fleetctl) skips a lost first member, and TLS members each with a certificate of their own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aetcd
import pytest
from aetcd import rpc
from click.testing import CliRunner

from fleetd.etcdclient import TlsFiles
from fleetd.fleetctl.cli import main
from fleetd.keys import Keys
from fleetd.model import Machine
from fleetd.registry import LeaseExpired, Registry, RegistryError
from fleetlab.etcd import LoopbackMember, etcd_argv, free_ports, loopback_etcd_cluster

from .certificates import make_certificates

pytestmark = pytest.mark.cluster
TTL = 3.0  # the lab tests' agent_ttl
REQUEST_TIMEOUT = 1.0  # fleetd's default etcd_request_timeout
MACHINE = Machine("b" * 32, "10.0.0.2")


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[LoopbackMember]]:
    with loopback_etcd_cluster(tmp_path / "etcd", size=3) as started:
        yield started


@asynccontextmanager
async def alone(member: LoopbackMember) -> AsyncIterator[aetcd.Client]:
    """A client of `member` only."""
    tls = TlsFiles(str(member.ca)) if member.ca else None
    async with Registry.open(member.endpoint, Keys(), 2.0, tls=tls) as registry:
        await registry.client.connect()
        yield registry.client


async def status_of(member: LoopbackMember) -> rpc.StatusResponse:
    async with alone(member) as client:
        return await client.maintenancestub.Status(rpc.StatusRequest(), timeout=2)


async def member_in_use(registry: Registry, members: list[LoopbackMember]) -> LoopbackMember:
    """The member that answers the registry's requests now (each reply names its member)."""
    ids = {(await status_of(m)).header.member_id: m for m in members if m.answers}
    await registry.client.connect()
    status = await registry.client.maintenancestub.Status(rpc.StatusRequest(), timeout=2)
    return ids[status.header.member_id]


async def leader_of(members: list[LoopbackMember]) -> LoopbackMember:
    statuses = [(m, await status_of(m)) for m in members if m.answers]
    leader = statuses[0][1].leader
    return next(m for m, status in statuses if status.header.member_id == leader)


async def move_leadership(leader: LoopbackMember, to: LoopbackMember) -> None:
    request = rpc.MoveLeaderRequest(targetID=(await status_of(to)).header.member_id)
    async with alone(leader) as client:
        await client.maintenancestub.MoveLeader(request, timeout=5)


async def give_leadership_away(member: LoopbackMember, members: list[LoopbackMember]) -> None:
    """Make sure `member` does not lead etcd: losing it then tests the client's failover, not
    etcd's election (which no client can hurry)."""
    if await leader_of(members) is member:
        await move_leadership(member, next(m for m in members if m is not member))


async def take_leadership(member: LoopbackMember, members: list[LoopbackMember]) -> None:
    if (leader := await leader_of(members)) is not member:
        await move_leadership(leader, member)


async def keep_alive_like_the_heart(registry: Registry, lease: int, seconds: float) -> float:
    """Refresh the lease every TTL/5 (retrying as soon) for `seconds`, as fleetd's heart does;
    the longest time between the sending of two acknowledged keepalives."""
    last_ack = time.monotonic()
    longest = 0.0
    end = last_ack + seconds
    while time.monotonic() < end:
        sent = time.monotonic()
        try:
            await registry.keep_alive(lease)
        except LeaseExpired:
            raise
        except RegistryError:
            pass
        else:
            longest = max(longest, sent - last_ack)
            last_ack = sent
        await asyncio.sleep(TTL / 5)
    return max(longest, time.monotonic() - last_ack)


@pytest.mark.parametrize("fault", ["kill", "freeze"])
async def test_the_lease_outlives_the_loss_of_the_member_in_use(
    members: list[LoopbackMember], fault: str
) -> None:
    endpoints = [member.endpoint for member in members]
    async with Registry.open(endpoints, Keys(), REQUEST_TIMEOUT) as registry:
        lease = await registry.grant_lease(TTL)
        await registry.publish_machine(MACHINE, lease)
        used = await member_in_use(registry, members)
        await give_leadership_away(used, members)
        getattr(used, fault)()  # kill: connections reset; freeze: open, but nothing answers
        longest = await keep_alive_like_the_heart(registry, lease, 4 * TTL)
        # Within a fraction of the TTL: the lease never came close to expiring.
        print(f"longest without an acknowledged keepalive: {longest:.2f}s")
        assert longest < 0.8 * TTL, f"no keepalive acknowledged for {longest:.1f}s"
        assert list(await registry.machines()) == [MACHINE.id]
        assert await member_in_use(registry, members) is not used


@pytest.mark.parametrize("fault", ["kill", "freeze"])
async def test_a_new_client_skips_a_first_member_that_is_dead_or_hung(
    members: list[LoopbackMember], fault: str
) -> None:
    """As fleetctl does, once per command: the first endpoint listed is lost."""
    await give_leadership_away(members[0], members)
    getattr(members[0], fault)()
    endpoints = ",".join(member.endpoint for member in members)
    async with Registry.open(endpoints, Keys(), REQUEST_TIMEOUT) as registry:
        started = time.monotonic()
        assert await registry.machines() == {}
        assert time.monotonic() - started < REQUEST_TIMEOUT
        assert await member_in_use(registry, members) is not members[0]


async def test_the_lease_outlives_the_loss_of_the_leader_in_use(
    members: list[LoopbackMember],
) -> None:
    endpoints = [member.endpoint for member in members]
    async with Registry.open(endpoints, Keys(), REQUEST_TIMEOUT) as registry:
        lease = await registry.grant_lease(TTL)
        await registry.publish_machine(MACHINE, lease)
        used = await member_in_use(registry, members)
        await take_leadership(used, members)
        used.kill()
        longest = await keep_alive_like_the_heart(registry, lease, 4 * TTL)
        # No client can hurry etcd's election (1 to 2 s here); etcd extends every lease by an
        # election timeout when a new leader takes over, so the lease holds all the same.
        print(f"longest without an acknowledged keepalive: {longest:.2f}s")
        assert longest < 2 * TTL
        assert list(await registry.machines()) == [MACHINE.id]


def test_fleetctl_uses_the_members_after_a_dead_first_one(members: list[LoopbackMember]) -> None:
    asyncio.run(give_leadership_away(members[0], members))
    members[0].kill()
    endpoints = ",".join(member.endpoint for member in members)
    argv = ["--driver=etcd", "--endpoint", endpoints, "list-machines"]
    listed = CliRunner().invoke(main, argv)
    assert listed.exit_code == 0, listed.output
    assert listed.output.split() == ["MACHINE", "IP", "METADATA"]


def test_mixed_http_and_https_endpoints_are_refused() -> None:
    argv = ["--driver=etcd", "--endpoint", "http://a:2379,https://b:2379", "list-machines"]
    refused = CliRunner().invoke(main, argv)
    assert refused.exit_code == 1
    assert "mix http:// and https://" in refused.output


@contextmanager
def tls_cluster(directory: Path) -> Iterator[tuple[list[LoopbackMember], Path]]:
    """3 members on 127.0.0.1, .2 and .3, each with a certificate for its own address only
    (from its own CA); yields them and a bundle of the three CAs."""
    names = [f"member{index}" for index in range(3)]
    ports = free_ports(6)
    peers = {name: f"http://127.0.0.1:{ports.pop()}" for name in names}
    initial = ",".join(f"{name}={url}" for name, url in peers.items())
    bundle = directory / "ca-bundle.crt"
    members, authorities = [], []
    for index, name in enumerate(names):
        files = directory / name
        files.mkdir(parents=True)
        make_certificates(files, f"IP:127.0.0.{index + 1}")
        authorities.append((files / "ca.crt").read_text())
        endpoint = f"https://127.0.0.{index + 1}:{ports.pop()}"
        argv = etcd_argv(name, files / "data", [endpoint], peers[name], initial)
        argv += ["--cert-file", str(files / "server.crt"), "--key-file", str(files / "server.key")]
        members.append(LoopbackMember(name, endpoint, argv, directory / f"{name}.log", ca=bundle))
    bundle.write_text("".join(authorities))
    try:
        for member in members:
            member.start()
        for member in members:
            member.wait_healthy()
        yield members, bundle
    finally:
        for member in members:
            member.stop()


async def test_tls_members_each_with_a_certificate_of_its_own(tmp_path: Path) -> None:
    """The channel checks every member's certificate against one name, the first member's;
    after a failure the next member comes first, so each is used under its own name."""
    with tls_cluster(tmp_path) as (members, bundle):
        tls = TlsFiles(str(bundle))
        endpoints = [member.endpoint for member in members]
        async with Registry.open(endpoints, Keys(), REQUEST_TIMEOUT, tls=tls) as registry:
            lease = await registry.grant_lease(TTL)
            await registry.publish_machine(MACHINE, lease)
            await give_leadership_away(members[0], members)
            members[0].kill()
            longest = await keep_alive_like_the_heart(registry, lease, 2 * TTL)
            assert longest < 0.8 * TTL, f"no keepalive acknowledged for {longest:.1f}s"
            assert list(await registry.machines()) == [MACHINE.id]
