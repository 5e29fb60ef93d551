"""What keeps the API quick under many clients (bench/load.py measures it): a list page costs a fixed
number of queries, the database pool holds a connection per web thread, and a long scheduler tick
is followed by a rest three times as long."""
from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, event, select

import kqi
from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.models import ApiToken, JobStatus, Membership, User, utcnow

BODY = {"image": "busybox", "command": "true", "cpu": 0.1, "memory_gb": 0.1}


@contextlib.contextmanager
def counted(app, where=lambda _statement: True):
    """The number of SQL statements (those `where` accepts) this thread sends while the block runs
    (the test client serves the request in it; the audit log's writer thread flushes whenever it
    likes): [count]."""
    statements, here = [0], threading.get_ident()

    def count(_connection, _cursor, statement, *_args):
        if threading.get_ident() == here and where(statement):
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
    # the token's user and tenant; the page with the count; its parts, parents, tags and the caller's stars
    assert queries_for_twenty == queries_for_one == 3
    # The list shows each job as its own page does, parents included.
    for item in twenty[:3] + twenty[-2:]:
        assert item == api.get(f"/api/v1/training/{item['id']}").get_json()


def test_a_list_shows_placed_and_gang_jobs_as_their_own_pages_do(app, factory):
    """The list reads parts (node, rank, GPU indices) as plain rows, a job's own page through its
    collections: both show the same."""
    from kqi.models import Node
    from kqi.models.nodes import NodeGpu
    from kqi.scheduler import snapshot
    from kqi.scheduler.plan import plan

    with app.app_context():
        for name in ("g1", "g2"):
            node = Node(name=name, url=f"unix:///nowhere/{name}.sock", cpu_milli=4000, memory_mib=8192, gpu_count=2)
            db.session.add(node)
            db.session.flush()
            db.session.add_all(NodeGpu(node_id=node.id, gpu_index=i, model="") for i in range(2))
        db.session.commit()
    api = factory.api()
    for body in ({"name": "gang", "gpu": 2, "nodes": 2}, {"name": "half", "gpu": 0.5}, {"name": "waits", "gpu": 2}):
        assert api.post("/api/v1/training/run", json={**BODY, **body}).status_code == 201
    with app.app_context():
        snap = snapshot.read(db.session, now=time.time())
        assert len(snapshot.apply(db.session, snap, plan(snap.state))) == 1  # the gang takes every GPU
        db.session.commit()
    items = {item["name"]: item for item in api.get("/api/v1/training?per_page=10").get_json()["items"]}
    gang = items["gang"]
    assert [(p["rank"], p["gpu_indices"]) for p in gang["parts"]] == [(0, [0, 1]), (1, [0, 1])]
    assert {p["node"] for p in gang["parts"]} == {"g1", "g2"} and gang["node"] == gang["parts"][0]["node"]
    assert gang["gpu_indices"] == [0, 1] and items["waits"]["parts"] == [] and items["waits"]["node"] is None
    for item in items.values():
        assert item == api.get(f"/api/v1/training/{item['id']}").get_json()


def test_a_page_of_several_submitters_tagged_and_starred_jobs_costs_what_a_page_of_one_does(app, factory):
    alice, bob = factory.api("load-team"), factory.api("load-team")

    def page(per_page):
        with counted(app) as statements:
            answer = alice.get(f"/api/v1/training?page=1&per_page={per_page}")
        assert answer.status_code == 200
        return answer.get_json()["items"], statements[0]

    def submit(client, i):
        job = client.post("/api/v1/training/run", json={**BODY, "name": f"busy-{i}"}).get_json()["id"]
        edit = client.open(f"/api/v1/training/{job}", "PATCH", json={"tags": [f"t{i % 3}", "load"], "favorite": True})
        assert edit.status_code == 200, edit.get_json()

    submit(alice, 0)
    one, queries_for_one = page(1)
    assert one[0]["tags"] == ["load", "t0"] and one[0]["favorite"] is True
    for i in range(1, 20):
        submit((alice, bob)[i % 2], i)
    twenty, queries_for_twenty = page(20)
    assert len(twenty) == 20 and len({item["user"] for item in twenty}) == 2
    assert queries_for_twenty == queries_for_one
    # Each caller sees their own stars only; the list shows a job as its page does.
    assert [item["favorite"] for item in twenty] == [item["user"] == twenty[-1]["user"] for item in twenty]
    for item in twenty[:2]:
        assert item == alice.get(f"/api/v1/training/{item['id']}").get_json()


