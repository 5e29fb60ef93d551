"""A deleted job's id is never given to another job (SQLite reuses max(rowid)+1 without AUTOINCREMENT),
and the migration that makes it so keeps every row of an existing SQLite database."""
from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

from flask_migrate import downgrade, upgrade
from sqlalchemy import func, select, text

import kqi
from kqi import create_app
from kqi.accounts import auth as accounts
from kqi.extensions import db
from kqi.jobs import history as runs
from kqi.jobs import lifecycle as jobs
from kqi.models import (
    GpuAllocation,
    Job,
    JobPart,
    JobStatus,
    Node,
    Role,
    Tenant,
    User,
    utcnow,
)
from kqi.models.admin import NotificationPreference, UsageRecord
from kqi.models.data import JobAttachment, JobParent, JobSource
from kqi.models.runs import JobFavorite, JobTag
from kqi.models.services import ServiceRun
from tests.test_accounting_audit import run_for, submit


def test_a_deleted_jobs_id_is_not_reused_and_the_next_job_can_end(app, factory):
    api = factory.api()
    first = submit(api, "first")
    run_for(app, first, hours=1)
    assert api.delete(f"/api/v1/training/{first}").status_code == 204

    second = submit(api, "second")
    assert second > first
    run_for(app, second, hours=1)  # ending it records its usage: a reused id broke this
    assert api.get(f"/api/v1/training/{second}").get_json()["status"] == "Completed"
    with app.app_context():
        assert set(db.session.scalars(select(UsageRecord.job_id))) == {first, second}


def _job(session, tenant, user, name, **values):
    job = Job(tenant_id=tenant.id, user_id=user.id, name=name, image="kqi-test/busybox:1", command="true",
              cpu_milli=1000, memory_mib=512, **values)
    session.add(job)
    session.flush()
    return job


def _ended(session, job, node, hours=1.0):
    """Started on `node` `hours` ago, then ended the way the loop ends it (usage, notice, events)."""
    job.parts.append(JobPart(rank=0, node_id=node.id, gpu_indices=[0]))
    job.status, job.started_at = JobStatus.RUNNING, utcnow() - timedelta(hours=hours)
    session.flush()
    assert jobs.transition(session, job.id, JobStatus.RUNNING, JobStatus.COMPLETED, exit_code=0)


@contextmanager
def _later_columns(session):
    """The columns today's models have and this revision's schema lacks (later migrations added
    them to jobs, nodes, ...), there while the block writes through the models, dropped after it."""
    dialect = session.get_bind().dialect
    later = []
    for table in (Job.__table__, Node.__table__):
        have = {row[1] for row in session.execute(text(f'PRAGMA table_info("{table.name}")'))}
        later += [(table.name, column) for column in table.columns if column.name not in have]
    for table, column in later:
        session.execute(text(f'ALTER TABLE "{table}" ADD COLUMN "{column.name}" {column.type.compile(dialect)}'))
    yield
    for table, column in later:
        session.execute(text(f'ALTER TABLE "{table}" DROP COLUMN "{column.name}"'))
    session.commit()


def _fill_at_0010(session):
    """Jobs 1-5: 1 ended, 2 running with every kind of child row, 3 ended then deleted (its usage
    stays), 4 queued, 5 halted before it started then deleted (only its notice stays)."""
    tenant = accounts.get_or_create_tenant(session, "team")
    user = accounts.create_user(session, "alice", "password-123")
    accounts.add_membership(session, user, tenant, Role.USER)
    session.add(NotificationPreference(user_id=user.id, email="alice@example.org"))
    nodes = [Node(name=f"n{i}", url="unix:///nonexistent.sock", cpu_milli=8000, memory_mib=16384, gpu_count=2)
             for i in (1, 2)]
    session.add_all(nodes)
    session.flush()
    first = _job(session, tenant, user, "first")
    _ended(session, first, nodes[0])
    running = _job(session, tenant, user, "gang", nodes=2, gpu_milli=1000, status=JobStatus.RUNNING,
                   started_at=utcnow())
    for rank, node in enumerate(nodes):
        session.add(JobPart(job_id=running.id, rank=rank, node_id=node.id, gpu_indices=[1], container_id=f"c{rank}"))
        session.add(GpuAllocation(job_id=running.id, node_id=node.id, gpu_index=1, milli=1000))
    session.add_all([
        JobSource(job_id=running.id, git_repository="https://git.example/r.git", git_commit="a" * 40,
                  provenance={"parents": [first.id]}),
        JobParent(job_id=running.id, parent_id=first.id),
        JobAttachment(job_id=running.id, name="notes.txt", size=3, sha256="b" * 64),
        JobTag(job_id=running.id, tag="baseline", tenant_id=tenant.id),
        JobFavorite(user_id=user.id, job_id=running.id),
        ServiceRun(job_id=running.id, container_port=8888, previous_id=first.id),
    ])
    runs.record_event(session, running.id, JobStatus.RUNNING)
    third = _job(session, tenant, user, "third")
    _ended(session, third, nodes[0])
    _job(session, tenant, user, "queued")
    fifth = _job(session, tenant, user, "fifth")
    assert jobs.transition(session, fifth.id, JobStatus.QUEUED, JobStatus.USER_CANCELED, reason="halted by user")
    session.commit()
    for gone in (third, fifth):
        session.delete(gone)
    session.commit()


