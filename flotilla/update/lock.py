"""The reboot lock in etcd (I/O): read it, take and give back slots, set its max, and the
leases that tie a holder to a live machine. The keys and the decisions are lock_decide.py's.

The client is fleetd's (fleetd.etcdclient: every member, failover, TLS, auth), reaching the
etcd that fleet.conf names unless update.conf's ETCD_ENDPOINTS says otherwise; aetcd's errors
become fleetd's RegistryError here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aetcd
import aetcd.exceptions

from fleetd.config import DEFAULT_CONFIG_FILE, Config, load_config, read_config_file
from fleetd.etcdclient import EtcdClient, TlsFiles, parse_endpoints
from fleetd.keys import Keys
from fleetd.registry import (
    GRPC_OPTIONS,
    Registry,
    RegistryError,
    lease_seconds,
    translated_errors,
)

from .lock_decide import (
    AcquireDecision,
    Holder,
    LockKeys,
    Semaphore,
    check_max,
    decide_acquire,
    decode_holder,
    decode_max,
    encode_holder,
    encode_semaphore,
    holder_to_release,
)

DEFAULT_KEYS = LockKeys()
TAKE_ATTEMPTS = 10  # compare failures in a row before giving up (other takers keep winning)


@dataclass(frozen=True)
class EtcdTarget:
    """Where the lock lives, and how to log in: fleet's own etcd settings."""

    endpoints: tuple[str, ...]
    username: str = ""
    password: str = field(default="", repr=False)
    tls: TlsFiles = field(default_factory=TlsFiles)


def etcd_target(
    endpoints: Sequence[str] = (), fleet_conf: Path = DEFAULT_CONFIG_FILE
) -> EtcdTarget:
    """fleet.conf's etcd settings (and FLEET_* variables, as fleetd reads them), with
    `endpoints` (ETCD_ENDPOINTS, --endpoint) in place of its etcd_servers when given. No
    fleet.conf: fleetd's defaults (this machine's etcd on 127.0.0.1:2379). ValueError when
    fleet's settings cannot be used (fleetd.config's message)."""
    config = fleet_settings(fleet_conf)
    chosen = tuple(endpoints) or config.etcd_servers
    parse_endpoints(chosen)  # refuses a malformed or mixed list before anything connects
    tls = TlsFiles(config.etcd_cafile, config.etcd_certfile, config.etcd_keyfile)
    return EtcdTarget(chosen, config.etcd_username, config.etcd_password, tls)


def fleet_settings(fleet_conf: Path = DEFAULT_CONFIG_FILE) -> Config:
    """fleet.conf and FLEET_* variables, as fleetd reads them; no fleet.conf: fleetd's
    defaults. Its warnings are fleetd's to give."""
    file_values = read_config_file(fleet_conf) if fleet_conf.exists() else {}
    return load_config(file_values, os.environ, {})[0]


