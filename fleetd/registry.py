"""The only module that talks to etcd (through aetcd): typed reads, guarded writes, leases, watches.

Errors from aetcd and gRPC are translated here into RegistryError (etcd unreachable or failed)
and its subclasses; "not found" is a return value. Every engine write is a transaction that also
compares the leader key's create revision, so a deposed leader's writes are refused by etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions

from .etcdclient import EtcdClient, TlsFiles, parse_endpoints
from .keys import Keys
from .machine_plan import RUNNING_STATES
from .model import (
    Assign,
    Assignment,
    ClearPending,
    ClusterSnapshot,
    DesiredState,
    EngineTask,
    Forget,
    Job,
    JobRecord,
    Machine,
    MarkPending,
    Remember,
    Schedule,
    Unassign,
    UnitState,
    Unschedule,
)
from .unitfile import Requirements

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_TXN_OPS = 100
# etcd refuses a request over 1.5 MiB by default (--max-request-bytes); unit bodies are written
# in transactions that stay under this, with room for the keys and the request's framing.
MAX_TXN_BYTES = 1024 * 1024
SET_DESIRED_ATTEMPTS = 5
WATCH_CANCEL_SECONDS = 2.0
FEW_KEYS = 8  # up to this many named keys are read one by one, more with one ranged read

FEW_BODIES = 20  # above this many, one ranged read of every body beats a request per body
# gRPC backs off up to two minutes between reconnects by default; after an etcd outage every
# machine must be back within a fraction of its TTL, or its lease (and its units) would go.
GRPC_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 500,
    # gRPC refuses replies over 4 MiB by default; a snapshot or a read of every unit body of a
    # big cluster is larger (etcd itself bounds each request at 1.5 MiB, not replies).
    "grpc.max_receive_message_length": 1 << 30,
}  # etcd refuses transactions of more than 128 operations by default


class RegistryError(Exception):
    """etcd could not be reached or refused a request."""


class LeaseExpired(RegistryError):
    """The lease is gone: everything attached to it was deleted by etcd."""


class DuplicateMachine(RegistryError):
    """Another live fleetd holds this machine id."""


class Conflict(RegistryError):
    """A guarded write found the registry changed (or leadership lost); re-read and retry."""


@dataclass(frozen=True)
class RawSnapshot:
    """The engine's inputs as etcd holds them, read in one transaction (one revision)."""

    jobs: dict[str, JobRecord]
    machines: dict[str, Machine]
    placements: dict[str, str]
    assignments: dict[str, dict[str, Assignment]]
    reasons: dict[str, str]
    members: frozenset[str] = frozenset()  # machines recorded under member/
    broken_jobs: dict[str, str] = field(default_factory=dict)  # malformed job/ records -> why
    job_revisions: dict[str, int] = field(default_factory=dict)  # job -> its mod revision
    running: dict[str, frozenset[str]] = field(default_factory=dict)  # unit -> machines
    machine_leases: dict[str, int] = field(default_factory=dict)  # machine -> its lease id
    drained: frozenset[str] = frozenset()  # machines marked for draining (drain/)
    landed: dict[str, frozenset[str]] = field(default_factory=dict)  # unit -> active/failed on

    def resolved(
        self,
        requirements_of: Callable[[JobRecord], Requirements | str],
        members: frozenset[str] | None = None,
    ) -> ClusterSnapshot:
        """What the engine plans from: each job with its [X-Fleet] requirements, or, when
        `requirements_of` says why it has none (a string), that reason under `unresolved`."""
        jobs, unresolved = {}, dict(self.broken_jobs)
        for name, record in self.jobs.items():
            found = requirements_of(record)
            if isinstance(found, str):
                unresolved[name] = found
            else:
                jobs[name] = Job(name, record.hash, record.desired, found)
        return ClusterSnapshot(
            jobs,
            self.machines,
            self.placements,
            self.assignments,
            self.reasons,
            self.members if members is None else members,
            unresolved=unresolved,
            running=self.running,
            drained=self.drained,
            landed=self.landed,
        )


@dataclass(frozen=True)
class WatchEvent:
    key: str  # relative to the watched prefix
    deleted: bool
    value: bytes
    revision: int


