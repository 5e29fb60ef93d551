"""What keeps the API quick under many clients (bench/load.py measures it): a list page costs a fixed
number of queries, the database pool holds a connection per web thread, and a long scheduler tick
is followed by a rest three times as long."""
from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime, timezone

from sqlalchemy import event

from kqi import jobs
from kqi.extensions import db
from kqi.models import JobStatus

BODY = {"image": "busybox", "command": "true", "cpu": 0.1, "memory_gb": 0.1}


@contextlib.contextmanager
def counted(app):
    """The number of SQL statements this thread sends while the block runs (the test client serves
    the request in it; the audit log's writer thread flushes whenever it likes): [count]."""
    statements, here = [0], threading.get_ident()

    def count(*_args):
        if threading.get_ident() == here:
            statements[0] += 1

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_list_page_costs_the_same_queries_for_1_or_20_jobs_with_parents(app, factory):
    api = factory.api()
    parents = [api.post("/api/v1/training/run", json={**BODY, "name": f"parent-{i}"}).get_json()["id"] for i in range(2)]
    with app.app_context():
        for parent in parents:
            assert jobs.transition(db.session, parent, JobStatus.QUEUED, JobStatus.COMPLETED)
        db.session.commit()
    # A child naming its parents out of id order: the order given is the order kept.
    first = api.post("/api/v1/training/run", json={**BODY, "name": "child-0", "parent_ids": parents[::-1]})
    assert first.status_code == 201, first.get_json()

    def page(per_page):
        with counted(app) as statements:
            answer = api.get(f"/api/v1/training?page=1&per_page={per_page}")
        assert answer.status_code == 200
        return answer.get_json()["items"], statements[0]

    one, queries_for_one = page(1)
    assert one[0]["parent_ids"] == parents[::-1]
    for i in range(1, 20):
        api.post("/api/v1/training/run", json={**BODY, "name": f"child-{i}", "parent_ids": parents[i % 2:i % 2 + 1]})
    twenty, queries_for_twenty = page(20)
    assert len(twenty) == 20
    assert queries_for_twenty == queries_for_one
    # The list shows each job as its own page does, parents included.
    for item in twenty[:3] + twenty[-2:]:
        assert item == api.get(f"/api/v1/training/{item['id']}").get_json()


def test_the_pool_keeps_a_connection_for_every_web_thread(app):
    with app.app_context():
        engine = db.engine
    threads = app.config["KQI"]["web_threads"]
    assert engine.pool.size() == threads + 4
    # A PostgreSQL server can restart under a running kqi; a SQLite file cannot.
    assert engine.pool._pre_ping == (engine.dialect.name == "postgresql")


class _Clock:
    """Stands in for APScheduler: records when the loop asks for its next tick."""

    def __init__(self):
        self.next_runs = []

    def modify_job(self, _job_id, next_run_time):
        self.next_runs.append(next_run_time)


def test_a_long_tick_woken_again_rests_three_times_as_long_before_the_next(sqlite_app):
    service = sqlite_app.extensions["kqi_scheduler"]
    service._scheduler = clock = _Clock()
    ticks = []

    def slow_tick():  # a long queue to plan, and submits arriving meanwhile
        ticks.append(time.monotonic())
        time.sleep(0.2)
        service._wake.set()

    service.tick = slow_tick
    began = datetime.now(timezone.utc)
    try:
        service._run()
        # A wake during the rest leaves the planned tick where it is.
        service.wake()
    finally:
        service._scheduler = None
    assert len(ticks) == 1 and len(clock.next_runs) == 1
    rest_s = (clock.next_runs[0] - began).total_seconds() - 0.2
    assert rest_s >= 3 * 0.2 - 0.05


def test_shutdown_during_a_tick_that_would_reschedule_itself_does_not_hang(sqlite_app):
    """APScheduler's shutdown holds its job-store lock while it waits for the running tick; a tick
    woken meanwhile reschedules itself (modify_job needs that lock). It must not deadlock."""
    service = sqlite_app.extensions["kqi_scheduler"]
    in_tick = threading.Event()

    def slow_tick():
        in_tick.set()
        time.sleep(0.5)
        service._wake.set()  # a submit arrived during the tick

    service.tick = slow_tick
    service.start()
    assert in_tick.wait(10)
    stopper = threading.Thread(target=service.shutdown, daemon=True)
    stopper.start()
    stopper.join(20)
    assert not stopper.is_alive(), "shutdown hung waiting for a tick that waits for shutdown's lock"
