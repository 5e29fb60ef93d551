"""Usage records, the audit log, site settings, the resource monitor and job-end notifications
(to a real local HTTP receiver and a real local SMTP server)."""
from __future__ import annotations

import json
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import kqi
from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.jobs import runner as job_runner
from kqi.models import Job, JobPart, JobStatus, Node, Role, utcnow
from kqi.models.admin import AuditEvent, Notification
from tests.conftest import wait_for

JOB = {"image": "kqi-test/busybox:1", "command": "true", "cpu": 2, "memory_gb": 4, "gpu": 1}


def run_for(app, job_id, hours, status=JobStatus.COMPLETED, node_name="n1"):
    """Pretend the scheduler started the job on a node `hours` ago, then end it the way the loop does."""
    with app.app_context():
        node = db.session.query(Node).filter_by(name=node_name).one_or_none()
        if node is None:
            node = Node(name=node_name, url="unix:///nonexistent.sock", cpu_milli=16000, memory_mib=65536, gpu_count=4)
            db.session.add(node)
            db.session.flush()
        job = db.session.get(Job, job_id)
        job.parts.append(JobPart(rank=0, node_id=node.id, gpu_indices=[0]))
        job.status, job.started_at = JobStatus.RUNNING, utcnow() - timedelta(hours=hours)
        db.session.commit()
        if status is not None:
            assert jobs.transition(db.session, job_id, JobStatus.RUNNING, status, exit_code=0)
            db.session.commit()


def submit(api, name):
    response = api.post("/api/v1/training/run", json={"name": name, **JOB})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def test_usage_is_recorded_when_jobs_end_and_summed_per_tenant_and_user(app, factory):
    alice, bob = factory.api("team-a", Role.MANAGER), factory.api("team-a")
    carol = factory.api("team-b")
    run_for(app, submit(alice, "a1"), hours=2)
    run_for(app, submit(bob, "b1"), hours=1)
    run_for(app, submit(carol, "c1"), hours=3)
    halted = submit(carol, "never-started")
    assert carol.post(f"/api/v1/training/{halted}/halt").get_json()["status"] == "UserCanceled"

    admin = factory.api(admin=True, role=Role.ADMIN)
    per_tenant = admin.get("/api/v1/admin/usage?period=all").get_json()
    rows = {r["tenant"]: r for r in per_tenant["items"]}
    assert per_tenant["total"] == 2 and rows["team-b"]["jobs"] == 1  # the job that never ran used nothing
    assert rows["team-a"]["cpu_hours"] == pytest.approx(2 * 3, rel=1e-3)  # 2 cores x (2 h + 1 h)
    assert rows["team-a"]["memory_gb_hours"] == pytest.approx(4 * 3, rel=1e-3)
    assert rows["team-b"]["gpu_hours"] == pytest.approx(3, rel=1e-3)

    mine = alice.get("/api/v1/tenant/usage?group=user&period=day").get_json()
    assert {r["tenant"] for r in mine["items"]} == {"team-a"} and len(mine["items"]) == 2
    assert bob.get("/api/v1/tenant/usage").status_code == 403
    csv_text = admin.get("/api/v1/admin/usage?group=user&period=month&format=csv").get_data(as_text=True)
    lines = csv_text.splitlines()
    assert lines[0] == "period,tenant,user,jobs,cpu_hours,memory_gb_hours,gpu_hours" and len(lines) == 4
    only_b = admin.get("/api/v1/admin/usage?tenant=team-b").get_json()
    assert [r["tenant"] for r in only_b["items"]] == ["team-b"]
    for bad, field in [("group=team", "group"), ("period=year", "period"), ("since=yesterday", "since"),
                       ("since=2026-02-01&until=2026-01-01", "until")]:
        response = admin.get(f"/api/v1/admin/usage?{bad}")
        assert response.status_code == 400 and response.get_json()["error"]["field"] == field
    future = admin.get("/api/v1/admin/usage?since=2999-01-01").get_json()
    assert future["total"] == 0


def test_usage_chart_is_an_svg_with_a_bar_per_period():
    from kqi.admin import accounting

    rows = [{"period": "2026-01", "tenant": "a", "gpu_hours": 2.0}, {"period": "2026-02", "tenant": "a", "gpu_hours": 4.0},
            {"period": "2026-02", "tenant": "<b>", "gpu_hours": 4.0}]
    svg = accounting.svg_chart(rows)
    assert svg.startswith("<svg") and svg.count("<rect") == 2 and "<b>" not in svg
    heights = [float(h) for h in __import__("re").findall(r'<rect [^>]*height="([0-9.]+)"', svg)]
    assert heights[1] == pytest.approx(4 * heights[0])  # 8 GPU-hours in February against 2 in January
    assert accounting.svg_chart([]).count("<rect") == 0


