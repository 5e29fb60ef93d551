"""The HTMX pages through the Flask test client: full page vs fragment, polling stops, CSRF,
tenant scoping. (tests/test_pages_browser.py drives the same pages in a real browser.)"""
from __future__ import annotations

import re

import pytest

from kqi.extensions import db
from kqi.models import Job, JobStatus
from tests.conftest import Factory

HX = {"HX-Request": "true"}


def _csrf(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def login(app, tenant="default"):
    username, password = Factory(app).user(tenant)
    client = app.test_client()
    token = _csrf(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client, _csrf(client.get("/training").get_data(as_text=True))


def test_pages_need_login(sqlite_app):
    client = sqlite_app.test_client()
    response = client.get("/training")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_login_page_shows_an_inline_error(sqlite_app):
    client = sqlite_app.test_client()
    token = _csrf(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": "x", "password": "y", "csrf_token": token})
    assert response.status_code == 401
    assert "wrong username or password" in response.get_data(as_text=True)


def test_forms_without_the_csrf_token_are_refused(sqlite_app):
    client, _ = login(sqlite_app)
    response = client.post("/training/new", data={"name": "a", "image": "b", "command": "c", "cpu": "1", "memory_gb": "1"})
    assert response.status_code == 400
    with sqlite_app.app_context():
        assert db.session.query(Job).count() == 0


def test_submit_form_shows_inline_errors_then_redirects(sqlite_app):
    client, token = login(sqlite_app)
    form = {"name": "Bad Name", "image": "kqi-test/busybox:1", "command": "echo hi", "cpu": "1", "memory_gb": "0.5",
            "gpu": "0", "priority": "normal", "env": "LR=0.1\nEPOCHS=3"}
    bad = client.post("/training/new", data=form, headers={**HX, "X-CSRFToken": token})
    html = bad.get_data(as_text=True)
    assert bad.status_code == 422
    assert 'id="err-name"' in html and "<html" not in html  # only the form fragment
    assert 'value="kqi-test/busybox:1"' in html  # what was typed is kept
    bad_env = client.post("/training/new", data={**form, "name": "ok", "env": "no-equals"}, headers={**HX, "X-CSRFToken": token})
    assert 'id="err-env"' in bad_env.get_data(as_text=True)
    good = client.post("/training/new", data={**form, "name": "good-1"}, headers={**HX, "X-CSRFToken": token})
    assert good.status_code == 204
    with sqlite_app.app_context():
        job = db.session.query(Job).one()
        assert good.headers["HX-Redirect"] == f"/training/{job.id}"
        assert job.env == {"LR": "0.1", "EPOCHS": "3"} and job.cpu_milli == 1000 and job.memory_mib == 512


def test_list_page_and_fragment(sqlite_app):
    client, token = login(sqlite_app)
    client.post("/training/new", data={"name": "listed", "image": "img", "command": "true", "cpu": "1",
                                       "memory_gb": "1", "csrf_token": token})
    full = client.get("/training")
    assert "<html" in full.get_data(as_text=True) and "listed" in full.get_data(as_text=True)
    assert "HX-Request" in full.headers["Vary"]
    fragment = client.get("/training", headers=HX).get_data(as_text=True)
    assert "<html" not in fragment and "listed" in fragment and "Queued" in fragment


def test_status_polling_stops_when_the_job_has_ended(sqlite_app):
    client, token = login(sqlite_app)
    client.post("/training/new", data={"name": "poll", "image": "img", "command": "true", "cpu": "1",
                                       "memory_gb": "1", "csrf_token": token})
    with sqlite_app.app_context():
        job_id = db.session.query(Job.id).scalar()
    assert client.get(f"/training/{job_id}/status").status_code == 200
    halted = client.post(f"/training/{job_id}/halt", headers={**HX, "X-CSRFToken": token})
    assert "UserCanceled" in halted.get_data(as_text=True)
    for part in ("status", "log", "files"):
        assert client.get(f"/training/{job_id}/{part}").status_code == 286, part
    with sqlite_app.app_context():
        assert db.session.get(Job, job_id).status == JobStatus.USER_CANCELED


def test_another_tenants_job_pages_are_404(sqlite_app):
    owner, token = login(sqlite_app, "team-a")
    owner.post("/training/new", data={"name": "secret", "image": "img", "command": "true", "cpu": "1",
                                      "memory_gb": "1", "csrf_token": token})
    with sqlite_app.app_context():
        job_id = db.session.query(Job.id).scalar()
    stranger, stranger_token = login(sqlite_app, "team-b")
    for path in ("", "/status", "/log", "/files", "/log/download", "/files/x.txt"):
        assert stranger.get(f"/training/{job_id}{path}").status_code == 404, path
    assert stranger.post(f"/training/{job_id}/halt", headers={"X-CSRFToken": stranger_token}).status_code == 404
    assert "secret" not in stranger.get("/training").get_data(as_text=True)


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/"])
def test_login_never_redirects_off_site(sqlite_app, target):
    username, password = Factory(sqlite_app).user()
    client = sqlite_app.test_client()
    token = _csrf(client.get("/login").get_data(as_text=True))
    response = client.post(f"/login?next={target}", data={"username": username, "password": password, "csrf_token": token})
    assert response.headers["Location"] == "/dashboard"


def test_nodes_page_registration_is_admin_only(sqlite_app):
    client, token = login(sqlite_app)
    assert client.get("/nodes").status_code == 200
    response = client.post("/nodes", data={"name": "n1", "url": "unix:///x", "csrf_token": token})
    assert response.status_code == 403
