"""aetcd against the real etcd of the `etcd` fixture: the primitives fleetd is built on."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aetcd
import pytest

from fleetd.etcdclient import TlsFiles
from fleetd.keys import Keys
from fleetd.model import Machine
from fleetd.registry import Registry, RegistryError
from fleetlab.etcd import EtcdServer, etcd_argv, free_port

from .certificates import make_certificates

pytestmark = pytest.mark.cluster


@pytest.fixture
async def client(etcd: EtcdServer) -> AsyncIterator[aetcd.Client]:
    async with aetcd.Client(etcd.host, etcd.port) as connected:
        yield connected


async def test_put_then_get_returns_the_value(client: aetcd.Client) -> None:
    await client.put(b"/flotilla/test/a", b"one")
    got = await client.get(b"/flotilla/test/a")
    assert got is not None and got.value == b"one"
    assert await client.get(b"/flotilla/test/missing") is None


async def test_prefix_read_returns_every_key_under_the_prefix(client: aetcd.Client) -> None:
    for name in ("x", "y", "z"):
        await client.put(b"/flotilla/units/" + name.encode(), name.encode())
    await client.put(b"/flotilla/other", b"-")
    found = await client.get_prefix(b"/flotilla/units/")
    assert [kv.value for kv in found] == [b"x", b"y", b"z"]


async def test_key_under_a_lease_vanishes_when_the_lease_expires(client: aetcd.Client) -> None:
    lease = await client.lease(1)
    await client.put(b"/flotilla/machines/m1", b"alive", lease=lease)
    assert await client.get(b"/flotilla/machines/m1") is not None
    # etcd may round a lease up by its election timeout; 3 s is well past a 1 s TTL.
    await asyncio.sleep(3)
    assert await client.get(b"/flotilla/machines/m1") is None


async def test_refreshed_lease_keeps_its_key(client: aetcd.Client) -> None:
    lease = await client.lease(2)
    await client.put(b"/flotilla/machines/m2", b"alive", lease=lease)
    for _ in range(4):
        await asyncio.sleep(1)
        await lease.refresh()
    assert await client.get(b"/flotilla/machines/m2") is not None
    await lease.revoke()
    assert await client.get(b"/flotilla/machines/m2") is None


async def test_watch_sees_puts_and_deletes_in_order(client: aetcd.Client) -> None:
    watch = await client.watch_prefix(b"/flotilla/watched/")
    await client.put(b"/flotilla/watched/a", b"1")
    await client.put(b"/flotilla/watched/a", b"2")
    await client.delete(b"/flotilla/watched/a")
    seen: list[tuple[str, bytes]] = []
    async with asyncio.timeout(5):
        async for event in watch:
            seen.append((event.kind, event.kv.value))
            if len(seen) == 3:
                break
    await watch.cancel()
    assert seen == [("PUT", b"1"), ("PUT", b"2"), ("DELETE", b"")]


async def test_registry_talks_tls_to_an_etcd_that_requires_client_certificates(
    tmp_path: Path,
) -> None:
    make_certificates(tmp_path, "IP:127.0.0.1")
    port, peer = free_port(), free_port()
    endpoint = f"https://127.0.0.1:{port}"
    argv = etcd_argv("tls", tmp_path / "data", [endpoint], f"http://127.0.0.1:{peer}")
    argv += [
        "--cert-file",
        str(tmp_path / "server.crt"),
        "--key-file",
        str(tmp_path / "server.key"),
        "--trusted-ca-file",
        str(tmp_path / "ca.crt"),
        "--client-cert-auth",
    ]
    tls = TlsFiles(
        str(tmp_path / "ca.crt"), str(tmp_path / "client.crt"), str(tmp_path / "client.key")
    )
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as etcd:
        try:
            async with Registry.open(endpoint, Keys(), 2.0, tls=tls) as registry:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        await registry.publish_machine(
                            Machine("a" * 32, "10.0.0.1"), await registry.grant_lease(5)
                        )
                        break
                    except RegistryError:
                        assert time.monotonic() < deadline, "etcd with TLS never answered"
                        await asyncio.sleep(0.2)
                assert list(await registry.machines()) == ["a" * 32]
            async with Registry.open(
                endpoint, Keys(), 2.0, tls=TlsFiles(str(tmp_path / "ca.crt"))
            ) as bare:
                with pytest.raises(RegistryError):
                    await bare.machines()  # no client certificate: refused
        finally:
            etcd.terminate()
