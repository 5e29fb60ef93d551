"""Node health: the heartbeat, the state each node is in, and what happens to jobs on a lost node.

States. The admin chooses Ready, Draining (finish running jobs, take no new ones) or Disabled; the
heartbeat overrides that with what it sees: Unconfirmed (an SSH node whose host key no admin has
confirmed yet), HostKeyChanged (the SSH server presented another key: loud, nothing scheduled),
Unreachable (missed its last heartbeat: takes no new jobs, its running jobs are left alone) and
Offline (unreachable past the grace period: its jobs end Killed, reason "node lost", or go back
to the queue when they asked for it). Only Ready takes new jobs. Every change is a NodeEvent.

The heartbeat is a ping and one container listing per node per tick, run in a small thread pool
with a per-call timeout. A tick asks (Prober.ask), plans and hands out its starts, and only then
waits briefly (ANSWER_WAIT_S) for the heartbeats it asked for from nodes that answered last time;
one that comes later wakes the loop, and a ping not answered within the timeout makes its node
Unreachable. So a node that hangs delays no start, costs the loop that short wait once, never its
timeout, and never stalls it for the others. A node that answers
its ping but not its listing in time is busy, not lost: it stays up, and its jobs wait for a
listing to be judged on. The listing also feeds the watch.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from kqi.backends.base import ContainerState, GpuInfo, HostKeyMismatch, NodeDriver, NodeError
from kqi.jobs import lifecycle as jobs
from kqi.models import GpuAllocation, Job, JobPart, JobStatus, Node, utcnow
from kqi.models.nodes import NodeEvent, NodeGpu

log = logging.getLogger(__name__)

READY, DRAINING, DISABLED = "Ready", "Draining", "Disabled"
UNCONFIRMED, HOST_KEY_CHANGED, UNREACHABLE, OFFLINE = "Unconfirmed", "HostKeyChanged", "Unreachable", "Offline"
ADMIN_STATES = (READY, DRAINING, DISABLED)
NODE_LOST = "node lost"
# How long a tick waits for the listings it just asked for (a healthy engine answers in a few ms);
# the rest arrive between ticks and wake the loop.
ANSWER_WAIT_S = 0.5


def set_state(session: Session, node: Node, state: str, message: str = "") -> bool:
    """Move the node to `state`, recording the change; True when it changed."""
    if node.state == state:
        return False
    session.add(NodeEvent(node_id=node.id, old_state=node.state or "", new_state=state, message=message[:2000]))
    log.log(logging.WARNING if state in (OFFLINE, HOST_KEY_CHANGED) else logging.INFO,
            "node %s: %s -> %s %s", node.name, node.state, state, message)
    node.state = state
    node.schedulable = state == READY
    return True


def note(session: Session, node: Node, message: str) -> None:
    """An admin action or finding worth keeping on the node's record, without a state change."""
    session.add(NodeEvent(node_id=node.id, old_state=node.state, new_state=node.state, message=message[:2000]))


@dataclass(frozen=True)
class Outcome:
    """One heartbeat of one node: its containers of this site, or why it did not answer."""

    containers: list[ContainerState] | None = None
    error: NodeError | None = None
    gpus: list[GpuInfo] | None = None  # nvidia-smi's view, when it was asked for this time
    asked_at: datetime | None = None  # when the listing was asked for (naive UTC, as the job times)
    unlisted: str = ""  # the node answered, but not its listing in time: why (no job is judged on it)

    @property
    def listing(self) -> list[ContainerState] | None:
        return self.containers


@dataclass(frozen=True)
class _Beat:
    began: float  # monotonic
    asked_at: datetime
    answered: threading.Event  # its ping came back: the node is up, whatever its listing takes
    future: concurrent.futures.Future


class Prober:
    """Runs the heartbeat listings in a thread pool, with a deadline for each. `on_late_answer`
    is called (from the pool) when a listing the loop stopped waiting for arrives."""

    def __init__(self, timeout_s: float, workers: int = 8, wait_s: float = ANSWER_WAIT_S,
                 on_late_answer: Callable[[], None] = lambda: None):
        self.timeout_s = timeout_s
        self.wait_s = min(wait_s, timeout_s)
        self._on_late_answer = on_late_answer
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kqi-heartbeat")
        # A call still running from an earlier tick is not repeated: a hung node holds one thread at most.
        self._inflight: dict[int, _Beat] = {}

    def ask(self, targets: list[tuple[Node, NodeDriver]], site: str, gpus_of: set[int] = frozenset()
            ) -> list[concurrent.futures.Future]:
        """Start a heartbeat of each target that has none running (`gpus_of`: nodes whose
        nvidia-smi is read this time too); the ones worth a short wait (of nodes that answered)."""
        now, asked_at = time.monotonic(), utcnow()
        waited = []
        for node, driver in targets:
            if node.id not in self._inflight:
                answered = threading.Event()
                beat = _Beat(now, asked_at, answered, self._pool.submit(_beat, driver, site, node.id in gpus_of, answered))
                self._inflight[node.id] = beat
                if node.down_since is None:
                    waited.append(beat.future)
        return waited

    def answers(self, targets: list[tuple[Node, NodeDriver]], waited: list[concurrent.futures.Future]
                ) -> dict[int, Outcome]:
        """The heartbeats that are in, after waiting at most `wait_s` for those `ask` said to: one
        asked for now, or an earlier one that arrived since. A node whose call is still running has
        no outcome until its timeout passes (then an error); its answer wakes the loop."""
        concurrent.futures.wait(waited, timeout=self.wait_s)
        for future in waited:
            if not future.done():  # at once if it came meanwhile
                future.add_done_callback(lambda _future: self._on_late_answer())
        outcomes = {}
        for node, _driver in targets:
            beat = self._inflight[node.id]
            if beat.future.done():
                del self._inflight[node.id]
                try:
                    outcomes[node.id] = replace(beat.future.result(), asked_at=beat.asked_at)
                except NodeError as exc:
                    outcomes[node.id] = Outcome(error=exc, asked_at=beat.asked_at)
                except Exception as exc:  # a driver bug must not take the loop down; it shows on the node
                    log.exception("heartbeat of node %s failed", node.name)
                    outcomes[node.id] = Outcome(error=NodeError(f"heartbeat failed: {exc}"), asked_at=beat.asked_at)
            elif not beat.answered.is_set() and time.monotonic() - beat.began >= self.timeout_s:
                outcomes[node.id] = Outcome(error=NodeError(f"no answer within {self.timeout_s:g} s"),
                                            asked_at=beat.asked_at)
        return outcomes

    def forget(self, node_id: int) -> None:
        self._inflight.pop(node_id, None)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._inflight.clear()


