"""The dashboard's figures (kqi/cluster/dashboard.py), the cluster samples behind its chart
(kqi/cluster/samples.py), GET /api/v1/dashboard and the page's fragments. Rows are written
directly with chosen times, on SQLite and PostgreSQL."""
from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from kqi import charts
from kqi.accounts import auth as accounts
from kqi.admin import accounting
from kqi.cluster import dashboard
from kqi.cluster import samples as cluster_samples
from kqi.extensions import db
from kqi.models import GpuAllocation, Job, JobPart, JobStatus, Node, Tenant, User, utcnow
from kqi.models.dashboard import ClusterSample

NOW = datetime(2026, 11, 19, 12, 0)  # a Thursday: the week began on Monday 2026-11-16 00:00
_names = itertools.count(1)


def principal(username: str, tenant: str = "default"):
    user = db.session.scalar(select(User).where(User.username == username))
    return accounts.principal_in(db.session, user, tenant)


def make_job(who, status=JobStatus.QUEUED, *, gpu=0.0, cpu=1.0, memory_gb=1.0, nodes=1, kind="training",
             started=None, ended=None, node=None, queue_position=None) -> Job:
    """A job row in the given state; an ended one gets its usage record as the real transition writes it."""
    job = Job(tenant_id=who.tenant.id, user_id=who.user.id, kind=kind, name=f"job-{next(_names)}", image="busybox",
              command="true", cpu_milli=round(cpu * 1000), memory_mib=round(memory_gb * 1024),
              gpu_milli=round(gpu * 1000), nodes=nodes, status=status, started_at=started, completed_at=ended,
              queue_position=queue_position, created_at=started or NOW)
    db.session.add(job)
    db.session.flush()
    if node is not None:
        db.session.add(JobPart(job_id=job.id, rank=0, node_id=node.id, gpu_indices=[]))
    if ended is not None:
        accounting.record_usage(db.session, job.id)
    return job


def make_node(gpus: int) -> Node:
    node = Node(name=f"node-{next(_names)}", url="unix:///nowhere", cpu_milli=8000, memory_mib=32768, gpu_count=gpus)
    db.session.add(node)
    db.session.flush()
    return node


def test_week_starts_on_monday_midnight_utc():
    assert dashboard.week_start(NOW) == datetime(2026, 11, 16)
    assert dashboard.week_start(datetime(2026, 11, 16, 0, 0)) == datetime(2026, 11, 16)
    assert dashboard.week_start(datetime(2026, 11, 22, 23, 59)) == datetime(2026, 11, 16)


def test_gpu_hours_this_week_sum_ended_jobs_inside_the_week_and_running_jobs_so_far(app, factory):
    me, _ = factory.user()
    colleague, _ = factory.user()
    elsewhere, _ = factory.user("other-team")
    with app.app_context():
        who = principal(me)
        monday = datetime(2026, 11, 16)
        # 1 GPU for 2 h on Wednesday: 2
        make_job(who, JobStatus.COMPLETED, gpu=1, started=NOW - timedelta(days=1, hours=2), ended=NOW - timedelta(days=1))
        # 2 GPUs from Sunday 22:00 to Monday 02:00: 8 GPU-hours, of which 2 h x 2 GPUs = 4 in this week
        make_job(who, JobStatus.FAILED, gpu=2, started=monday - timedelta(hours=2), ended=monday + timedelta(hours=2))
        # all of it last week: nothing; a CPU-only job: nothing
        make_job(who, JobStatus.COMPLETED, gpu=1, started=monday - timedelta(days=2), ended=monday - timedelta(days=1))
        make_job(who, JobStatus.COMPLETED, gpu=0, started=NOW - timedelta(hours=5), ended=NOW - timedelta(hours=4))
        # running: half a GPU on each of 2 nodes since 10:00 -> 1 GPU x 2 h = 2
        make_job(who, JobStatus.RUNNING, gpu=0.5, nodes=2, started=NOW - timedelta(hours=2))
        make_job(who, JobStatus.QUEUED, gpu=4)  # waiting: uses nothing
        # somebody else's in my tenant, and mine-by-name in another tenant: not mine here
        make_job(principal(colleague), JobStatus.COMPLETED, gpu=4, started=NOW - timedelta(hours=3), ended=NOW)
        make_job(principal(elsewhere, "other-team"), JobStatus.RUNNING, gpu=4, started=NOW - timedelta(hours=3))
        db.session.commit()

        week = dashboard.gpu_hours_this_week(db.session, who, NOW)
        assert week == {"since": "2026-11-16T00:00:00Z", "ended": pytest.approx(6.0), "running": pytest.approx(2.0),
                        "total": pytest.approx(8.0)}
        # an hour later the running job has added another GPU-hour; the ended ones have not changed
        later = dashboard.gpu_hours_this_week(db.session, who, NOW + timedelta(hours=1))
        assert later["ended"] == pytest.approx(6.0) and later["running"] == pytest.approx(3.0)


