"""Where node I/O runs: a bounded pool of workers per node, beside the scheduler loop.

The loop reads, plans and writes; every container operation (start with its pull and shipment,
stop with its grace, log and output collection, removal) is an action handed to the workers of
the node it concerns (`lane`), at most `slots` at once per node. A slow or hung node holds only its
own slots; the others go on. An action has a key, (job id, what it does): while one runs or waits
for a slot, the same key is not handed out again. This in-flight set lives in memory only: the
database stays the truth across restarts, and every action re-reads it and changes a job's status
by compare-and-set (kqi/jobs/lifecycle.py transition), so an action that finishes late never
overwrites a newer state.

Each action runs in its own app context, so with its own database session, and commits its own
transactions. An exception that escapes one is logged and stays that action's: the runner turns
the job's own failures into that job's end (kqi/jobs/runner.py).
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Hashable

from sqlalchemy.orm import Session

from kqi.extensions import AppContext, db

log = logging.getLogger(__name__)
Key = tuple[int | None, str]  # (job id, what the action does); no job: (None, "enforce notebook")


class NodeExecutors:
    """Bounded pools of worker threads, one per lane (a node id, or a name for work beside the
    nodes'), made when a lane first gets work. Each action runs inside `context()` (the app's
    context: its own database session). `on_done` runs after an action that returned something
    true: it changed what the loop sees (a job ended, freeing resources), and the loop wakes."""

    def __init__(self, context: AppContext, slots: int,
                 on_done: Callable[[], None] = lambda: None):
        if slots < 1:
            raise ValueError("node_parallel_ops must be at least 1")
        self._context = context
        self.slots = slots
        self._on_done = on_done
        self._pools: dict[Hashable, concurrent.futures.ThreadPoolExecutor] = {}
        self._in_flight: dict[Key, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self._closed = False

    def dispatch(self, lane: Hashable, key: Key, action: Callable[[Session], object], slots: int | None = None) -> bool:
        """Hand `action(session)` to `lane`'s workers; False when `key` is already in flight (or the
        pools are shut down). `slots`: the lane's size when this call makes it (default: `self.slots`)."""
        with self._lock:
            if self._closed or key in self._in_flight:
                return False
            pool = self._pools.get(lane)
            if pool is None:
                pool = self._pools[lane] = concurrent.futures.ThreadPoolExecutor(
                    max_workers=slots or self.slots, thread_name_prefix=f"kqi-lane-{lane}")
            self._in_flight[key] = pool.submit(self._run, key, action)
            return True

    def _run(self, key: Key, action: Callable[[Session], object]) -> None:
        changed = False
        try:
            with self._context():
                try:
                    changed = bool(action(db.session()))  # the session itself, not its thread-scoped proxy
                except Exception:  # the runner ends jobs for their own faults; this is the net below it
                    log.exception("%s of job %s failed", key[1], key[0])
                    db.session.rollback()
                finally:
                    db.session.remove()
        finally:
            with self._lock:
                self._in_flight.pop(key, None)
        if changed:
            try:
                self._on_done()
            except Exception:  # a wake that failed must not take the worker down
                log.exception("waking the loop after %s failed", key[1])

    def in_flight(self) -> set[Key]:
        with self._lock:
            return set(self._in_flight)

    def busy(self, job_id: int) -> bool:
        """Whether any action of this job runs or waits (a job takes one step at a time)."""
        with self._lock:
            return any(key[0] == job_id for key in self._in_flight)

    def drain(self, timeout_s: float) -> bool:
        """Wait until no action runs or waits, including those the finished ones dispatched; False
        when `timeout_s` passed first. For callers that tick by hand (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                pending = list(self._in_flight.values())
            if not pending:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            concurrent.futures.wait(pending, timeout=left)

    def shutdown(self, wait_s: float) -> None:
        """Take no more work, drop what waits for a slot, and give what runs up to `wait_s` to end
        (a stop in its grace period, a collection). What is left is found again by the next server:
        every step is safe to repeat."""
        with self._lock:
            self._closed = True
            pools = list(self._pools.values())
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for key, future in list(self._in_flight.items()):
                if future.cancelled():
                    self._in_flight.pop(key, None)
        if not self.drain(wait_s):
            log.warning("node actions still running at shutdown: %s", sorted(self.in_flight(), key=str))