def _beat(driver: NodeDriver, site: str, with_gpus: bool, answered: threading.Event) -> Outcome:
    driver.ping()
    answered.set()  # the node is up, whatever its listing does
    try:
        containers, unlisted = driver.containers(site), ""
    except NodeError as exc:
        # An engine that answers but does not list in time is busy with one container: reading a
        # container's state waits for its lock, which an archive of it holds (collecting a job's
        # 100,000 output files, a page browsing a running job's outputs). That must not make the
        # node (and every job on it) look lost; its jobs are judged on a later listing.
        if isinstance(exc, HostKeyMismatch):
            raise
        log.warning("a node answered but did not list its containers: %s", exc)
        containers, unlisted = None, f"containers not listed: {exc}"
    gpus = None
    if with_gpus:
        try:
            gpus = driver.gpus()
        except NodeError as exc:  # the engine answers: the node is up, only its GPU view is stale
            log.warning("nvidia-smi on a node failed: %s", exc)
    return Outcome(containers=containers, gpus=gpus, unlisted=unlisted)


def busy_indices(session: Session, node_id: int, found: list[GpuInfo]) -> set[int]:
    """GPUs running processes kqi did not start: in use, and not held by a kqi job."""
    ours = set(session.scalars(select(GpuAllocation.gpu_index).where(GpuAllocation.node_id == node_id)))
    return {g.index for g in found if g.in_use and g.index not in ours}


def _mark_busy(session: Session, node: Node, found: list[GpuInfo]) -> None:
    busy = busy_indices(session, node.id, found)
    for gpu in session.scalars(select(NodeGpu).where(NodeGpu.node_id == node.id)):
        gpu.busy = gpu.gpu_index in busy


def probed_nodes(session: Session) -> list[Node]:
    """Every node but those whose SSH host key is not confirmed (kqi will not talk to them yet)."""
    return list(session.scalars(select(Node).where(Node.host_key_confirmed.is_(True)).order_by(Node.name)))


def record_heartbeats(session: Session, nodes: list[Node], outcomes: dict[int, Outcome], grace_s: float) -> None:
    """Turn the heartbeat outcomes into node states (the caller commits)."""
    now = utcnow()
    for node in nodes:
        outcome = outcomes.get(node.id)
        if outcome is None:
            continue  # still in flight from an earlier tick, not yet past its deadline
        if outcome.error is None:
            if outcome.gpus is not None:
                _mark_busy(session, node, outcome.gpus)
            node.last_seen_at = now
            node.down_since = None
            node.last_error = outcome.unlisted[:1000]
            set_state(session, node, node.admin_state, "answering again" if node.state in (UNREACHABLE, OFFLINE) else "")
            continue
        error = outcome.error
        node.last_error = str(error)[:1000]
        if node.down_since is None:
            node.down_since = now
        if isinstance(error, HostKeyMismatch):
            set_state(session, node, HOST_KEY_CHANGED, str(error))
        elif now - node.down_since >= timedelta(seconds=grace_s):
            set_state(session, node, OFFLINE, f"no answer for {(now - node.down_since).total_seconds():.0f} s: {error}")
        elif node.state != OFFLINE:
            set_state(session, node, UNREACHABLE, str(error))


def lost(node: Node, grace_s: float, now: datetime) -> bool:
    return node.down_since is not None and now - node.down_since >= timedelta(seconds=grace_s)


def end_jobs_on_lost_nodes(session: Session, grace_s: float, requeue_default: bool,
                           discard: Callable[[Job, set[int]], None]) -> int:
    """End (or requeue) every active job with a part on a node lost past the grace period.

    `discard(job, lost_node_ids)` removes the job's containers on its other, still answering nodes
    (a gang job cannot go on without one of its parts). Returns how many jobs it ended."""
    now = utcnow()
    lost_ids = {node.id for node in session.scalars(select(Node).where(Node.down_since.is_not(None)))
                if lost(node, grace_s, now)}
    if not lost_ids:
        return 0
    victims = session.scalars(
        select(Job).where(Job.status.in_(jobs.ACTIVE), Job.id.in_(select(JobPart.job_id).where(JobPart.node_id.in_(lost_ids))))
        .order_by(Job.id)
    ).all()
    ended = 0
    for job in victims:
        discard(job, lost_ids)
        if job.requeue_on_node_loss or requeue_default:
            done = jobs.transition(session, job.id, job.status, JobStatus.QUEUED, started_at=None,
                                   reason=f"{NODE_LOST}: requeued")
        else:
            done = jobs.transition(session, job.id, job.status, JobStatus.KILLED, reason=NODE_LOST)
        if done:
            ended += 1
            log.warning("job %s: %s (%s)", job.id, NODE_LOST, "requeued" if job.requeue_on_node_loss or requeue_default
                        else "killed")
        session.commit()
    return ended