def test_tenant_quota_against_what_its_active_jobs_hold(app, factory):
    member, _ = factory.user("team-q")
    outsider, _ = factory.user("team-r")
    with app.app_context():
        who = principal(member, "team-q")
        tenant = db.session.get(Tenant, who.tenant.id)
        tenant.quota_cpu_milli, tenant.quota_memory_mib, tenant.quota_gpu_milli = 8000, 16 * 1024, 4000
        # a gang job on 2 nodes holds its resources twice
        make_job(who, JobStatus.RUNNING, cpu=1, memory_gb=2, gpu=1, nodes=2, started=NOW)
        make_job(who, JobStatus.STARTING, cpu=0.5, memory_gb=0.5, gpu=0.5)
        for _ in range(3):
            make_job(who, JobStatus.QUEUED, cpu=4, memory_gb=8, gpu=4)
        make_job(who, JobStatus.COMPLETED, cpu=8, gpu=4, started=NOW - timedelta(hours=1), ended=NOW)
        make_job(principal(outsider, "team-r"), JobStatus.RUNNING, cpu=16, gpu=8, started=NOW)
        db.session.commit()

        use = dashboard.tenant_use(db.session, tenant)
        assert use["name"] == "team-q" and use["queued"] == 3 and use["running"] == 2
        assert use["cpu"] == {"used": 2.5, "quota": 8.0}
        assert use["memory_gb"] == {"used": 4.5, "quota": 16.0}
        assert use["gpu"] == {"used": 2.5, "quota": 4.0}

        unlimited = dashboard.tenant_use(db.session, db.session.get(Tenant, principal(outsider, "team-r").tenant.id))
        assert unlimited["gpu"] == {"used": 8.0, "quota": None} and unlimited["queued"] == 0


def test_samples_measure_the_cluster_record_when_due_and_prune_after_the_retention(app, factory):
    me, _ = factory.user()
    with app.app_context():
        who = principal(me)
        small, big = make_node(2), make_node(4)
        job = make_job(who, JobStatus.RUNNING, gpu=2, started=NOW, node=big)
        shared = make_job(who, JobStatus.RUNNING, gpu=0.5, started=NOW, node=small)
        db.session.add_all([GpuAllocation(job_id=job.id, node_id=big.id, gpu_index=i, milli=1000) for i in (0, 1)])
        db.session.add(GpuAllocation(job_id=shared.id, node_id=small.id, gpu_index=0, milli=500))
        for _ in range(3):
            make_job(who, JobStatus.QUEUED)
        make_job(who, JobStatus.COMPLETED, started=NOW - timedelta(hours=1), ended=NOW)
        db.session.commit()
        assert cluster_samples.measure(db.session) == {"gpu_total": 6, "gpu_allocated_milli": 2500, "queued": 3,
                                                       "running": 2}

        now = utcnow()
        expired = ClusterSample(at=now - timedelta(days=7, minutes=1), gpu_total=1, gpu_allocated_milli=0, queued=0, running=0)
        kept = ClusterSample(at=now - timedelta(days=6, hours=23), gpu_total=1, gpu_allocated_milli=0, queued=0, running=0)
        db.session.add_all([expired, kept])
        db.session.commit()
        clock = [1000.0]
        recorder = cluster_samples.Recorder(interval_s=60, retention_days=7, clock=lambda: clock[0])
        first = recorder.record_if_due(db.session)
        db.session.commit()
        assert (first.gpu_total, first.gpu_allocated_milli, first.queued, first.running) == (6, 2500, 3, 2)
        assert abs((first.at - now).total_seconds()) < 60
        remaining = db.session.scalars(select(ClusterSample.id).order_by(ClusterSample.at)).all()
        assert remaining == [kept.id, first.id]  # the one past 7 days is gone

        clock[0] += 59
        assert recorder.record_if_due(db.session) is None  # not yet due: no query, no row
        clock[0] += 1
        assert recorder.record_if_due(db.session) is not None
        db.session.commit()
        assert db.session.query(ClusterSample).count() == 3