def test_a_poll_and_a_submit_cost_a_few_statements_whatever_the_job_carries(app, factory):
    api = factory.api()
    with counted(app) as submit_plain:
        plain = api.post("/api/v1/training/run", json={**BODY, "name": "plain"})
    assert plain.status_code == 201
    # The token lookup, the job, its sources, its first event: the answer reads nothing back.
    assert submit_plain[0] == 4
    with app.app_context():
        assert jobs.transition(db.session, plain.get_json()["id"], JobStatus.QUEUED, JobStatus.COMPLETED)
        db.session.commit()
    with counted(app) as submit_child:
        child = api.post("/api/v1/training/run", json={**BODY, "name": "child", "parent_ids": [plain.get_json()["id"]]})
    assert child.status_code == 201 and child.get_json()["parent_ids"] == [plain.get_json()["id"]]
    assert submit_child[0] == submit_plain[0] + 2  # the parent checked, and the link written
    child_id = child.get_json()["id"]
    assert api.open(f"/api/v1/training/{child_id}", "PATCH", json={"tags": ["a", "b"], "favorite": True}).status_code == 200

    def poll(job_id):
        with counted(app) as statements:
            answer = api.get(f"/api/v1/training/{job_id}")
        assert answer.status_code == 200
        return answer.get_json(), statements[0]

    plain_shown, plain_queries = poll(plain.get_json()["id"])
    child_shown, child_queries = poll(child_id)
    assert plain_shown == {**plain.get_json(), "status": "Completed", "completed_at": plain_shown["completed_at"]}
    assert child_shown["parent_ids"] == [plain_shown["id"]] and child_shown["tags"] == ["a", "b"]
    assert child_shown["favorite"] is True
    # The token lookup, the job with its submitter and sources, its parts, parents, tags and star.
    assert child_queries == plain_queries == 3


def test_a_token_stops_working_at_once_when_it_expires_or_its_membership_goes(app, factory):
    """The token lookup is one query on every call, never remembered between calls."""
    username, password = factory.user("load-team")
    client = app.test_client()

    def token():
        answer = client.post("/api/v1/account/login", json={"username": username, "password": password})
        return {"Authorization": f"Bearer {answer.get_json()['token']}"}

    expiring, kept = token(), token()
    assert client.get("/api/v1/training", headers=expiring).status_code == 200
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.username == username))
        tokens = db.session.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)).all()
        tokens[0].expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert client.get("/api/v1/training", headers=expiring).status_code == 401
    assert client.get("/api/v1/training", headers=kept).status_code == 200
    with app.app_context():
        db.session.execute(delete(Membership).where(Membership.user_id == user_id))
        db.session.commit()
    assert client.get("/api/v1/training", headers=kept).status_code == 401


def test_the_pool_keeps_a_connection_for_every_web_thread(app):
    with app.app_context():
        engine = db.engine
    threads = kqi.settings_of(app).web_threads
    assert engine.pool.size() == threads + 4


def test_a_list_and_a_poll_read_without_a_transaction_on_postgresql_and_a_submit_writes_in_one(app, factory):
    """No BEGIN and no ROLLBACK for the hottest reads on PostgreSQL (two round trips on top of a
    list's three statements); a write keeps its transaction, on the same pooled connection right
    after. SQLite keeps one transaction per request (a snapshot across its statements)."""
    api = factory.api()
    job_id = api.post("/api/v1/training/run", json={**BODY, "name": "polled"}).get_json()["id"]
    with app.app_context():
        engine, postgres = db.engine, db.engine.dialect.name == "postgresql"

    def autocommit_of_each_statement(call):
        seen, here = [], threading.get_ident()  # this thread's: the audit log's writer has its own

        def record(connection, *_args):
            dbapi = connection.connection.dbapi_connection
            if threading.get_ident() == here:
                seen.append(dbapi.autocommit if postgres else dbapi.isolation_level is None)

        event.listen(engine, "before_cursor_execute", record)
        try:
            assert call().status_code in (200, 201)
        finally:
            event.remove(engine, "before_cursor_execute", record)
        return set(seen)

    assert autocommit_of_each_statement(lambda: api.get("/api/v1/training?per_page=5")) == {postgres}
    assert autocommit_of_each_statement(lambda: api.get(f"/api/v1/training/{job_id}")) == {postgres}
    assert autocommit_of_each_statement(lambda: api.get("/api/v1/inference")) == {postgres}
    assert autocommit_of_each_statement(
        lambda: api.post("/api/v1/training/run", json={**BODY, "name": "written"})) == {False}
    assert autocommit_of_each_statement(lambda: api.get(f"/api/v1/training/{job_id}/timeline")) == {False}


_real_ping = kqi.ping