class RebootLock:
    """The semaphore, one client per process."""

    def __init__(self, client: aetcd.Client, keys: LockKeys) -> None:
        self.client = client
        self.keys = keys
        self.ops = client.transactions

    @classmethod
    @asynccontextmanager
    async def open(
        cls, target: EtcdTarget, keys: LockKeys = DEFAULT_KEYS, timeout: float = 5.0
    ) -> AsyncIterator[RebootLock]:
        client = EtcdClient(
            parse_endpoints(target.endpoints),
            timeout=timeout,
            options=GRPC_OPTIONS,
            username=target.username,
            password=target.password,
            tls=target.tls,
        )
        try:
            yield cls(client, keys)
        finally:
            with translated_errors("closing the etcd connection"):
                await client.close()

    async def read(self) -> Semaphore:
        """The max and every holder, in one revision."""
        holders_end = aetcd.utils.prefix_range_end(self.keys.holders)
        reads = [self.ops.get(self.keys.semaphore), self.ops.get(self.keys.holders, holders_end)]
        with translated_errors("reading the reboot lock"):
            _, (semaphore, holders) = await self.client.transaction(
                compare=[], success=reads, failure=[]
            )
        raw, revision = (semaphore[0][0], semaphore[0][1].mod_revision) if semaphore else (None, 0)
        found = tuple(
            decode_holder(self.keys.machine_of(kv.key), value, kv.lease, kv.mod_revision)
            for value, kv in holders
        )
        return Semaphore(decode_max(raw), found, revision)

    def unchanged(self, semaphore: Semaphore) -> object:
        key = self.keys.semaphore
        if semaphore.revision == 0:
            return self.ops.version(key) == 0
        return self.ops.mod(key) == semaphore.revision

    async def try_acquire(self, machine: str, lease: int, since: str) -> AcquireDecision:
        """Take a slot for `machine` under `lease` (0: no lease) if one is free. "take": it was
        taken now; "already held": the machine held one before (that hold is returned);
        "full": nothing changed, the reason says who holds the slots."""
        for _ in range(TAKE_ATTEMPTS):
            semaphore = await self.read()
            decision = decide_acquire(semaphore, machine)
            if decision.action != "take":
                return decision
            holder_key = self.keys.holder(machine)
            with translated_errors(f"taking the reboot lock for {machine}"):
                taken, _ = await self.client.transaction(
                    compare=[self.unchanged(semaphore), self.ops.version(holder_key) == 0],
                    success=[
                        self.ops.put(self.keys.semaphore, encode_semaphore(semaphore.max)),
                        self.ops.put(
                            holder_key, encode_holder(machine, since), lease=lease or None
                        ),
                    ],
                    failure=[],
                )
            if taken:
                return decision
        raise RegistryError(f"taking the reboot lock for {machine}: it kept changing; try again")

    async def wait_for_change(self, timeout: float) -> None:
        """Back as soon as a key of the lock changes (a holder leaves, the max is set), at the
        latest after `timeout` seconds. The watch starts now: a change between the caller's
        read and this call is seen at the timeout, as when waiting was a plain sleep.
        RegistryError when etcd does not answer the watch."""
        watching = Registry(self.client, Keys())  # fleetd's watch: its errors, a bounded cancel
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async with contextlib.aclosing(watching.watch(self.keys.prefix.encode())) as events:
                    async for _ in events:
                        return

    async def release(self, machine: str, lease: int | None = None) -> Holder | None:
        """End `machine`'s hold: delete its key (compared unchanged since read) and revoke its
        lease. `lease` given: only a hold under that lease (a coordinator giving back its own).
        Returns the hold ended, None when there was none to end."""
        for _ in range(TAKE_ATTEMPTS):
            holder = (await self.read()).holder(machine)
            if holder is None or (lease is not None and holder.lease != lease):
                return None
            key = self.keys.holder(machine)
            with translated_errors(f"releasing the reboot lock of {machine}"):
                deleted, _ = await self.client.transaction(
                    compare=[self.ops.mod(key) == holder.revision],
                    success=[self.ops.delete(key)],
                    failure=[],
                )
            if deleted:
                if holder.lease:
                    await self.revoke(holder.lease)
                return holder
        raise RegistryError(f"releasing the reboot lock of {machine}: it kept changing; try again")

    async def unlock(self, machine: str) -> Holder:
        """`unlock MACHINE`: end its hold whatever its lease (an operator's override of a dead
        or stuck holder); LockRefused when it holds none."""
        ended = await self.release(machine)
        if ended is None:
            holder_to_release(await self.read(), machine)  # LockRefused, naming the holders
            raise RegistryError(f"the reboot lock of {machine} changed meanwhile; try again")
        return ended

    async def set_max(self, maximum: int) -> int:
        """Store the max; returns the previous one. Holders above a lowered max keep their
        slots (nobody is pulled out of a reboot); new takers wait until the count is below."""
        check_max(maximum)
        for _ in range(TAKE_ATTEMPTS):
            semaphore = await self.read()
            with translated_errors("setting the reboot lock's max"):
                stored, _ = await self.client.transaction(
                    compare=[self.unchanged(semaphore)],
                    success=[self.ops.put(self.keys.semaphore, encode_semaphore(maximum))],
                    failure=[],
                )
            if stored:
                return semaphore.max
        raise RegistryError("setting the reboot lock's max: it kept changing; try again")

    # -- leases: a holder's key lives under one; etcd deletes it when nobody renews it -------

    async def grant(self, ttl: float) -> int:
        with translated_errors("granting the reboot lock's lease"):
            lease = await self.client.lease(lease_seconds(ttl))
        return lease.id

    async def renew(self, lease: int) -> bool:
        """Refresh `lease`; False when it no longer exists (it ran out, or was revoked)."""
        with translated_errors(f"renewing lease {lease:x}"):
            reply = await self.client.refresh_lease(lease)
        return reply is not None and reply.TTL > 0

    async def seconds_left(self, lease: int) -> tuple[int, int] | None:
        """(seconds `lease` lives unless renewed, seconds it was granted); None when gone."""
        with translated_errors(f"reading lease {lease:x}"):
            info = await self.client.get_lease_info(lease, keys=False)
        return (int(info.TTL), int(info.grantedTTL)) if info.TTL > 0 else None

    async def revoke(self, lease: int) -> None:
        with translated_errors(f"revoking lease {lease:x}"):
            try:
                await self.client.revoke_lease(lease)
            except aetcd.exceptions.ClientError as error:
                if "not found" not in str(error):
                    raise