def _dump(session):
    """Every row of every table (but the migration's own bookkeeping), in rowid order."""
    tables = session.scalars(text("SELECT name FROM sqlite_master WHERE type = 'table' "
                                  "AND name NOT IN ('sqlite_sequence', 'alembic_version') ORDER BY name"))
    return {t: session.execute(text(f'SELECT * FROM "{t}" ORDER BY rowid')).all() for t in list(tables)}


def _jobs_schema(session):
    return (session.execute(text("PRAGMA table_info(jobs)")).all(),
            sorted(tuple(fk[2:]) for fk in session.execute(text("PRAGMA foreign_key_list(jobs)"))),  # less their order
            session.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' "
                                 "ORDER BY name")).all())


def test_the_migration_keeps_every_row_and_never_hands_out_an_id_used_before(tmp_path):
    app = create_app({"instance": str(tmp_path / "instance"), "database_url": f"sqlite:///{tmp_path / 'kqi.db'}",
                      "scheduler_enabled": False, "site_id": "tids", "secret_key": "test"})
    directory = app.extensions["migrate"].directory
    try:
        with app.app_context():
            upgrade(directory=directory, revision="0010_load")
            with _later_columns(db.session):
                _fill_at_0010(db.session)
            assert db.session.scalar(select(func.max(Job.id))) == 4
            rows, schema = _dump(db.session), _jobs_schema(db.session)
            assert len(rows["job_parts"]) == 3 and len(rows["gpu_allocations"]) == 2 and len(rows["job_events"]) == 2
            assert {r.job_id for r in rows["usage_records"]} == {1, 3} and {r.job_id for r in rows["notifications"]} == {1, 3, 5}
            db.session.remove()

            upgrade(directory=directory, revision="0011_sqlite_ids")

            assert _dump(db.session) == rows  # every row, the children of jobs included
            assert _jobs_schema(db.session) == schema  # same columns, defaults, foreign keys and indexes
            jobs_sql = db.session.scalar(text("SELECT sql FROM sqlite_master WHERE name = 'jobs'"))
            assert "AUTOINCREMENT" in jobs_sql
            assert db.session.execute(text("PRAGMA foreign_key_check")).all() == []
            assert db.session.scalar(text("PRAGMA foreign_keys")) == 1  # given back to the pool as it was
            db.session.remove()
            upgrade(directory=directory, revision="head")  # what follows writes through today's models

            node = db.session.scalar(select(Node).where(Node.name == "n1"))
            tenant, user = db.session.scalar(select(Tenant)), db.session.scalar(select(User))
            sixth = _job(db.session, tenant, user, "sixth")
            assert sixth.id == 6  # past job 5, known only from its notice
            _ended(db.session, sixth, node)
            db.session.commit()
            assert set(db.session.scalars(select(UsageRecord.job_id))) == {1, 3, 6}
            db.session.delete(sixth)
            db.session.commit()
            seventh = _job(db.session, tenant, user, "seventh")  # never started: named by no other row
            assert seventh.id == 7
            db.session.delete(seventh)
            db.session.commit()
            db.session.remove()

            downgrade(directory=directory, revision="0010_load")  # a no-op; upgrading again rebuilds
            upgrade(directory=directory, revision="head")
            tenant, user = db.session.scalar(select(Tenant)), db.session.scalar(select(User))
            assert _job(db.session, tenant, user, "eighth").id == 8  # past 7, kept by the counter alone
            db.session.rollback()
    finally:
        kqi.shutdown(app)
        with app.app_context():
            db.engine.dispose()
