"""The scheduler loop, the one impure part of the scheduler: read, plan, apply, dispatch.

It runs in the server process under APScheduler. A submit calls wake() so a job starts at once;
the interval is only the fallback that also watches running containers. A tick never waits for a
container: it hands every node operation (start, stop and collect, remove, a kind's checks) to
the node's executors (kqi/scheduler/executors.py), and an operation that changed what the
planner sees (a job ended) wakes it again.
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from kqi.admin import notify
from kqi.backends import registry as backends
from kqi.backends.base import NodeDriver, NodeError
from kqi.cluster import health as node_health
from kqi.cluster import registry as node_registry
from kqi.cluster import samples as cluster_samples
from kqi.config import Settings
from kqi.crypto import SecretBox
from kqi.extensions import AppContext, db
from kqi.jobs import kinds
from kqi.jobs import runner as job_runner
from kqi.models import Node, utcnow
from kqi.scheduler import pg_wake, snapshot
from kqi.scheduler.executors import NodeExecutors
from kqi.scheduler.lease import SchedulerLease
from kqi.scheduler.plan import plan

log = logging.getLogger(__name__)
TICK_JOB = "kqi-scheduler-tick"
MIN_REST_S, MAX_REST_S = 0.05, 5.0  # rest between back-to-back ticks: none below the first, at most the second
REST_FACTOR = 3.0  # the rest after a long tick, in multiples of its CPU time: the loop takes at most a quarter
KINDS_LANE = "kinds"  # the executor lane of the kinds' own checks (kqi/jobs/kinds.py enforce), beside the nodes'
# On a long queue, a queued job's stored position follows the queue at most this late: a tick
# writes at most MOVES_AT_ONCE moves, all of them only every POSITION_REFRESH_S (snapshot.apply).
POSITION_REFRESH_S, MOVES_AT_ONCE = 5.0, 500
TICK_NICE = 10  # the tick thread's nice value when the web is served by other processes (see start)


def _lower_this_threads_priority() -> None:
    """Run this thread at nice TICK_NICE (Linux gives each thread its own nice value): on a busy
    machine the web workers' requests take the CPU first, and planning takes what they leave."""
    thread = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, thread) < TICK_NICE:  # never raise it (that needs privilege)
            os.setpriority(os.PRIO_PROCESS, thread, TICK_NICE)
    except OSError:  # a system that refuses: ticks keep the process's priority
        log.debug("could not lower the tick thread's priority", exc_info=True)