def test_a_connection_idle_a_while_is_checked_before_use_and_one_in_steady_use_is_not(app, monkeypatch):
    """A PostgreSQL server can restart under a running kqi (here: every connection of the database
    is terminated): a connection idle for PING_AFTER_IDLE_S is checked first and replaced, so the
    next use works; in steady use nothing is checked (a round trip each). SQLite: never."""
    pings = []
    monkeypatch.setattr(kqi, "ping", lambda connection: (pings.append(1), _real_ping(connection)))
    monkeypatch.setattr(kqi, "PING_AFTER_IDLE_S", 0.5)
    with app.app_context():
        engine = db.engine
    for _ in range(3):
        with engine.connect() as connection:
            assert connection.scalar(select(1)) == 1
    assert pings == []  # each found the connection the one before had just given back
    postgres = engine.dialect.name == "postgresql"
    time.sleep(0.6)
    # Checked, then switched to autocommit as a list does (READS_WITHOUT_TRANSACTION): a check that
    # left its transaction open would make that switch fail.
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        assert connection.scalar(select(1)) == 1
    assert len(pings) == (1 if postgres else 0)
    if postgres:
        import psycopg

        dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as admin:  # what a server restart does to kqi's connections
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    time.sleep(0.6)
    with engine.connect() as connection:  # without the check: psycopg's AdminShutdown here
        assert connection.scalar(select(1)) == 1
    assert len(pings) == (2 if postgres else 0)


class _Clock:
    """Stands in for APScheduler: records when the loop asks for its next tick."""

    def __init__(self):
        self.next_runs = []

    def modify_job(self, _job_id, next_run_time):
        self.next_runs.append(next_run_time)


def test_a_long_tick_woken_again_rests_three_times_as_long_before_the_next(sqlite_app):
    service = sqlite_app.extensions["kqi_scheduler"]
    service._scheduler = clock = _Clock()
    ticks, computed = [], []

    def slow_tick():  # a long queue to plan (CPU), and submits arriving meanwhile
        ticks.append(time.monotonic())
        cpu = time.thread_time()
        while time.thread_time() - cpu < 0.2:
            pass
        computed.append(time.thread_time() - cpu)
        service._wake.set()

    service.tick = slow_tick
    began = datetime.now(UTC)
    try:
        service._run()
        # A wake during the rest leaves the planned tick where it is.
        service.wake()
    finally:
        service._scheduler = None
    assert len(ticks) == 1 and len(clock.next_runs) == 1
    # next run = the tick's end (at least 0.2 s after `began`) + 3 x the CPU it computed
    assert (clock.next_runs[0] - began).total_seconds() >= 0.2 + 3 * computed[0] - 0.05


def test_a_tick_that_waited_for_engines_is_followed_at_once_when_woken(sqlite_app):
    """The rest is measured in CPU time: a tick that spent its time waiting (starting containers on
    the engines) costs nobody anything, and the jobs submitted meanwhile start at the next tick."""
    service = sqlite_app.extensions["kqi_scheduler"]
    service._scheduler = clock = _Clock()
    ticks = []

    def waiting_tick():
        ticks.append(time.monotonic())
        if len(ticks) == 1:
            time.sleep(0.5)  # an engine answering slowly
            service._wake.set()  # a submit arrived meanwhile

    service.tick = waiting_tick
    try:
        service._run()
    finally:
        service._scheduler = None
    assert len(ticks) == 2 and clock.next_runs == []


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


def test_queue_moves_beyond_a_ticks_share_wait_while_new_positions_are_written_at_once(app, factory):
    """A start shifts every job behind it: beyond `moves_at_once` (MOVES_AT_ONCE on a tick where
    positions are not due) those moves wait for a tick that writes them all, while a new job's first
    position is written at once."""
    from kqi.scheduler import snapshot
    from kqi.scheduler.plan import plan

    api = factory.api()
    ids = [api.post("/api/v1/training/run", json={**BODY, "name": f"q{i}"}).get_json()["id"] for i in range(3)]

    def tick(moves_at_once):
        with app.app_context():
            snap = snapshot.read(db.session, now=time.time())
            snapshot.apply(db.session, snap, plan(snap.state), moves_at_once)
            db.session.commit()

    def positions():
        return {job_id: api.get(f"/api/v1/training/{job_id}").get_json()["queue_position"] for job_id in ids}

    tick(moves_at_once=0)  # first positions: written whatever the limit
    assert positions() == {ids[0]: 1, ids[1]: 2, ids[2]: 3}
    assert api.post(f"/api/v1/training/{ids[0]}/halt").status_code == 200  # the first leaves the queue
    ids.append(api.post("/api/v1/training/run", json={**BODY, "name": "late"}).get_json()["id"])
    tick(moves_at_once=1)  # two moves: over the limit
    assert positions() == {ids[0]: None, ids[1]: 2, ids[2]: 3, ids[3]: 3}  # the moves wait; the new job's is there
    tick(moves_at_once=2)  # within it
    assert positions() == {ids[0]: None, ids[1]: 1, ids[2]: 2, ids[3]: 3}
