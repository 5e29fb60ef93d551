"""Why a queued job waits, as the API answers it: in words (`pending_reasons`) and as data
(`pending_reason_codes`), both written by the scheduler's tick (snapshot.apply), on SQLite and
PostgreSQL; rows written before the codes existed get theirs at the next tick."""
from __future__ import annotations

import time

from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, select, text, update

import kqi
from kqi.extensions import db
from kqi.models import Job, Node, NodeGpu, Role
from kqi.scheduler import snapshot
from kqi.scheduler.plan import plan
from tests.conftest import Factory, make_app
from tests.test_load import counted

BODY = {"image": "busybox", "command": "true", "cpu": 1, "memory_gb": 1}
QUOTA_WORDS = ["tenant gpu quota 0/1 (job needs 2)"]
QUOTA_CODES = [{"code": "quota", "params": {"asked": 2000, "limit": 1000, "resource": "gpu_milli", "used": 0}}]


def _tick(app, queue: snapshot.QueueCache) -> None:
    """The loop's read, plan and write, without starting containers."""
    with app.app_context():
        snap = snapshot.read(db.session, now=time.time(), queue=queue)
        snapshot.apply(db.session, snap, plan(snap.state))
        db.session.commit()


def _writes_reasons(statement: str) -> bool:
    return statement.startswith("UPDATE jobs") and "pending_reason_codes" in statement


def test_a_job_over_its_tenant_quota_waits_with_the_quota_in_words_and_codes(app, factory):
    with app.app_context():  # room for the job, were it not for the quota
        node = Node(name="small", url="unix:///nowhere/small.sock", cpu_milli=8000, memory_mib=8192)
        db.session.add(node)
        db.session.flush()
        db.session.add_all(NodeGpu(node_id=node.id, gpu_index=i) for i in range(2))
        db.session.commit()
    api = factory.api()
    admin = factory.api(admin=True, role=Role.ADMIN)
    tenant_id = api.get("/api/v1/account").get_json()["tenant"]["id"]
    assert admin.put(f"/api/v1/admin/tenants/{tenant_id}", json={"quota": {"gpu": 1}}).status_code == 200
    job_id = api.post("/api/v1/training/run", json={**BODY, "name": "big", "gpu": 2}).get_json()["id"]
    assert api.get(f"/api/v1/training/{job_id}").get_json()["pending_reason_codes"] == []  # not planned yet
    queue = snapshot.QueueCache()
    _tick(app, queue)
    shown = api.get(f"/api/v1/training/{job_id}").get_json()
    assert shown["status"] == "Queued" and shown["queue_position"] == 1
    assert shown["pending_reasons"] == QUOTA_WORDS and shown["pending_reason_codes"] == QUOTA_CODES
    listed = api.get("/api/v1/training").get_json()["items"]
    assert [(j["id"], j["pending_reason_codes"]) for j in listed] == [(job_id, QUOTA_CODES)]

    # Unchanged reasons are not written again; a row from before the codes (the migration leaves
    # them empty beside the words) is rewritten at the next read of it, here after a restart.
    with counted(app, _writes_reasons) as writes:
        _tick(app, queue)
    assert writes == [0]
    with app.app_context():
        db.session.execute(update(Job).where(Job.id == job_id).values(pending_reason_codes=[]))
        db.session.commit()
    with counted(app, _writes_reasons) as writes:
        _tick(app, snapshot.QueueCache())
    assert writes == [1]
    assert api.get(f"/api/v1/training/{job_id}").get_json()["pending_reason_codes"] == QUOTA_CODES

    # Without the quota the job is placed: its reasons are cleared, words and codes.
    assert admin.put(f"/api/v1/admin/tenants/{tenant_id}", json={"quota": {"gpu": None}}).status_code == 200
    _tick(app, queue)
    shown = api.get(f"/api/v1/training/{job_id}").get_json()
    assert (shown["status"], shown["pending_reasons"], shown["pending_reason_codes"]) == ("Starting", [], [])


def test_the_migration_gives_existing_jobs_empty_codes_and_its_downgrade_takes_the_column_away(tmp_path, db_url):
    app = make_app(tmp_path, db_url)
    directory = app.extensions["migrate"].directory
    try:
        job_id = Factory(app).api().post("/api/v1/training/run", json={**BODY, "name": "old"}).get_json()["id"]
        with app.app_context():
            downgrade(directory=directory, revision="0011_sqlite_ids")
            assert "pending_reason_codes" not in {c["name"] for c in inspect(db.engine).get_columns("jobs")}
            db.session.execute(text("UPDATE jobs SET pending_reasons = :words WHERE id = :id"),
                               {"words": '["no nodes"]', "id": job_id})  # as the scheduler wrote it then
            db.session.commit()
            upgrade(directory=directory, revision="head")
            assert db.session.execute(select(Job.pending_reasons, Job.pending_reason_codes)
                                      .where(Job.id == job_id)).one() == (["no nodes"], [])
        _tick(app, snapshot.QueueCache())  # the next tick gives the row its codes
        with app.app_context():
            assert db.session.get(Job, job_id).pending_reason_codes == [{"code": "no_nodes", "params": {}}]
    finally:
        kqi.shutdown(app)
        with app.app_context():
            db.engine.dispose()