class SchedulerService:
    """The loop of one app: its settings, its box (node keys) and its context (`app_context`, for each
    tick and for the threads beside it)."""

    def __init__(self, settings: Settings, box: SecretBox, app_context: AppContext):
        self.settings, self.box, self.app_context = settings, box, app_context
        self.interval_s = settings.scheduler_interval_s
        self.grace_s = settings.node_offline_grace_s
        self.requeue_default = settings.requeue_on_node_loss
        # node id -> (what the driver was made from, driver); heartbeats use drivers with a short timeout
        self._drivers: dict[int, tuple[tuple, NodeDriver]] = {}
        self._probe_drivers: dict[int, tuple[tuple, NodeDriver]] = {}
        self._drivers_lock = threading.Lock()  # the executors' threads ask for drivers too
        self.prober = node_health.Prober(settings.heartbeat_timeout_s, on_late_answer=self._tick_soon)
        # Node I/O, off the tick: an action that changed what the planner sees wakes it.
        self.executors = NodeExecutors(app_context, settings.node_parallel_ops, on_done=self._tick_soon)
        self.gpu_refresh_s = settings.gpu_refresh_s
        self._gpus_read: dict[int, float] = {}  # node id -> when nvidia-smi was last asked (monotonic)
        self.lease = SchedulerLease(settings.scheduler_lease_s)
        self._wake = threading.Event()
        self._forward_wake = None  # a web worker process: wake() tells the scheduling process instead
        self._asked = False  # wake() was called since the last tick began (not a NOTIFY, not the interval)
        self._listener: pg_wake.Listener | None = None
        self._positions_due_at = 0.0  # monotonic
        self.queue = snapshot.QueueCache()  # the queue between ticks: a tick reads only what changed
        self._rest_until = 0.0  # monotonic time before which a wake leaves the next tick where it is (see _run)
        self._lock = threading.Lock()  # one tick at a time, whoever calls it
        self._scheduler: BackgroundScheduler | None = None
        # APScheduler's shutdown(wait=True) holds its job-store lock while it waits for a running tick,
        # and a tick that reschedules itself (modify_job) needs that lock: a deadlock. Rescheduling
        # happens under this lock and only while not closing, and shutdown sets closing under it first.
        self._reschedule_lock = threading.Lock()
        self._closing = False
        self._below_web = False  # ticks run below the web's CPU priority (start)
        self.notifier = notify.Notifier(app_context, box)
        self.samples = cluster_samples.Recorder(settings.cluster_sample_interval_s,
                                                settings.cluster_sample_retention_days)

    # -- reaching nodes

    def _cached(self, cache: dict[int, tuple[tuple, NodeDriver]], node: Node, timeout_s: float) -> NodeDriver:
        """One driver per node, replaced when its URL, keys or pinned host key change."""
        made_from = (node.url, node.credentials_sealed, node.ssh_host_key_fingerprint, node.host_key_confirmed)
        with self._drivers_lock:
            cached = cache.get(node.id)
            if cached is not None and cached[0] == made_from:
                return cached[1]
            if cached is not None:
                cached[1].close()
            driver = backends.driver_for(node.url, timeout_s=timeout_s,
                                         credentials=node_registry.credentials(self.box, node))
            cache[node.id] = (made_from, driver)
            return driver

    def driver(self, node: Node) -> NodeDriver:
        return self._cached(self._drivers, node, backends.timeout_s(self.settings.backend, node.url))

    def run_context(self) -> job_runner.RunContext:
        return job_runner.RunContext(settings=self.settings, box=self.box, driver=self.driver)

    # -- the loop

    def start(self, below_web: bool = False) -> None:
        """Start the loop. `below_web`: the web is served by other processes (kqi.web_workers), so
        ticks can run at a lower CPU priority than requests. Not where requests share this process:
        a low-priority thread holding the interpreter lock would hold up its request threads too."""
        self._below_web = below_web
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._scheduler.add_job(self._run, "interval", seconds=self.interval_s, id=TICK_JOB, max_instances=1,
                                coalesce=True, next_run_time=datetime.now(UTC))
        self._scheduler.start()
        url = self.settings.database_url
        if url.startswith("postgresql"):  # other server processes may hold the lease, or ask this one to plan
            self._listener = pg_wake.Listener(url, self._tick_soon)
            self._listener.start()

    def shutdown(self) -> None:
        with self._reschedule_lock:
            self._closing = True
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        # Node actions in progress may end (a stop in its grace, a collection); the rest is found
        # again by the next server. Their drivers are closed only after.
        self.executors.shutdown(wait_s=self.settings.stop_grace_s + backends.timeout_s(self.settings.backend))
        self.notifier.shutdown()
        self.prober.shutdown()
        with self._drivers_lock:
            for cache in (self._drivers, self._probe_drivers):
                for _made_from, driver in cache.values():
                    driver.close()
                cache.clear()
        if self.lease.held:
            with self.app_context():
                try:
                    self.lease.release(db.session)
                finally:
                    db.session.remove()

    def forward_wakes(self, send) -> None:
        """This process only serves the web (kqi.web_workers): its loop never starts, and wake()
        calls `send` to wake the loop of the process that schedules."""
        self._forward_wake = send

    def wake(self) -> None:
        """Run a tick now (or right after the one in progress); if another process holds the lease,
        that tick asks it to plan."""
        if self._forward_wake is not None:
            self._forward_wake()
            return
        self._asked = True
        self._tick_soon()

    def _tick_soon(self) -> None:
        self._wake.set()
        if self._lock.locked() or time.monotonic() < self._rest_until:
            return  # the tick in progress, or the one after the rest, sees the flag
        self._reschedule(datetime.now(UTC))

    def _reschedule(self, when: datetime) -> None:
        with self._reschedule_lock:
            if self._closing or self._scheduler is None:
                return  # shutting down: nothing left to wake
            try:
                self._scheduler.modify_job(TICK_JOB, next_run_time=when)
            except Exception:  # the scheduler stopped under us
                log.debug("reschedule ignored", exc_info=True)

    def _run(self) -> None:
        if self._below_web:
            _lower_this_threads_priority()
        while True:
            self._wake.clear()
            began = time.thread_time()
            self.tick()
            if not self._wake.is_set() or self._closing:
                return
            # Woken during the tick (a burst of submits): the next tick comes after a rest three times
            # as long as this one computed, so planning a long queue takes at most a quarter of a
            # core from the requests that feed it; a new job in a queue of 10,000 gets its position a
            # few seconds later. CPU time, not wall time: a tick that mostly waited for engines
            # (starting containers) cost nobody anything, and the jobs submitted meanwhile should
            # start at once. Short ticks (an ordinary queue) follow at once.
            took = time.thread_time() - began
            if took < MIN_REST_S or self._scheduler is None:
                continue
            rest = min(took * REST_FACTOR, MAX_REST_S)
            self._rest_until = time.monotonic() + rest
            self._reschedule(datetime.now(UTC) + timedelta(seconds=rest))
            return

    def tick(self) -> None:
        with self._lock, self.app_context():
            asked, self._asked = self._asked, False
            try:
                if not self.lease.hold(db.session):  # another server process schedules
                    if asked:  # and should see what was just submitted now, not at its next interval
                        pg_wake.notify(db.session)
                    return
                if not self.lease.unbroken:  # another process may have scheduled since this one last did
                    self.queue.clear()
                beats = self._ask_nodes()
                self._start_placed()  # before any wait for a node's answer
                listings = self._heard(beats)
                node_health.end_jobs_on_lost_nodes(db.session, self.grace_s, self.requeue_default, self._remove_parts)
                db.session.commit()
                self._enforce_kinds()
                self._watch(listings)
                self.notifier.kick()  # job-end notices go out on their own thread
                if self.samples.record_if_due(db.session) is not None:  # the dashboard's chart
                    db.session.commit()
            except Exception:
                log.exception("scheduler tick failed")
                db.session.rollback()
                self.queue.clear()  # it may hold positions that were rolled back
            finally:
                db.session.remove()

    def _dispatch(self, lane, key, action: Callable, *args, slots: int | None = None) -> bool:
        """Hand `action(session, *args)` to a lane's executors (a node id: that node's); it runs only
        while this process still holds the lease (it may have waited for a slot)."""
        def leased(session):
            if not self.lease.current():
                return False  # another process schedules now: it does this itself
            return action(session, *args)

        return self.executors.dispatch(lane, key, leased, slots=slots)

    def _remove_parts(self, job, lost: set[int]) -> None:
        """A job lost with a node: its containers on its other, answering nodes go (a gang job
        cannot go on without one of its parts)."""
        ctx = self.run_context()
        for node_id, container_id in job_runner.containers_off(job, lost):
            self._dispatch(node_id, (job.id, f"remove on node {node_id}"), job_runner.remove, ctx, node_id, container_id)

    def _enforce_kinds(self) -> None:
        """Each kind's own rules (notebook lifetimes, idle TensorBoards), one kind at a time beside
        the nodes' executors: the checks may ask a node (a container's traffic)."""
        for kind in kinds.all_kinds():
            def enforce(session, kind=kind):
                halted = kind.enforce(session, self.driver, self.settings, utcnow())
                session.commit()
                return halted  # halted jobs: the next tick ends them

            self._dispatch(KINDS_LANE, (None, f"enforce {kind.name}"), enforce, slots=1)

    def _watch(self, listings: dict[int, job_runner.Listing]) -> None:
        """Hand the ends of the jobs whose containers are done (or must stop) to their master's node,
        and the leftovers to theirs."""
        endings, leftovers = job_runner.watch(db.session, listings, busy=self.executors.busy)
        db.session.commit()
        ctx = self.run_context()
        for ending in endings:
            self._dispatch(ending.node_id, (ending.job_id, "end"), job_runner.finish, ctx, ending)
        for leftover in leftovers:
            self._dispatch(leftover.node_id, (leftover.job_id, f"remove on node {leftover.node_id}"), job_runner.remove,
                           ctx, leftover.node_id, leftover.container_id)

    def _start_placed(self) -> None:
        """Plan the queue, write the plan, hand the start of what it placed (and of any start left
        by a crash or waiting to try again) to the executors of the job's master's node."""
        session = db.session
        snap = snapshot.read(session, now=time.time(), queue=self.queue)
        result = plan(snap.state)
        positions_due = time.monotonic() >= self._positions_due_at
        snapshot.apply(session, snap, result, moves_at_once=None if positions_due else MOVES_AT_ONCE)
        session.commit()
        if positions_due:
            self._positions_due_at = time.monotonic() + POSITION_REFRESH_S
        ctx = self.run_context()
        for job in job_runner.jobs_starting(session, utcnow()):
            if any(part.node.down_since is not None for part in job.parts):
                continue  # its node missed a heartbeat: start it when it answers, or lose it with the node
            if not self.executors.busy(job.id):  # one step of a job at a time (a removal of its old containers)
                self._dispatch(job.parts[0].node_id, (job.id, "start"), job_runner.start, ctx, job.id)
        session.commit()

    def _ask_nodes(self) -> _Beats:
        """Start a heartbeat of every node at once (a ping and its containers' listing)."""
        session = db.session
        nodes = node_health.probed_nodes(session)
        targets, outcomes = [], {}
        for node in nodes:
            try:
                targets.append((node, self._cached(self._probe_drivers, node, self.prober.timeout_s)))
            except (NodeError, ValueError) as exc:  # keys that cannot be unsealed or used
                outcomes[node.id] = node_health.Outcome(error=NodeError(str(exc)))
        now = time.monotonic()
        gpus_due = {node.id for node in nodes if node.gpu_source == "nvidia-smi"
                    and now - self._gpus_read.get(node.id, float("-inf")) >= self.gpu_refresh_s}
        waited = self.prober.ask(targets, self.settings.site_id, gpus_due)
        self._gpus_read.update(dict.fromkeys(gpus_due, now))
        return _Beats(nodes, targets, outcomes, waited)

    def _heard(self, beats: _Beats) -> dict[int, job_runner.Listing]:
        """Record what the heartbeats that came in say (waiting briefly for this tick's); the
        listings among them (a node whose answer is late has none this tick: it wakes the loop)."""
        session = db.session
        outcomes = {**beats.outcomes, **self.prober.answers(beats.targets, beats.waited)}
        node_health.record_heartbeats(session, beats.nodes, outcomes, self.grace_s)
        session.commit()
        return {node_id: job_runner.Listing(o.asked_at, o.containers) for node_id, o in outcomes.items()
                if o.containers is not None and o.asked_at is not None}


@dataclass(frozen=True)
class _Beats:
    """The heartbeats one tick asked for: the nodes, those with a driver, the outcomes known at once
    (a node whose keys cannot be used), and the answers worth a short wait."""

    nodes: list[Node]
    targets: list[tuple[Node, NodeDriver]]
    outcomes: dict[int, node_health.Outcome]
    waited: list[concurrent.futures.Future]
