"""The engine: on the one machine that holds leadership, place units and keep placements right.

Every machine runs this loop; only the holder of the leader key (attached to its machine
lease) plans. A pass reads one snapshot, plans with the pure `plan_cluster`, and writes the
tasks in transactions that etcd refuses if leadership moved meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time

from . import metrics
from .cluster_plan import plan_cluster
from .heart import Heart
from .model import ClusterSnapshot, EngineTask, Job
from .registry import Conflict, JobRecord, RawSnapshot, Registry, RegistryError
from .unitfile import Requirements, UnitFileError, parse_unit_file, requirements
from .unitname import UnitNameError, parse_unit_name
from .wakeup import wait_for_wakeup, watch_forever

log = logging.getLogger(__name__)
SETTLE_SECONDS = 0.02  # let a burst of watch events (many units submitted at once) land first
FULL_PASS_SECONDS = 60.0  # plan even when etcd looks unchanged, at least this often


class Engine:
    def __init__(self, registry: Registry, heart: Heart, interval: float) -> None:
        self.registry = registry
        self.heart = heart
        self.interval = interval
        self.wakeup = asyncio.Event()
        self.bodies: dict[str, str] = {}
        self.requirements: dict[tuple[str, str], Requirements | None] = {}
        self.leading_since: int | None = None
        self.planned_at: tuple[int, float] | None = None  # (etcd revision, monotonic time)

    async def run(self) -> None:
        keys = self.registry.keys
        watches = [
            asyncio.create_task(watch_forever(self.registry, prefix, self.wakeup))
            for prefix in (keys.jobs, keys.machines, keys.metadata, keys.leader)
        ]
        try:
            while True:
                await self.heart.registered.wait()
                await self.step()
                await wait_for_wakeup(self.wakeup, self.interval)
                await asyncio.sleep(SETTLE_SECONDS)
        finally:
            for watch in watches:
                watch.cancel()

    def failure_level(self) -> int:
        """While the heart already reports an etcd outage, a failed pass is no news."""
        return logging.DEBUG if self.heart.failing_since is not None else logging.WARNING

    async def step(self) -> None:
        lease = self.heart.lease
        if lease is None:
            return
        try:
            revision = await self.registry.campaign(self.heart.machine.id, lease)
            self.note_leadership(revision)
            if revision is not None:
                await self.reconcile(revision)
        except Conflict as error:
            log.debug("engine pass interrupted: %s", error)
            self.wakeup.set()
        except RegistryError as error:
            log.log(self.failure_level(), "engine pass failed: %s", error)
        except Exception:
            log.exception("engine pass failed unexpectedly; the next pass starts afresh")

    def note_leadership(self, revision: int | None) -> None:
        metrics.LEADER.set(0 if revision is None else 1)
        if revision != self.leading_since:
            if revision is None:
                log.info("engine: %s leads", "another machine")
            else:
                log.info("engine: this machine leads now")
        self.leading_since = revision

    def quiet_since_last_pass(self, revision: int | None) -> bool:
        """Nothing was written to etcd since a pass that found nothing to do (an idle cluster
        costs one tiny read per interval instead of a full snapshot)."""
        if self.planned_at is None or revision != self.planned_at[0]:
            return False
        return time.monotonic() - self.planned_at[1] < FULL_PASS_SECONDS

    async def reconcile(self, leader_revision: int) -> None:
        revision = await self.registry.revision_of(self.registry.keys.leader)
        if self.quiet_since_last_pass(revision):
            return
        self.planned_at = None  # set again only by a pass that succeeds and changes nothing
        started = time.monotonic()
        snapshot = await self.resolve(await self.registry.snapshot())
        tasks = plan_cluster(snapshot)
        if tasks:
            await self.registry.apply_engine_tasks(tasks, leader_revision)
            for task in tasks:
                log_task(task)
                metrics.TASKS.labels("engine", type(task).__name__).inc()
            metrics.RECONCILE_SECONDS.labels("engine").observe(time.monotonic() - started)
        elif revision is not None:
            self.planned_at = (revision, time.monotonic())
        elapsed = time.monotonic() - started
        if elapsed > self.interval:
            log.warning(
                "engine pass took %.2fs, longer than the %.2fs interval", elapsed, self.interval
            )

    async def resolve(self, raw: RawSnapshot) -> ClusterSnapshot:
        """Attach each job's parsed [X-Fleet] requirements (bodies are immutable: cached)."""
        missing = {r.hash for r in raw.jobs.values() if r.hash not in self.bodies}
        if missing:
            self.bodies.update(await self.registry.unit_bodies(missing))
        jobs = {}
        for name, record in raw.jobs.items():
            found = self.job_requirements(record)
            if found is not None:
                jobs[name] = Job(name, record.hash, record.desired, found)
        return ClusterSnapshot(jobs, raw.machines, raw.placements, raw.assignments, raw.reasons)

    def job_requirements(self, record: JobRecord) -> Requirements | None:
        body = self.bodies.get(record.hash)
        if body is None:  # not cached: it may still arrive
            log.warning(
                "unit %s: unit file %s is missing from etcd; not scheduling it",
                record.name,
                record.hash,
            )
            return None
        key = (record.name, record.hash)
        if key not in self.requirements:
            self.requirements[key] = parse_requirements(record, body)
        return self.requirements[key]


def parse_requirements(record: JobRecord, body: str) -> Requirements | None:
    try:
        return requirements(parse_unit_file(body, record.name), parse_unit_name(record.name))
    except (UnitFileError, UnitNameError) as error:
        log.warning("unit %s: %s; not scheduling it", record.name, error)
        return None


def log_task(task: EngineTask) -> None:
    fields = {name: value for name, value in vars(task).items() if name != "assignment"}
    text = " ".join(f"{name}={value}" for name, value in fields.items())
    unit = fields["unit"]
    log.info(
        "engine task=%s %s",
        type(task).__name__,
        text,
        extra={"FLEET_UNIT": unit, "OBJECT_SYSTEMD_UNIT": unit},
    )