def test_the_scheduler_tick_records_a_sample_once_per_interval(app):
    scheduler = app.extensions["kqi_scheduler"]  # interval 60 s: the first tick records, the next does not
    scheduler.tick()
    scheduler.tick()
    with app.app_context():
        assert db.session.query(ClusterSample).count() == 1


def test_history_holds_the_samples_of_the_last_day_oldest_first(app):
    with app.app_context():
        def sample(hours_ago, allocated_milli, total, queued):
            db.session.add(ClusterSample(at=NOW - timedelta(hours=hours_ago), gpu_total=total,
                                         gpu_allocated_milli=allocated_milli, queued=queued, running=1))

        sample(25, 4000, 4, 9)  # older than a day
        sample(1, 1000, 4, 2)
        sample(23, 3000, 4, 5)
        sample(0.5, 0, 0, 0)  # no GPUs registered at that moment
        sample(-1, 4000, 4, 7)  # after `now`: not in the series
        db.session.commit()

        found = dashboard.history(db.session, NOW)
        assert [round((NOW - s.at).total_seconds() / 3600, 1) for s in found["samples"]] == [23, 1, 0.5]
        points = dashboard.history_dict(found)["points"]
        assert [(p["utilisation_pct"], p["queued"]) for p in points] == [(75.0, 5), (25.0, 2), (None, 0)]
        assert points[0]["at"] == "2026-11-18T13:00:00Z" and points[0]["gpu_allocated"] == 3.0
        assert [s.queued for s in dashboard.history(db.session, NOW, hours=2)["samples"]] == [2, 0]


def test_api_dashboard_shows_my_jobs_my_tenant_and_the_cluster(app, factory):
    me = factory.api()
    colleague = factory.api()
    stranger = factory.api("team-z")
    mine = [me.post("/api/v1/training/run", json={"name": f"mine-{i}", "image": "busybox", "command": "true", "cpu": 1,
                                                  "memory_gb": 1}).get_json()["id"] for i in range(2)]
    colleague.post("/api/v1/training/run", json={"name": "theirs", "image": "busybox", "command": "true", "cpu": 1,
                                                 "memory_gb": 1})
    stranger.post("/api/v1/training/run", json={"name": "secret-z", "image": "busybox", "command": "true", "cpu": 1,
                                                "memory_gb": 1})
    with app.app_context():
        db.session.add(ClusterSample(at=utcnow() - timedelta(hours=2), gpu_total=2, gpu_allocated_milli=1000,
                                     queued=4, running=0))
        db.session.commit()

    response = me.get("/api/v1/dashboard")
    assert response.status_code == 200
    body = response.get_json()
    assert [j["id"] for j in body["jobs"]["queued"]] == mine and body["jobs"]["queued_total"] == 2
    assert body["jobs"]["queued"][0]["kind"] == "training" and body["jobs"]["running"] == []
    assert body["tenant"] == "default" and body["tenant_use"]["queued"] == 3  # mine and my colleague's
    assert body["cluster"]["queued"] == 4  # every tenant's, counted, never named
    assert "secret-z" not in response.get_data(as_text=True)
    assert [p["utilisation_pct"] for p in body["history"]["points"]] == [50.0]
    assert me.get("/api/v1/dashboard?hours=1").get_json()["history"]["points"] == []
    for bad in ("0", "745", "1.5", "day"):
        refused = me.get(f"/api/v1/dashboard?hours={bad}")
        assert refused.status_code == 400 and refused.get_json()["error"]["field"] == "hours", bad


