"""The scheduler keeps the queue between ticks (snapshot.QueueCache) and reads only the new jobs:
what it plans from must equal what a whole read would give, whatever happened to the queue, and a
tick that fails or a lease that changed hands starts it afresh."""
from __future__ import annotations

import time

from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.models import JobStatus, Node
from kqi.scheduler import snapshot
from kqi.scheduler.plan import plan
from tests.test_load import counted

BODY = {"image": "busybox", "command": "true", "cpu": 1, "memory_gb": 1}


def _reads_queue_rows(statement: str) -> bool:
    """snapshot._QUEUED_FROM: queued jobs' whole rows (the ids-only read has no reasons column)."""
    return "pending_reasons" in statement and "jobs.id >=" in statement


def _tick(app, queue: snapshot.QueueCache) -> tuple[snapshot.Snapshot, list[int]]:
    """Read with the kept queue, check it against a whole read, plan, write, commit (the loop's
    _start_placed without the starts); the snapshot and the jobs it placed."""
    with app.app_context():
        kept = snapshot.read(db.session, now=time.time(), queue=queue)
        whole = snapshot.read(db.session, now=time.time())
        assert kept.state.queue == whole.state.queue
        assert kept.pending_seen == whole.pending_seen  # the positions and reasons in the database
        started = snapshot.apply(db.session, kept, plan(kept.state))
        db.session.commit()
        return kept, started


def test_the_kept_queue_plans_what_a_whole_read_would_through_submits_halts_starts_and_requeues(app, factory):
    with app.app_context():  # room for one job at a time: the others wait, with positions and reasons
        db.session.add(Node(name="small", url="unix:///nowhere/small.sock", cpu_milli=1000, memory_mib=8192))
        db.session.commit()
    api = factory.api()
    ids = [api.post("/api/v1/training/run", json={**BODY, "name": f"q{i}"}).get_json()["id"] for i in range(4)]
    queue = snapshot.QueueCache()
    first, started = _tick(app, queue)
    assert [r.job_id for r in first.state.queue] == ids and started == [ids[0]]
    kept, started = _tick(app, queue)
    assert started == [] and [r.job_id for r in kept.state.queue] == ids[1:]  # the placed one left it
    assert [queue.seen[i][0] for i in ids[1:]] == [1, 2, 3]
    assert api.post(f"/api/v1/training/{ids[2]}/halt").status_code == 200
    late = api.post("/api/v1/training/run", json={**BODY, "name": "late"}).get_json()["id"]
    with app.app_context():  # the placed one comes back (its node was lost): an old id, queued again
        assert jobs.transition(db.session, ids[0], JobStatus.STARTING, JobStatus.QUEUED, reason="requeued")
        db.session.commit()
    kept, started = _tick(app, queue)
    assert [r.job_id for r in kept.state.queue] == [ids[0], ids[1], ids[3], late] and started == [ids[0]]
    assert set(queue.requests) == {ids[0], ids[1], ids[3], late}  # the halted one is forgotten
    kept, _ = _tick(app, queue)
    assert set(queue.requests) == {ids[1], ids[3], late}  # and the placed one, at the read after
    assert [queue.seen[i][0] for i in (ids[1], ids[3], late)] == [1, 2, 3]


def test_an_unchanged_queue_costs_no_row_reads_and_a_new_job_costs_one(app, factory):
    api = factory.api()
    for i in range(3):
        api.post("/api/v1/training/run", json={**BODY, "name": f"q{i}"})
    queue = snapshot.QueueCache()

    def read():
        with counted(app, _reads_queue_rows) as reads, app.app_context():
            return len(snapshot.read(db.session, now=time.time(), queue=queue).state.queue), reads[0]

    assert read() == (3, 1)
    assert read() == (3, 0)
    api.post("/api/v1/training/run", json={**BODY, "name": "new"})
    assert read() == (4, 1)


def test_a_failed_tick_forgets_the_kept_queue(sqlite_app, monkeypatch):
    from tests.conftest import Factory

    service = sqlite_app.extensions["kqi_scheduler"]
    Factory(sqlite_app).api().post("/api/v1/training/run", json={**BODY, "name": "q"})
    service.tick()
    assert len(service.queue.requests) == 1

    def fails(*_args, **_kwargs):
        raise RuntimeError("the commit failed")

    monkeypatch.setattr(snapshot, "apply", fails)
    service.tick()  # logged, rolled back: the positions it kept may never have been written
    assert service.queue.requests == {} and service.queue.seen == {}