def test_audit_log_records_who_did_what_and_never_a_secret(app, factory):
    admin = factory.api(admin=True, role=Role.ADMIN)
    secret_password, new_password, webhook = "Sup3r-secret-pw", "An0ther-secret-pw", "http://127.0.0.1:9/hook-SECRET"
    created = admin.post("/api/v1/admin/users", json={"username": "dana", "password": secret_password,
                                                      "tenants": [{"tenant": "default", "role": "user"}]}).get_json()
    client = app.test_client()
    assert client.post("/api/v1/account/login", json={"username": "dana", "password": "wrong-guess"}).status_code == 401
    token = client.post("/api/v1/account/login", json={"username": "dana", "password": secret_password}).get_json()["token"]
    dana = type(admin)(client, token)
    job_id = submit(dana, "audited")
    dana.post(f"/api/v1/training/{job_id}/halt")
    dana.put("/api/v1/account/notifications", json={"webhook_url": webhook})
    assert dana.get("/api/v1/admin/audit").status_code == 403
    admin.put(f"/api/v1/admin/users/{created['id']}", json={"password": new_password})

    events = admin.get("/api/v1/admin/audit?per_page=100").get_json()
    actions = [(e["username"], e["action"], e["status"]) for e in events["items"]]
    assert ("dana", "login", 401) in actions and ("dana", "login", 200) in actions
    assert ("dana", "run_training", 201) in actions and ("dana", "halt_training", 200) in actions
    assert ("dana", "set_notifications", 200) in actions and any(a[1] == "update_user" for a in actions)
    assert any(a[1] == "create_user" for a in actions)
    assert all(e["ip"] == "127.0.0.1" for e in events["items"])

    filtered = admin.get("/api/v1/admin/audit?username=dana&action=training").get_json()
    assert {e["action"] for e in filtered["items"]} == {"run_training", "halt_training"}
    assert admin.get("/api/v1/admin/audit?since=2999-01-01").get_json()["total"] == 0
    assert admin.get("/api/v1/admin/audit?until=2000-01-01").get_json()["total"] == 0
    assert admin.get("/api/v1/admin/audit?since=now").status_code == 400

    with app.app_context():
        stored = " ".join(f"{e.username} {e.tenant} {e.action} {e.target} {e.ip}" for e in db.session.query(AuditEvent))
    for secret in (secret_password, new_password, token, "hook-SECRET", "wrong-guess"):
        assert secret not in stored


def test_log_and_output_limits_are_site_settings_with_defaults_and_checks(app, factory):
    """What they do to a job: tests/test_streams_on_engines.py."""
    admin = factory.api(admin=True, role=Role.ADMIN)
    settings = admin.get("/api/v1/admin/settings").get_json()
    assert settings["max_log_gb"] == 10 and settings["max_output_gb"] == 50
    for bad in (0, -1, "lots", 10**6, True):
        answer = admin.put("/api/v1/admin/settings", json={"max_log_gb": bad})
        assert answer.status_code == 400 and answer.get_json()["error"]["field"] == "max_log_gb", bad
    assert admin.put("/api/v1/admin/settings", json={"max_output_gb": 0.5}).get_json()["max_output_gb"] == 0.5
    assert factory.api().put("/api/v1/admin/settings", json={"max_output_gb": 1}).status_code == 403
    assert admin.get("/api/v1/admin/settings").get_json() == {**settings, "max_output_gb": 0.5}


def test_site_settings_proxies_reach_every_container(app, factory):
    admin = factory.api(admin=True, role=Role.ADMIN)
    settings = admin.get("/api/v1/admin/settings").get_json()
    assert settings["http_proxy"] == "" and settings["default_cpu"] == 1
    changed = admin.put("/api/v1/admin/settings", json={"http_proxy": "http://proxy.lan:3128", "no_proxy": "localhost,.lan",
                                                         "default_gpu": 1})
    assert changed.status_code == 200 and changed.get_json()["default_gpu"] == 1
    for bad, field in [({"http_proxy": "a b"}, "http_proxy"), ({"smtp_port": 0}, "smtp_port"), ({"colour": "red"}, "colour"),
                       ({"notebook_image": "bad image"}, "notebook_image"), ({}, None)]:
        response = admin.put("/api/v1/admin/settings", json=bad)
        assert response.status_code == 400 and response.get_json()["error"]["field"] == field
    assert admin.get("/api/v1/admin/settings").get_json()["http_proxy"] == "http://proxy.lan:3128"

    user = factory.api()
    assert user.put("/api/v1/admin/settings", json={"http_proxy": ""}).status_code == 403
    job_id = submit(user, "proxied")
    run_for(app, job_id, hours=0, status=None)
    with app.app_context():
        job = db.session.get(Job, job_id)
        env = job_runner.container_env(job, job.parts[0], kqi.settings_of(app))
    assert env["http_proxy"] == env["HTTP_PROXY"] == "http://proxy.lan:3128"
    assert env["no_proxy"] == "localhost,.lan" and "https_proxy" not in env