def test_line_chart_breaks_at_gaps_and_missing_values_and_escapes_its_texts():
    start = datetime(2026, 11, 18, 12, 0)
    minute = timedelta(minutes=1)
    points = [(start + i * minute, 50.0) for i in range(3)]  # a run of three
    points += [(start + 30 * minute, 100.0), (start + 31 * minute, None), (start + 32 * minute, 0.0)]
    points += [(start + 33 * minute, 25.0)]
    svg = charts.line_chart(points, start, start + timedelta(hours=24), "<b>label</b>", y_max=100, unit="%",
                            gap=3 * minute)
    assert svg.startswith("<svg") and "<b>" not in svg and "&lt;b&gt;" in svg
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 1  # [3 points] [100 alone] [0, 25]
    assert re.findall(r">(\d+%)</text>", svg) == ["0%", "50%", "100%"]
    assert re.findall(r">(\d\d:\d\d)</text>", svg)[:2] == ["12:00", "18:00"]
    top = re.search(r'<circle cx="[\d.]+" cy="([\d.]+)"', svg).group(1)
    assert float(top) == charts.TOP  # 100% of 100 is the top of the plot
    empty = charts.line_chart([], start, start + timedelta(hours=24), "queue")
    assert "<polyline" not in empty and "no samples" in empty
    assert [charts.nice_ceiling(v) for v in (0, 0.5, 3, 10, 11, 180)] == [1, 1, 5, 10, 20, 200]
    assert [charts.nice_ceiling(v, whole=True) for v in (0, 1, 3, 5, 11, 41)] == [2, 2, 4, 10, 20, 100]
    queue = charts.line_chart([(start, 3.0)], start, start + timedelta(hours=24), "queue", counts=True)
    assert re.findall(r">(\d+)</text>", queue) == ["0", "2", "4"]  # never half a job on the scale


def _logged_in(app):
    from tests.conftest import Factory

    username, password = Factory(app).user()
    client = app.test_client()
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    return client, response, username


def test_login_lands_on_the_dashboard_whose_panels_poll_for_fragments(sqlite_app):
    client, response, username = _logged_in(sqlite_app)
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard"
    assert client.get("/").headers["Location"] == "/dashboard"
    with sqlite_app.app_context():
        cluster_samples.record(db.session)
        who = principal(username)
        kinds = {kind: make_job(who, JobStatus.RUNNING, kind=kind, started=NOW).id
                 for kind in ("training", "inference", "notebook", "preprocessing")}
        db.session.commit()

    full = client.get("/dashboard")
    html = full.get_data(as_text=True)
    assert full.status_code == 200 and "<html" in html and "HX-Request" in full.headers["Vary"]
    assert re.search(r'class="on">Dashboard</a>', html)
    assert 'hx-get="/dashboard" hx-trigger="every 5s"' in html
    assert 'hx-get="/dashboard/history" hx-trigger="every 60s"' in html
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 2

    live = client.get("/dashboard", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in live and "My jobs" in live and 'class="chart"' not in live
    # each kind links to its own page; preprocessing runs have none and open on the training page
    links = re.findall(r'<a href="/(\w+)/(\d+)">#\d+', live)
    assert {int(job_id): area for area, job_id in links} == {
        kinds["training"]: "training", kinds["inference"]: "inference", kinds["notebook"]: "notebooks",
        kinds["preprocessing"]: "training"}
    history = client.get("/dashboard/history", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in history and history.count('class="chart"') == 2
    assert client.get("/dashboard/history").headers["Location"] == "/dashboard"
