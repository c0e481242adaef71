"""The engine: on the one machine that holds leadership, place units and keep placements right.

Every machine runs this loop; only the holder of the leader key (attached to its machine
lease) plans. A pass reads one snapshot, plans with the pure `plan_cluster`, and writes the
tasks in transactions that etcd refuses if leadership moved meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping

from . import metrics
from .body_gc import BodyCollector
from .cluster_plan import DRAIN_MOVE, WAITING, plan_cluster
from .events import ENGINE_LEADER, RESCHEDULE_WITHHELD, Draft
from .events_decide import DrainWatch, MachineWatch, task_drafts, withheld_changed
from .heart import Heart
from .membership import KEPT, Membership, MembershipChange
from .model import ClusterSnapshot, EngineTask, Forget, JobRecord, Machine, Remember
from .reconcile import MONOTONIC, Clock, ReconcileLoop
from .registry import Conflict, RawSnapshot, Registry, RegistryError
from .state_dump import EngineView
from .unitfile import Requirements, UnitFileError, parse_unit_file, requirements
from .unitname import UnitNameError, parse_unit_name
from .wakeup import watch_forever

log = logging.getLogger(__name__)
SETTLE_SECONDS = 0.02  # let a burst of watch events (many units submitted at once) land first
FULL_PASS_SECONDS = 60.0  # plan even when etcd looks unchanged, at least this often
COLLECT_EVERY_SECONDS = 30.0  # how often a pass also looks for unit bodies nobody uses
MOVING = (WAITING, DRAIN_MOVE)  # reasons of units between machines


def ignore(draft: Draft) -> None:
    """Where events go when nobody records them (tests, tools)."""


class Engine:
    def __init__(
        self,
        registry: Registry,
        heart: Heart,
        interval: float,
        clock: Clock = MONOTONIC,
        record: Callable[[Draft], None] | None = None,
    ) -> None:
        self.registry = registry
        self.heart = heart
        self.interval = interval
        self.clock = clock
        # The event recorder's queue (events_store.py): never waits, so passes do not either.
        self.record = record or ignore
        self.machine_watch = MachineWatch()
        self.drain_watch = DrainWatch()
        self.unplaced: dict[str, tuple[str, str]] = {}  # moves still waiting for a machine
        self.loop = ReconcileLoop(self.step, interval, SETTLE_SECONDS, heart.registered.wait, clock)
        self.bodies: dict[str, str] = {}
        self.requirements: dict[tuple[str, str], Requirements | str] = {}
        self.leading_since: int | None = None
        # Whether the leader key may have changed since the last campaign (its watch said so,
        # or the watch broke), and when that campaign was: see another_leads_undisturbed.
        self.leader_news = True
        self.campaigned_at = float("-inf")
        self.leading, self.not_leading = asyncio.Event(), asyncio.Event()
        self.cluster_watches: list[asyncio.Task[None]] = []  # only while leading
        self.planned_at: tuple[int, float] | None = None  # (etcd revision, monotonic time)
        self.membership = Membership()
        self.withheld: str | None = None
        self.collector = BodyCollector()
        self.collected_at = float("-inf")
        # The last plan, for state_view: when, its tasks, and the pending reasons it read.
        self.last_plan: tuple[float, list[EngineTask], Mapping[str, str]] | None = None

    async def run(self) -> None:
        leader = watch_forever(self.registry, self.registry.keys.leader, self.leader_changed)
        await self.loop.run(leader, self.watch_while_leading())

    def leader_changed(self) -> None:
        self.leader_news = True
        self.loop.wake()

    async def watch_while_leading(self) -> None:
        """Only the leader plans, so only it watches jobs, machines and metadata: with every
        engine watching, every job write reached every machine and woke its engine, which at
        300 machines cost more than the leader's work (bench/hollow.py). The others watch the
        leader key alone, and a pass every interval catches what a watch was not there for."""
        keys = self.registry.keys
        while True:
            await self.leading.wait()
            self.cluster_watches = [
                asyncio.create_task(watch_forever(self.registry, prefix, self.loop.wake))
                for prefix in (keys.jobs, keys.machines, keys.metadata, keys.drains)
            ]
            try:
                await self.not_leading.wait()
            finally:
                watches, self.cluster_watches = self.cluster_watches, []
                for watch in watches:
                    watch.cancel()
                await asyncio.gather(*watches, return_exceptions=True)

    async def step(self) -> None:
        lease = self.heart.lease
        if lease is None or self.another_leads_undisturbed():
            return
        self.leader_news, self.campaigned_at = False, self.clock.now()
        try:
            revision = await self.registry.campaign(self.heart.machine.id, lease)
            self.note_leadership(revision)
            if revision is not None:
                await self.reconcile(revision)
        except Conflict as error:
            log.debug("engine pass interrupted: %s", error)
            self.loop.wake()
        except RegistryError as error:
            self.leader_news = True  # the campaign may not have happened: try again next pass
            log.log(self.heart.failure_level(), "engine pass failed: %s", error)
            metrics.engine_pass_failed("run")
        except Exception:
            log.exception("engine pass failed unexpectedly; the next pass starts afresh")

    def another_leads_undisturbed(self) -> bool:
        """Another machine led at the last campaign and its key has not changed since: campaign
        again only on news from the leader watch. At 300 machines the followers' campaign
        every interval was most of etcd's requests at rest. A change the watch missed (while
        it was being set up) is caught by a campaign at least once per agent_ttl, the time a
        vanished leader's lease takes anyway."""
        if self.leading_since is not None or self.leader_news:
            return False
        return self.clock.now() - self.campaigned_at < self.heart.ttl

    def note_leadership(self, revision: int | None) -> None:
        metrics.note_leadership(revision is not None)
        (self.leading if revision is not None else self.not_leading).set()
        (self.not_leading if revision is not None else self.leading).clear()
        if revision != self.leading_since:
            self.membership = Membership()  # a new term: every vanished machine's clock anew
            self.machine_watch = MachineWatch()
            self.drain_watch = DrainWatch()
            self.unplaced = {}
            if revision is None:
                log.info("engine: %s leads", "another machine")
            else:
                log.info("engine: this machine leads now")
                me = self.heart.machine.id
                self.record(Draft(ENGINE_LEADER, None, me, None, None, "leads the engine now"))
        self.leading_since = revision

    def quiet_since_last_pass(self, revision: int | None) -> bool:
        """Nothing was written to etcd since a pass that found nothing to do (an idle cluster
        costs one tiny read per interval instead of a full snapshot)."""
        if self.planned_at is None or revision != self.planned_at[0]:
            return False
        return self.clock.now() - self.planned_at[1] < FULL_PASS_SECONDS

    async def reconcile(self, leader_revision: int) -> None:
        revision = await self.registry.revision_of(self.registry.keys.leader)
        if self.quiet_since_last_pass(revision):
            return
        self.planned_at = None  # set again only by a pass that succeeds and changes nothing
        started = self.clock.now()
        raw = await self.registry.snapshot()
        change = self.membership.update(raw.members, raw.machines.keys(), self.clock.now())
        for draft in self.machine_watch.update(raw.machines.keys(), raw.members):
            self.record(draft)
        for draft in self.drain_watch.update(raw.drained):
            self.record(draft)
        snapshot = await self.resolve(raw, change.members)
        snapshot = await self.note_withheld(snapshot, raw.machine_leases)
        tasks = membership_tasks(change, raw.machines) + plan_cluster(snapshot)
        self.last_plan = (self.clock.now(), tasks, snapshot.reasons)
        if tasks:
            await self.registry.apply_engine_tasks(tasks, leader_revision, raw.job_revisions)
            for task in tasks:
                log_task(task)
            drafts, unplaced = task_drafts(tasks, self.unplaced)
            self.unplaced = {unit: was for unit, was in unplaced.items() if unit in raw.jobs}
            for draft in drafts:
                self.record(draft)
        elif revision is not None and not self.waiting_on_time(snapshot):
            self.planned_at = (revision, self.clock.now())
        metrics.engine_pass(self.clock.now() - started, [type(task).__name__ for task in tasks])
        if self.clock.now() - self.collected_at >= COLLECT_EVERY_SECONDS:
            await self.collect_bodies(raw, leader_revision)
        elapsed = self.clock.now() - started
        if elapsed > self.interval:
            log.warning(
                "engine pass took %.2fs, longer than the %.2fs interval", elapsed, self.interval
            )

    def state_view(self) -> EngineView:
        """What SIGUSR1 dumps to the journal (state_dump.py)."""
        at, tasks, reasons = self.last_plan or (None, [], {})
        return EngineView(
            leader_revision=self.leading_since,
            withheld=self.withheld,
            last_pass_seconds_ago=None if at is None else self.clock.now() - at,
            last_tasks=tuple(tasks),
            reasons=dict(reasons),
        )

    def waiting_on_time(self, snapshot: ClusterSnapshot) -> bool:
        """Whether the next pass may decide differently with nothing written to etcd: a grace
        runs out, or a unit stops on the machine it leaves or starts on a draining machine's
        next one (states are not watched). Such passes run every interval instead of being
        skipped as quiet."""
        moving = any(reason.startswith(MOVING) for reason in snapshot.reasons.values())
        return self.withheld is not None or moving

    async def collect_bodies(self, raw: RawSnapshot, leader_revision: int) -> None:
        """Delete unit bodies no job or assignment uses, so the keyspace does not grow forever;
        and forget cached ones no job uses (the caches would grow as well)."""
        self.collected_at = self.clock.now()
        used = {record.hash for record in raw.jobs.values()}
        self.bodies = {h: body for h, body in self.bodies.items() if h in used}
        self.requirements = {k: v for k, v in self.requirements.items() if k[1] in used}
        if raw.broken_jobs:
            return  # a job we cannot read may use any body
        used |= {a.hash for units in raw.assignments.values() for a in units.values()}
        bodies = await self.registry.unit_body_revisions()
        doomed = self.collector.collectable(bodies, used, self.clock.now())
        if doomed and (deleted := await self.registry.delete_unit_bodies(doomed, leader_revision)):
            log.info("engine: deleted %d unit files no unit uses any more", deleted)

    async def note_withheld(
        self, snapshot: ClusterSnapshot, leases: dict[str, int]
    ) -> ClusterSnapshot:
        """The snapshot with the engine's verdict on moving units off vanished machines."""
        machines = snapshot.machines
        stranded = sum(1 for machine in snapshot.placements.values() if machine not in machines)
        reaching = len(machines)
        if stranded:
            # Leases cut off together expire a keepalive apart: a machine whose lease has not
            # expired yet but has not been renewed lately is as good as vanished.
            reaching = len(await self.registry.renewed_lately(leases))
        kept = any(reason.startswith(KEPT) for reason in snapshot.reasons.values())
        withheld = self.membership.withholding(
            reaching,
            len(snapshot.members | machines.keys()),
            kept,
            self.clock.now(),
            self.heart.ttl,
        )
        metrics.WITHHELD.set(stranded if withheld else 0)
        if withheld_changed(self.withheld, withheld):
            self.record(Draft(RESCHEDULE_WITHHELD, None, None, None, None, str(withheld)))
        if withheld != self.withheld:
            if withheld:
                log.warning(
                    "engine: not moving %d units of vanished machines: %s", stranded, withheld
                )
            else:
                log.info("engine: rescheduling the units of vanished machines again")
        self.withheld = withheld
        return dataclasses.replace(snapshot, withheld=withheld)

    async def resolve(self, raw: RawSnapshot, members: frozenset[str]) -> ClusterSnapshot:
        """Attach each job's parsed [X-Fleet] requirements (bodies are immutable: cached)."""
        missing = {r.hash for r in raw.jobs.values() if r.hash not in self.bodies}
        if missing:
            self.bodies.update(await self.registry.unit_bodies(missing))
        return raw.resolved(self.job_requirements, members)

    def job_requirements(self, record: JobRecord) -> Requirements | str:
        """The job's requirements, or why it cannot be planned (it then stays where it is)."""
        body = self.bodies.get(record.hash)
        if body is None:  # not cached: it may still arrive
            return f"unit file {record.hash} is missing from etcd; left as it is"
        key = (record.name, record.hash)
        if key not in self.requirements:
            self.requirements[key] = parse_requirements(record, body)
        return self.requirements[key]


def membership_tasks(change: MembershipChange, machines: dict[str, Machine]) -> list[EngineTask]:
    tasks: list[EngineTask] = [Remember(m, machines[m].ip) for m in sorted(change.remember)]
    tasks += [Forget(m, "gone longer than the membership window") for m in sorted(change.forget)]
    return tasks


def parse_requirements(record: JobRecord, body: str) -> Requirements | str:
    try:
        return requirements(parse_unit_file(body, record.name), parse_unit_name(record.name))
    except (UnitFileError, UnitNameError) as error:
        return f"unit file cannot be used: {error}; left as it is"


def log_task(task: EngineTask) -> None:
    fields = {name: value for name, value in vars(task).items() if name != "assignment"}
    text = " ".join(f"{name}={value}" for name, value in fields.items())
    unit = fields.get("unit", "")
    log.info(
        "engine task=%s %s",
        type(task).__name__,
        text,
        extra={"FLEET_UNIT": unit, "OBJECT_SYSTEMD_UNIT": unit},
    )