@contextmanager
def translated_errors(action: str) -> Iterator[None]:
    try:
        yield
    except aetcd.exceptions.ClientError as error:
        raise RegistryError(f"{action}: {error or type(error).__name__}") from error
    except asyncio.CancelledError as error:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # this task is being cancelled: let it end
        # The client closed the channel under the call (it moved to another etcd member).
        raise RegistryError(f"{action}: the connection to etcd was closed") from error


def encode_assignment(assignment: Assignment) -> bytes:
    value = {"hash": assignment.hash, "desired": assignment.desired.value}
    if assignment.is_global:
        value["global"] = True
    return json.dumps(value).encode()


def decode_assignment(raw: bytes) -> Assignment:
    value = json.loads(raw)
    return Assignment(value["hash"], DesiredState(value["desired"]), value.get("global", False))


def encode_machine(machine: Machine) -> bytes:
    return json.dumps(
        {"id": machine.id, "ip": machine.ip, "metadata": dict(machine.metadata)}
    ).encode()


def decode_machine(raw: bytes) -> Machine:
    value = json.loads(raw)
    return Machine(value["id"], value["ip"], value.get("metadata", {}))


MALFORMED = (ValueError, KeyError, TypeError, AttributeError)  # json, enum, shape, type


def describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def decoded(decode: Callable[[bytes], T], raw: bytes, what: str) -> T | None:
    try:
        return decode(raw)
    except MALFORMED as error:
        log.warning("skipping malformed %s in etcd: %s", what, describe(error))
        return None


def decode_machine_leniently(key: str, raw: bytes) -> Machine:
    """A malformed record still proves the machine's lease is alive: it keeps its units."""
    found = decoded(decode_machine, raw, f"machine record {key}")
    return found if found is not None and found.id == key else Machine(key, "")


def encode_state(state: UnitState) -> bytes:
    return json.dumps(
        {"load": state.load, "active": state.active, "sub": state.sub, "hash": state.hash}
    ).encode()


def decode_state(raw: bytes) -> UnitState:
    value = json.loads(raw)
    return UnitState(value["load"], value["active"], value["sub"], value.get("hash", ""))


def with_dynamic_metadata(
    machines: Iterable[Machine], dynamic: Iterable[tuple[str, bytes]]
) -> list[Machine]:
    """Metadata from fleet.conf, overridden by the API's metadata/<machine>/<key> keys."""
    overrides: dict[str, dict[str, str]] = {}
    for key, raw in dynamic:
        machine, _, name = key.partition("/")
        overrides.setdefault(machine, {})[name] = raw.decode()
    merged = []
    for machine in machines:
        metadata = {**machine.metadata, **overrides.get(machine.id, {})}
        metadata = {key: value for key, value in metadata.items() if value}
        merged.append(Machine(machine.id, machine.ip, metadata))
    return merged


def lease_seconds(ttl: float) -> int:
    """etcd leases have whole seconds; rounding down would let a lease expire early."""
    return max(1, math.ceil(ttl))


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:  # type: ignore[type-arg]
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sized_chunks(
    items: Sequence[tuple[str, str]], size: int, max_bytes: int
) -> Iterator[Sequence[tuple[str, str]]]:
    """(key, text) items in chunks of at most `size` items and, past the first item of a chunk,
    `max_bytes` of text (one item larger than that goes alone: etcd judges it)."""
    start, used = 0, 0
    for index, (_, text) in enumerate(items):
        length = len(text.encode())
        if index > start and (index - start >= size or used + length > max_bytes):
            yield items[start:index]
            start, used = index, 0
        used += length
    if start < len(items):
        yield items[start:]