def test_monitor_shows_containers_per_node_and_tenant_and_admins_kill(app, factory):
    admin = factory.api(admin=True, role=Role.ADMIN)
    user = factory.api("team-m")
    running = submit(user, "watched")
    run_for(app, running, hours=1, status=None)
    monitor = admin.get("/api/v1/admin/monitor").get_json()
    node = next(n for n in monitor["nodes"] if n["name"] == "n1")
    assert [c["job_id"] for c in node["containers"]] == [running]
    assert node["used"] == {"cpu": 2, "memory_gb": 4, "gpu": 1} and node["capacity"]["gpu"] == 4
    assert monitor["tenants"] == [{"tenant": "team-m", "jobs": 1, "containers": 1, "cpu": 2, "memory_gb": 4, "gpu": 1}]

    assert user.post(f"/api/v1/admin/jobs/{running}/kill").status_code == 403
    killed = admin.post(f"/api/v1/admin/jobs/{running}/kill")
    assert killed.status_code == 200 and killed.get_json()["halt_requested"] is True
    queued = submit(user, "queued")
    assert admin.post(f"/api/v1/admin/jobs/{queued}/kill").get_json()["status"] == "UserCanceled"
    assert admin.post(f"/api/v1/admin/jobs/{queued}/kill").status_code == 409
    assert admin.post("/api/v1/admin/jobs/999999/kill").status_code == 404


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (the http.server spelling)
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook_receiver():
    _Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Receiver.received
    server.shutdown()
    server.server_close()


@pytest.fixture
def smtp_receiver():
    from aiosmtpd.controller import Controller

    class Handler:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
            self.messages.append((envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    with socket.socket() as probe:  # aiosmtpd checks its port by connecting to it, so it needs a real number
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield "127.0.0.1", port, handler.messages
    controller.stop()


def test_job_end_notifications_reach_a_webhook_and_an_smtp_server(app, factory, webhook_receiver, smtp_receiver):
    url, posted = webhook_receiver
    smtp_host, smtp_port, mails = smtp_receiver
    admin = factory.api(admin=True, role=Role.ADMIN)
    admin.put("/api/v1/admin/settings", json={"smtp_host": smtp_host, "smtp_port": smtp_port, "smtp_from": "kqi@example.org"})
    user, quiet = factory.api(), factory.api()
    choice = user.put("/api/v1/account/notifications", json={"webhook_url": url, "email": "me@example.org"}).get_json()
    assert choice == {"webhook": True, "email": "me@example.org"}  # the URL is never shown back
    assert url not in user.get("/api/v1/account/notifications").get_data(as_text=True)
    for bad in ({"webhook_url": "ftp://x/"}, {"webhook_url": "http://u:p@host/"}, {"email": "not-an-address"}):
        assert user.put("/api/v1/account/notifications", json=bad).status_code == 400

    run_for(app, submit(user, "notified"), hours=1, status=JobStatus.FAILED)
    run_for(app, submit(quiet, "silent"), hours=1)
    scheduler = app.extensions["kqi_scheduler"]
    scheduler.notifier.kick()
    wait_for(lambda: len(posted) == 1 and len(mails) == 1, timeout=20, tick=scheduler.notifier.kick)
    assert posted[0]["text"].startswith("kqi: training notified") and "Failed" in posted[0]["text"]
    recipients, content = mails[0]
    assert recipients == ["me@example.org"] and "notified" in content and "From: kqi@example.org" in content
    with app.app_context():
        assert all(n.sent for n in db.session.query(Notification))


def test_an_unreachable_receiver_is_retried_a_bounded_number_of_times(app, factory):
    from kqi.admin import notify

    user = factory.api()
    # Port 9 (discard) on loopback is closed: the connection is refused at once.
    user.put("/api/v1/account/notifications", json={"webhook_url": "http://127.0.0.1:9/hook"})
    run_for(app, submit(user, "lost"), hours=1)
    with app.app_context():
        for _ in range(notify.MAX_ATTEMPTS + 2):
            notify.deliver_pending(db.session, kqi.box_of(app))
        note = db.session.query(Notification).one()
        assert not note.sent and note.attempts == notify.MAX_ATTEMPTS
        assert "127.0.0.1:9" not in note.last_error and note.last_error.startswith("ConnectionError")