class Registry:
    """fleetd's view of etcd. One instance per process; safe to share between tasks."""

    def __init__(self, client: aetcd.Client, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.ops = client.transactions

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        endpoints: str | Sequence[str],
        keys: Keys,
        timeout: float,
        username: str = "",
        password: str = "",
        tls: TlsFiles | None = None,
    ) -> AsyncIterator[Registry]:
        """A registry on the etcd cluster at `endpoints` (client URLs: a list, or fleet's
        comma-separated string), failing over between its members; https:// endpoints use TLS
        (with `tls`' files). ValueError for malformed or mixed http/https endpoints."""
        client = EtcdClient(
            parse_endpoints(endpoints),
            timeout=timeout,
            options=GRPC_OPTIONS,
            username=username,
            password=password,
            tls=tls,
        )
        try:
            yield cls(client, keys)
        finally:
            with translated_errors("closing the etcd connection"):
                await client.close()

    # -- generic reads -----------------------------------------------------------------------

    async def _prefix(self, prefix: bytes) -> list[tuple[str, bytes]]:
        with translated_errors(f"reading {prefix.decode()}"):
            result = await self.client.get_prefix(prefix)
        return [(self.keys.name_under(prefix, kv.key), kv.value) for kv in result.kvs]

    async def grant_lease(self, ttl: float) -> int:
        with translated_errors("granting a lease"):
            lease = await self.client.lease(lease_seconds(ttl))
        return lease.id

    async def keep_alive(self, lease: int) -> int:
        """Refresh the lease; the TTL (seconds) etcd granted it."""
        with translated_errors("refreshing the machine lease"):
            reply = await self.client.refresh_lease(lease)
        if reply is None or reply.TTL <= 0:
            raise LeaseExpired(f"lease {lease:x} expired")
        return int(reply.TTL)

    async def renewed_lately(self, leases: Mapping[str, int]) -> set[str]:
        """The machines whose lease has more than half its TTL left: renewed within the last
        half TTL (a healthy machine renews every fifth). Unknown counts as not renewed."""

        async def left(lease: int) -> tuple[int, int]:
            with translated_errors("reading a lease"):
                info = await self.client.get_lease_info(lease, keys=False)
            return info.TTL, info.grantedTTL

        found = await asyncio.gather(
            *(left(lease) for lease in leases.values()), return_exceptions=True
        )
        return {
            machine
            for machine, result in zip(leases, found, strict=True)
            if isinstance(result, tuple) and 2 * result[0] > result[1]
        }

    async def revoke_lease(self, lease: int) -> None:
        with translated_errors("revoking the machine lease"):
            try:
                await self.client.revoke_lease(lease)
            except aetcd.exceptions.ClientError as error:
                if "not found" not in str(error):
                    raise

    # -- machines and unit states (writer: the machine itself) -------------------------------

    async def claim_machine(
        self, machine: Machine, lease: int, previous: int | None = None
    ) -> None:
        """Register the machine under `lease`, unless its key is held by another live lease:
        then another fleetd runs with the same machine id (a cloned disk, say), and two
        machines under one id would each run the other's units (DuplicateMachine).
        `previous`: a lease of this machine's own being replaced (agent_ttl changed)."""
        key = self.keys.machine(machine.id)
        with translated_errors(f"registering machine {machine.id}"):
            found = await self.client.get(key)
            if found is not None and found.lease not in (0, lease, previous):
                holder = decoded(decode_machine, found.value, f"machine record {machine.id}")
                where = holder.ip if holder is not None else "an unreadable record"
                raise DuplicateMachine(
                    f"machine id {machine.id} is already registered by a live fleetd at {where}"
                    f" (lease {found.lease:x}); give every machine its own /etc/machine-id."
                    " Trying again until that lease ends"
                )
            unchanged = (
                self.ops.version(key) == 0
                if found is None
                else self.ops.mod(key) == found.mod_revision
            )
            succeeded, _ = await self.client.transaction(
                compare=[unchanged],
                success=[self.ops.put(key, encode_machine(machine), lease=lease)],
                failure=[],
            )
        if not succeeded:
            raise Conflict(f"registering machine {machine.id}: its record changed meanwhile")

    async def publish_machine(self, machine: Machine, lease: int) -> None:
        with translated_errors(f"registering machine {machine.id}"):
            await self.client.put(
                self.keys.machine(machine.id), encode_machine(machine), lease=lease
            )

    async def machines(self) -> dict[str, Machine]:
        """Registered machines, their metadata merged with what the API set."""
        found = await self._prefix(self.keys.machines)
        machines = [decode_machine_leniently(key, raw) for key, raw in found]
        dynamic = await self._prefix(self.keys.metadata)
        return {m.id: m for m in with_dynamic_metadata(machines, dynamic)}

    async def machines_version(self) -> tuple[int, int]:
        """Changes whenever a machine registers, changes its record or vanishes (never with
        a keepalive): whether `machines` would answer anything new, for a tiny read."""
        with translated_errors("reading the machine list's version"):
            return await self.client.prefix_version(self.keys.machines)

    async def peer_key(self) -> bytes:
        """The cluster's key for authenticating fencing probes; the first caller creates it."""
        key = self.keys.peer_key
        with translated_errors("reading the cluster's peer key"):
            await self.client.transaction(
                compare=[self.ops.version(key) == 0],
                success=[self.ops.put(key, secrets.token_hex(32).encode())],
                failure=[],
            )
            found = await self.client.get(key)
        if found is None:
            raise RegistryError("the cluster's peer key vanished while it was being read")
        return found.value

    async def forget_member(self, machine: str) -> None:
        """A machine leaving gracefully takes itself out of the recent membership at once."""
        with translated_errors(f"removing machine {machine} from the membership"):
            await self.client.delete(self.keys.member(machine))

    async def set_metadata(self, changes: Sequence[tuple[str, str, str]]) -> None:
        """Set (machine, key, value) metadata; "" removes a key, also one from fleet.conf."""
        ops = [self.ops.put(self.keys.machine_metadata(m, k), v.encode()) for m, k, v in changes]
        for batch in chunks(ops, MAX_TXN_OPS):
            await self._txn([], list(batch), "setting machine metadata")

    # -- drain marks (writer: the client, fleetctl drain / the API; no lease) --------------------

    async def drains(self) -> dict[str, float]:
        """Machines marked for draining -> since when (unix time; 0 for an unreadable mark)."""
        return {machine: drain_since(raw) for machine, raw in await self._prefix(self.keys.drains)}

    async def mark_drain(self, machine: str, since: float) -> bool:
        """Mark a registered machine for draining, keeping an earlier mark as it is; whether
        the mark is new. Conflict when the machine is not registered (it went meanwhile)."""
        key = self.keys.drain(machine)
        value = json.dumps({"since": since}).encode()
        with translated_errors(f"marking machine {machine} for draining"):
            succeeded, responses = await self.client.transaction(
                compare=[self.ops.version(self.keys.machine(machine)) > 0],
                success=[
                    self.ops.txn(
                        compare=[self.ops.version(key) == 0],
                        success=[self.ops.put(key, value)],
                        failure=[],
                    )
                ],
                failure=[],
            )
        if not succeeded:
            raise Conflict(f"machine {machine} is not registered")
        return bool(responses[0].response_txn.succeeded)

    async def remove_drain(self, machine: str) -> bool:
        """Remove a machine's drain mark; whether there was one."""
        with translated_errors(f"removing the drain mark of machine {machine}"):
            return bool(await self.client.delete(self.keys.drain(machine)))

    async def write_states(
        self, puts: Mapping[str, UnitState], deletes: Sequence[str], machine: str, lease: int
    ) -> None:
        """Publish and delete this machine's unit states, a transaction per hundred."""
        ops = [
            self.ops.put(self.keys.state(u, machine), encode_state(s), lease=lease)
            for u, s in sorted(puts.items())
        ]
        ops += [self.ops.delete(self.keys.state(unit, machine)) for unit in deletes]
        for batch in chunks(ops, MAX_TXN_OPS):
            await self._txn([], list(batch), "publishing unit states")

    async def revision_of(self, key: bytes) -> int | None:
        """The store's current revision, read with `key` (None when the key is missing)."""
        with translated_errors("reading the etcd revision"):
            found = await self.client.get(key)
        return None if found is None else found.header.revision

    async def unit_states(self) -> dict[tuple[str, str], UnitState]:
        states = {}
        for key, raw in await self._prefix(self.keys.states):
            unit, _, machine = key.rpartition("/")
            state = decoded(decode_state, raw, f"unit state {key}")
            if state is not None:
                states[(unit, machine)] = state
        return states

    # -- the agent's reads -------------------------------------------------------------------

    async def assignments(self, machine: str) -> tuple[dict[str, Assignment], set[str]]:
        """This machine's assignments, and the units whose assignment cannot be read. Those
        are neither started nor stopped until the engine writes them again: a malformed record
        is not an unassignment."""
        prefix = self.keys.assigned_to(machine)
        found, unreadable = {}, set()
        for unit, raw in await self._prefix(prefix):
            assignment = decoded(decode_assignment, raw, f"assignment {machine}/{unit}")
            if assignment is None:
                unreadable.add(unit)
            else:
                found[unit] = assignment
        return found, unreadable

    async def unit_body(self, unit_hash: str) -> str | None:
        with translated_errors(f"reading unit body {unit_hash}"):
            found = await self.client.get(self.keys.unit_body(unit_hash))
        return None if found is None else found.value.decode()

    async def unit_bodies(self, hashes: Iterable[str] | None = None) -> dict[str, str]:
        """Unit bodies by hash: all of them, or the given ones (a few one by one, many in one
        ranged read of every body)."""
        wanted = None if hashes is None else set(hashes)
        if wanted is None or len(wanted) > FEW_BODIES:
            found = {key: raw.decode() for key, raw in await self._prefix(self.keys.units)}
            return found if wanted is None else {h: b for h, b in found.items() if h in wanted}
        bodies = {h: await self.unit_body(h) for h in sorted(wanted)}
        return {h: body for h, body in bodies.items() if body is not None}

    async def unit_body_revisions(self) -> dict[str, int]:
        """Every stored unit body's hash and mod revision (keys only: no bodies are read)."""
        with translated_errors("listing unit bodies"):
            result = await self.client.get_prefix(self.keys.units, keys_only=True)
        prefix = self.keys.units
        return {self.keys.name_under(prefix, kv.key): kv.mod_revision for kv in result.kvs}

    async def delete_unit_bodies(
        self, bodies: Sequence[tuple[str, int]], leader_revision: int
    ) -> int:
        """Delete bodies still at the given mod revisions; how many went. One transaction each,
        so a body stored again meanwhile only spares itself."""
        guard = self.ops.create(self.keys.leader) == leader_revision
        deleted = 0
        for unit_hash, revision in bodies:
            key = self.keys.unit_body(unit_hash)
            with translated_errors("collecting unused unit bodies"):
                succeeded, _ = await self.client.transaction(
                    compare=[guard, self.ops.mod(key) == revision],
                    success=[self.ops.delete(key)],
                    failure=[],
                )
            deleted += bool(succeeded)
        return deleted

    # -- watches -----------------------------------------------------------------------------

    async def watch(
        self, prefix: bytes, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Events under prefix until the stream breaks (then RegistryError)."""
        with translated_errors(f"watching {prefix.decode()}"):
            watch = await self.client.watch_prefix(prefix, start_revision=start_revision)
        try:
            with translated_errors(f"watching {prefix.decode()}"):
                async for event in watch:
                    yield WatchEvent(
                        self.keys.name_under(prefix, event.kv.key),
                        event.kind == "DELETE",
                        event.kv.value,
                        event.kv.mod_revision,
                    )
        finally:
            # Bounded: a cancel that gets no answer must not hold up the caller's shutdown
            # (fleetctl events --follow after Ctrl-C, fleetd stopping).
            # AttributeError: the client dropped its channel (closed, or moved to another
            # member) and aetcd's cancel reaches for a watcher that is gone; nothing to cancel.
            with (
                translated_errors("cancelling a watch"),
                contextlib.suppress(TimeoutError, AttributeError),
            ):
                async with asyncio.timeout(WATCH_CANCEL_SECONDS):
                    await watch.cancel()

    # -- jobs (writer: the client) -----------------------------------------------------------

    async def jobs(self, names: Collection[str] | None = None) -> dict[str, JobRecord]:
        """Every readable job, or those of `names` (a malformed record is skipped with a
        warning: the engine leaves its unit as it is, and a client cannot overwrite it by
        accident either)."""
        jobs = {}
        for name, kv in (await self._job_kvs(names)).items():
            raw = kv.value
            job = decoded(lambda raw, name=name: decode_job(name, raw), raw, f"job {name}")
            if job is not None:
                jobs[name] = job
        return jobs

    async def _job_kvs(self, names: Collection[str] | None) -> dict[str, Any]:
        """The stored job records (etcd key-values) of `names`, or of every job. A few names
        are read one key each: a request about one unit (fleet's API works unit by unit) must
        not cost a read of every job, which makes a 1,000-unit command quadratic."""
        with translated_errors("reading units"):
            if names is not None and len(names) <= FEW_KEYS:
                found = [await self.client.get(self.keys.job(name)) for name in names]
                return {name: kv for name, kv in zip(names, found, strict=True) if kv is not None}
            listed = await self.client.get_prefix(self.keys.jobs)
        wanted = None if names is None else set(names)
        kvs = ((self.keys.name_under(self.keys.jobs, kv.key), kv) for kv in listed.kvs)
        return {name: kv for name, kv in kvs if wanted is None or name in wanted}

    async def create_jobs(self, jobs: Sequence[tuple[JobRecord, str]], replace: bool) -> None:
        """Store unit bodies and jobs, all or nothing. Without `replace`, an existing job with a
        different body is a Conflict and nothing is written."""
        existing = await self.jobs([job.name for job, _ in jobs])
        # Submitting a unit again with the same body changes nothing (it keeps its state).
        jobs = [
            (j, body)
            for j, body in jobs
            if j.name not in existing or existing[j.name].hash != j.hash
        ]
        if not replace:
            clashes = [
                j.name for j, _ in jobs if j.name in existing and existing[j.name].hash != j.hash
            ]
            if clashes:
                raise Conflict(f"unit {clashes[0]} already exists with a different unit file")
        bodies = {job.hash: body for job, body in jobs}
        for batch in sized_chunks(sorted(bodies.items()), MAX_TXN_OPS, MAX_TXN_BYTES):
            # Bodies are content-addressed, so writing one that exists changes nothing.
            ops = [self.ops.put(self.keys.unit_body(h), body.encode()) for h, body in batch]
            await self._txn([], ops, "storing unit files")
        created: list[str] = []
        try:
            for batch in chunks(list(jobs), MAX_TXN_OPS):
                compares = (
                    [] if replace else [self._unchanged_job(j.name, existing) for j, _ in batch]
                )
                ops = [self.ops.put(self.keys.job(j.name), encode_job(j)) for j, _ in batch]
                await self._txn(compares, ops, "creating units")
                created += [j.name for j, _ in batch if j.name not in existing]
        except RegistryError:
            await self.destroy_jobs(created)  # a concurrent writer won: leave nothing half-made
            raise

    def _unchanged_job(self, name: str, existing: dict[str, JobRecord]) -> object:
        key = self.keys.job(name)
        if name in existing:
            return self.ops.value(key) == encode_job(existing[name])
        return self.ops.version(key) == 0

    async def set_desired(self, names: Iterable[str], desired: DesiredState) -> None:
        """Set the desired state of existing jobs, keeping each one's unit file. Each write
        compares the job's mod revision with the one read, so a `submit --replace` landing in
        between is never undone by writing the old hash back: the batch is read again."""
        names = list(names)
        for _ in range(SET_DESIRED_ATTEMPTS):
            existing = await self._job_kvs(names)
            missing = [name for name in names if name not in existing]
            if missing:
                raise Conflict(f"unit {missing[0]} does not exist")
            try:
                for batch in chunks(names, MAX_TXN_OPS):
                    compares = [
                        self.ops.mod(self.keys.job(n)) == existing[n].mod_revision for n in batch
                    ]
                    records = [
                        JobRecord(n, decode_job(n, existing[n].value).hash, desired) for n in batch
                    ]
                    ops = [self.ops.put(self.keys.job(r.name), encode_job(r)) for r in records]
                    await self._txn(compares, ops, "setting desired states")
                return
            except Conflict:
                continue
        raise Conflict("setting desired states: the units kept changing meanwhile; try again")

    async def destroy_jobs(self, names: Iterable[str]) -> None:
        for batch in chunks(list(names), MAX_TXN_OPS):
            await self._txn(
                [], [self.ops.delete(self.keys.job(name)) for name in batch], "destroying"
            )

    async def reasons(self) -> dict[str, str]:
        return {name: raw.decode() for name, raw in await self._prefix(self.keys.reasons)}

    # -- the engine --------------------------------------------------------------------------

    async def campaign(self, machine: str, lease: int) -> int | None:
        """Become leader if nobody is; the leader key's create revision if we lead, else None."""
        key = self.keys.leader
        # One round trip: the read in the same transaction sees the put, or the holder's key.
        with translated_errors("campaigning for engine leadership"):
            _, responses = await self.client.transaction(
                compare=[self.ops.version(key) == 0],
                success=[self.ops.put(key, machine.encode(), lease=lease), self.ops.get(key)],
                failure=[self.ops.get(key)],
            )
        found = responses[-1]
        if not found or found[0][0].decode() != machine:
            return None
        return found[0][1].create_revision

    async def resign(self, machine: str) -> None:
        """Give up engine leadership, if this machine holds it, so another takes over at once."""
        key = self.keys.leader
        with translated_errors("resigning engine leadership"):
            await self.client.transaction(
                compare=[self.ops.value(key) == machine.encode()],
                success=[self.ops.delete(key)],
                failure=[],
            )

    async def leader(self) -> str | None:
        with translated_errors("reading the engine leader"):
            found = await self.client.get(self.keys.leader)
        return None if found is None else found.value.decode()

    async def snapshot(self) -> RawSnapshot:
        """Jobs, machines, placements, assignments and reasons at a single revision."""
        prefixes = [
            self.keys.jobs,
            self.keys.machines,
            self.keys.placements,
            self.keys.assignments,
            self.keys.reasons,
            self.keys.metadata,
            self.keys.members,
            self.keys.states,
            self.keys.drains,
        ]
        ops = [self.ops.get(p, aetcd.utils.prefix_range_end(p)) for p in prefixes]
        with translated_errors("reading the cluster snapshot"):
            _, responses = await self.client.transaction(compare=[], success=ops, failure=[])
        parts: list[list[tuple[str, bytes]]] = []
        for prefix, response in zip(prefixes, responses, strict=True):
            parts.append([(self.keys.name_under(prefix, kv.key), value) for value, kv in response])
        jobs, machines, placements, assigned, reasons, dynamic, members, states, drains = parts
        running: dict[str, set[str]] = {}
        landed: dict[str, set[str]] = {}
        for key, raw in states:
            unit, _, machine = key.rpartition("/")
            state = decoded(decode_state, raw, f"unit state {key}")
            if state is not None and state.active in RUNNING_STATES:
                running.setdefault(unit, set()).add(machine)
            if state is not None and state.active in LANDED_STATES:
                landed.setdefault(unit, set()).add(machine)
        job_revisions = {
            self.keys.name_under(self.keys.jobs, kv.key): kv.mod_revision for _, kv in responses[0]
        }
        # One malformed record (a bug elsewhere, or a hand edit) must not stop the engine, nor
        # be taken for "no such job" or "no such machine": it is skipped with a reason.
        assignments: dict[str, dict[str, Assignment]] = {}
        for key, raw in assigned:
            machine, _, unit = key.partition("/")
            found = decoded(decode_assignment, raw, f"assignment {key}")
            if found is not None:  # a malformed one is written again by the engine's plan
                assignments.setdefault(machine, {})[unit] = found
        records, broken = {}, {}
        for name, raw in jobs:
            try:
                records[name] = decode_job(name, raw)
            except MALFORMED as error:
                broken[name] = f"malformed job record in etcd ({describe(error)}); left as it is"
        return RawSnapshot(
            jobs=records,
            machines={
                m.id: m
                for m in with_dynamic_metadata(
                    [decode_machine_leniently(key, raw) for key, raw in machines], dynamic
                )
            },
            placements={unit: raw.decode(errors="replace") for unit, raw in placements},
            assignments=assignments,
            reasons={unit: raw.decode(errors="replace") for unit, raw in reasons},
            members=frozenset(machine for machine, _ in members),
            broken_jobs=broken,
            job_revisions=job_revisions,
            running={unit: frozenset(machines) for unit, machines in running.items()},
            machine_leases={
                self.keys.name_under(self.keys.machines, kv.key): kv.lease for _, kv in responses[1]
            },
            drained=frozenset(machine for machine, _ in drains),
            landed={unit: frozenset(machines) for unit, machines in landed.items()},
        )

    async def apply_engine_tasks(
        self,
        tasks: Sequence[EngineTask],
        leader_revision: int,
        job_revisions: Mapping[str, int] | None = None,
    ) -> None:
        """Write the engine's tasks in guarded transactions, in order; Conflict if leadership or
        the data changed. etcd refuses a key twice in one transaction (an unschedule and the
        schedule that follows it, say), so such a task starts the next transaction.

        With `job_revisions` (each job's mod revision in the snapshot the plan came from), a
        task that places or assigns a unit also compares its job: a plan from a stale snapshot
        can never start a unit a user has stopped or destroyed since."""
        job_revisions = job_revisions or {}
        guard = self.ops.create(self.keys.leader) == leader_revision
        compares: list = [guard]  # type: ignore[type-arg]
        ops: list = []  # type: ignore[type-arg]
        touched: set[bytes] = set()
        compared: set[str] = set()
        for task in tasks:
            task_compares, task_ops = self._engine_ops(task)
            keys = {op.key for op in task_ops}
            # etcd bounds compares and operations alike (128 each by default); a task adds up
            # to two compares (its own and its job's mod revision) besides its operations.
            full = max(len(ops) + len(task_ops), len(compares) + len(task_compares) + 1)
            if touched & keys or full > MAX_TXN_OPS:
                await self._txn(compares, ops, "applying the engine's plan")
                compares, ops, touched, compared = [guard], [], set(), set()
            unit = placed_unit(task)
            if unit in job_revisions and unit not in compared:
                compares.append(self.ops.mod(self.keys.job(unit)) == job_revisions[unit])
                compared.add(unit)
            compares += task_compares
            ops += task_ops
            touched |= keys
        if ops:
            await self._txn(compares, ops, "applying the engine's plan")

    def _engine_ops(self, task: EngineTask) -> tuple[list, list]:  # type: ignore[type-arg]
        keys, ops = self.keys, self.ops
        match task:
            case Schedule(unit, machine, _):
                placement = keys.placement(unit)
                return [ops.version(placement) == 0], [ops.put(placement, machine.encode())]
            case Unschedule(unit, machine, _):
                placement = keys.placement(unit)
                return [ops.value(placement) == machine.encode()], [ops.delete(placement)]
            case Assign(machine, unit, assignment, _):
                return [], [ops.put(keys.assignment(machine, unit), encode_assignment(assignment))]
            case Unassign(machine, unit, _):
                return [], [ops.delete(keys.assignment(machine, unit))]
            case MarkPending(unit, reason):
                return [], [ops.put(keys.reason(unit), reason.encode())]
            case ClearPending(unit, _):
                return [], [ops.delete(keys.reason(unit))]
            case Remember(machine, ip):
                return [], [ops.put(keys.member(machine), json.dumps({"ip": ip}).encode())]
            case Forget(machine, _):
                return [], [ops.delete(keys.member(machine))]
        raise TypeError(f"unknown engine task {task!r}")

    # -- events (writer: each machine's event recorder, under events/<its id>/) ---------------

    async def events(self) -> tuple[list[bytes], int]:
        """Every stored event (one ranged read) and the revision it was read at."""
        with translated_errors("reading the event history"):
            result = await self.client.get_prefix(self.keys.events)
        return [kv.value for kv in result.kvs], result.header.revision

    async def event_ids(self, machine: str) -> list[str]:
        """The ids of one machine's stored event pages (keys only)."""
        prefix = self.keys.events_of(machine)
        with translated_errors("listing this machine's events"):
            result = await self.client.get_prefix(prefix, keys_only=True)
        return [self.keys.name_under(prefix, kv.key) for kv in result.kvs]

    async def event_pages(self, machine: str) -> list[tuple[str, bytes]]:
        """One machine's stored event pages: (id, value)."""
        return await self._prefix(self.keys.events_of(machine))

    async def write_events(
        self,
        machine: str,
        puts: Sequence[tuple[str, bytes]],
        deletes: Sequence[str],
        lease: int,
    ) -> None:
        """Store pages of one machine's events under `lease` and delete its old ones, in one
        transaction (at most MAX_TXN_OPS operations together)."""
        ops = [self.ops.put(self.keys.event(machine, i), v, lease=lease) for i, v in puts]
        ops += [self.ops.delete(self.keys.event(machine, i)) for i in deletes]
        await self._txn([], ops, "recording events")

    async def _txn(self, compares: list, ops: list, action: str) -> None:  # type: ignore[type-arg]
        with translated_errors(action):
            succeeded, _ = await self.client.transaction(compare=compares, success=ops, failure=[])
        if not succeeded:
            raise Conflict(f"{action}: the registry changed meanwhile")


def placed_unit(task: EngineTask) -> str | None:
    """The unit a task places or assigns (the tasks that can start it somewhere)."""
    match task:
        case Schedule(unit, _, _) | Assign(_, unit, _, _):
            return unit
    return None


LANDED_STATES = frozenset({"active", "failed"})  # a unit moved off a draining machine arrived


def drain_since(raw: bytes) -> float:
    try:
        return float(json.loads(raw)["since"])
    except (ValueError, KeyError, TypeError):
        return 0.0


def encode_job(job: JobRecord) -> bytes:
    return json.dumps({"hash": job.hash, "desired": job.desired.value}).encode()


def decode_job(name: str, raw: bytes) -> JobRecord:
    value = json.loads(raw)
    return JobRecord(name, value["hash"], DesiredState(value["desired"]))
