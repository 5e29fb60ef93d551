"""Accounts, tokens, validation and tenant scoping over the JSON API, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest

from kqi.models import Role

GOOD = {"name": "mnist-1", "image": "kqi-test/busybox:1", "command": "echo hi", "cpu": 1, "memory_gb": 0.5}


def test_healthz(app):
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_login_returns_token_tenant_and_expiry(app, factory):
    username, password = factory.user("team-a")
    response = app.test_client().post("/api/v1/account/login", json={"username": username, "password": password})
    assert response.status_code == 200
    body = response.get_json()
    assert body["tenant"]["name"] == "team-a" and isinstance(body["tenant"]["id"], int)
    assert body["token"].startswith("kqi_") and body["expires_at"].endswith("Z")


def test_login_chooses_among_tenants_and_refuses_others(app, factory):
    from kqi.accounts import auth as accounts
    from kqi.extensions import db
    from kqi.models import User

    username, password = factory.user("team-a")
    with app.app_context():
        user = db.session.query(User).filter_by(username=username).one()
        accounts.add_membership(db.session, user, accounts.get_or_create_tenant(db.session, "team-b"), Role.MANAGER)
        db.session.commit()
    client = app.test_client()
    chosen = client.post("/api/v1/account/login", json={"username": username, "password": password, "tenant": "team-b"})
    assert chosen.get_json()["tenant"]["name"] == "team-b"
    refused = client.post("/api/v1/account/login", json={"username": username, "password": password, "tenant": "team-c"})
    assert refused.status_code == 403
    assert refused.get_json()["error"]["field"] == "tenant"


@pytest.mark.parametrize("body", [
    {"username": "nobody", "password": "password-123"},
    {"username": "user1", "password": "wrong-password"},
])
def test_login_wrong_credentials_is_401_with_one_message(app, factory, body):
    factory.user()
    response = app.test_client().post("/api/v1/account/login", json=body)
    assert response.status_code == 401
    assert response.get_json()["error"] == {"code": "unauthorized", "message": "wrong username or password", "field": None}


def test_token_is_stored_hashed(app, factory):
    from kqi.extensions import db
    from kqi.models import ApiToken

    api = factory.api()
    with app.app_context():
        stored = [row.token_hash for row in db.session.query(ApiToken)]
    assert api.token not in stored and len(stored[0]) == 64


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nope", "Basic abc"])
def test_api_needs_a_valid_bearer_token(app, header):
    headers = {"Authorization": header} if header else {}
    response = app.test_client().get("/api/v1/training", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_submit_returns_201_queued_with_location(app, factory):
    api = factory.api()
    response = api.post("/api/v1/training/run", json={**GOOD, "gpu": 0.25, "env": {"LR": "0.1", "EPOCHS": 3},
                                                      "memo": "first try", "time_limit_s": 600})
    assert response.status_code == 201, response.get_json()
    job = response.get_json()
    assert job["status"] == "Queued" and isinstance(job["id"], int)
    assert response.headers["Location"].endswith(f"/api/v1/training/{job['id']}")
    assert job["env"] == {"LR": "0.1", "EPOCHS": "3"} and job["gpu"] == 0.25 and job["time_limit_s"] == 600
    fetched = api.get(f"/api/v1/training/{job['id']}").get_json()
    for key in ("status", "node", "gpu_indices", "exit_code", "reason", "created_at", "started_at", "completed_at"):
        assert key in fetched
    assert fetched["node"] is None and fetched["started_at"] is None


@pytest.mark.parametrize("change, field", [
    ({"cpu": None}, "cpu"),
    ({"cpu": -1}, "cpu"),
    ({"cpu": 0}, "cpu"),
    ({"cpu": 10**9}, "cpu"),
    ({"cpu": "many"}, "cpu"),
    ({"cpu": True}, "cpu"),
    ({"memory_gb": None}, "memory_gb"),
    ({"memory_gb": -0.5}, "memory_gb"),
    ({"memory_gb": 1e12}, "memory_gb"),
    ({"gpu": -1}, "gpu"),
    ({"gpu": 1.5}, "gpu"),
    ({"gpu": 1000}, "gpu"),
    ({"name": None}, "name"),
    ({"name": "x" * 31}, "name"),
    ({"name": "Upper"}, "name"),
    ({"name": "../etc"}, "name"),
    ({"image": "bad image;rm -rf /"}, "image"),
    ({"command": ""}, "command"),
    ({"env": {"1BAD": "x"}}, "env"),
    ({"env": {"A-B": "x"}}, "env"),
    ({"env": {"TRAINING_ID": "7"}}, "env"),
    ({"env": {"NVIDIA_VISIBLE_DEVICES": "all"}}, "env"),
    ({"env": {"KQI_TOKEN": "x"}}, "env"),
    ({"env": {"A": {"nested": 1}}}, "env"),
    ({"env": ["A=1"]}, "env"),
    ({"time_limit_s": 0}, "time_limit_s"),
    ({"time_limit_s": 1.5}, "time_limit_s"),
    ({"priority": "urgent"}, "priority"),
    ({"partition": "* for notebooks"}, "partition"),  # '*' and spaces are no partition's characters
    ({"partition": "a b"}, "partition"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_submissions_get_a_clear_error_and_write_nothing(app, factory, change, field):
    api = factory.api()
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    response = api.post("/api/v1/training/run", json=body)
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["field"] == field and error["code"] == "invalid" and error["message"]
    assert api.get("/api/v1/training").get_json()["total"] == 0


@pytest.mark.parametrize("data, content_type", [
    ("not json", "application/json"),
    ("[1, 2]", "application/json"),
    ("", "application/json"),
    ("name=x", "application/x-www-form-urlencoded"),
])
def test_non_json_bodies_are_refused(app, factory, data, content_type):
    api = factory.api()
    response = api.post("/api/v1/training/run", data=data, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert set(response.get_json()["error"]) == {"code", "message", "field"}


def test_list_is_paged_newest_first_with_total(app, factory):
    api = factory.api()
    ids = [api.post("/api/v1/training/run", json={**GOOD, "name": f"job-{i}"}).get_json()["id"] for i in range(5)]
    first = api.get("/api/v1/training?per_page=2").get_json()
    assert first["total"] == 5 and first["page"] == 1 and first["per_page"] == 2
    assert [j["id"] for j in first["items"]] == ids[::-1][:2]
    last = api.get("/api/v1/training?per_page=2&page=3").get_json()
    assert [j["id"] for j in last["items"]] == [ids[0]] and last["total"] == 5
    # a page past the end has no row to carry the count: it is counted on its own
    beyond = api.get("/api/v1/training?per_page=2&page=4").get_json()
    assert beyond["items"] == [] and beyond["total"] == 5
    assert api.get("/api/v1/training?per_page=2&page=4&status=Running").get_json()["total"] == 0
    filtered = api.get("/api/v1/training?per_page=2&page=2&name=job-").get_json()
    assert filtered["total"] == 5 and [j["id"] for j in filtered["items"]] == ids[::-1][2:4]
    assert api.get("/api/v1/training?per_page=0").status_code == 400
    assert api.get("/api/v1/training?status=Nope").get_json()["error"]["field"] == "status"
    assert api.get("/api/v1/training?status=Queued").get_json()["total"] == 5


def test_other_tenants_jobs_are_invisible(app, factory):
    owner = factory.api("team-a")
    stranger = factory.api("team-b")
    job_id = owner.post("/api/v1/training/run", json=GOOD).get_json()["id"]
    for url in (f"/api/v1/training/{job_id}", f"/api/v1/training/{job_id}/log", f"/api/v1/training/{job_id}/files",
                f"/api/v1/training/{job_id}/files/model.txt"):
        response = stranger.get(url)
        assert response.status_code == 404, url
        assert response.get_json()["error"]["code"] == "not_found"
    assert stranger.post(f"/api/v1/training/{job_id}/halt").status_code == 404
    assert stranger.get("/api/v1/training").get_json()["total"] == 0
    assert owner.get(f"/api/v1/training/{job_id}").status_code == 200


def test_halting_a_queued_job_cancels_it_and_twice_is_a_conflict(app, factory):
    api = factory.api()
    job_id = api.post("/api/v1/training/run", json=GOOD).get_json()["id"]
    halted = api.post(f"/api/v1/training/{job_id}/halt").get_json()
    assert halted["status"] == "UserCanceled" and halted["completed_at"]
    again = api.post(f"/api/v1/training/{job_id}/halt")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "conflict"


def test_node_registration_is_admin_only_and_validated(app, factory):
    user = factory.api()
    assert user.post("/api/v1/admin/nodes", json={"name": "n1", "url": "unix:///x"}).status_code == 403
    admin = factory.api(admin=True, role=Role.ADMIN)
    for body, field in [({"name": "n1", "url": "http://x"}, "url"), ({"name": "n1", "url": "tcp://host"}, "url"),
                        ({"name": "Bad Name", "url": "unix:///x"}, "name"), ({"name": "n1", "url": "unix:///x", "gpus": -1}, "gpus"),
                        ({"name": "n1", "url": "unix:///x", "extra": 1}, "extra")]:
        response = admin.post("/api/v1/admin/nodes", json=body)
        assert response.status_code == 400 and response.get_json()["error"]["field"] == field, body
    unreachable = admin.post("/api/v1/admin/nodes", json={"name": "n1", "url": "unix:///nonexistent/docker.sock"})
    assert unreachable.status_code == 422 and unreachable.get_json()["error"]["field"] == "url"
    assert admin.get("/api/v1/admin/nodes").get_json()["items"] == []


def test_unknown_route_and_method_use_the_error_shape(app, factory):
    api = factory.api()
    missing = api.get("/api/v1/nothing-here")
    assert missing.status_code in (401, 404)
    wrong_method = api.client.delete("/api/v1/training", headers={"Authorization": f"Bearer {api.token}"})
    assert wrong_method.status_code == 405 and wrong_method.get_json()["error"]["code"] == "method_not_allowed"


def test_admin_creates_tenants_with_quotas(app, factory):
    admin = factory.api(admin=True, role=Role.ADMIN)
    created = admin.post("/api/v1/admin/tenants", json={"name": "vision", "display_name": "Vision team",
                                                        "quota": {"cpu": 16, "memory_gb": 64, "gpu": 4}})
    assert created.status_code == 201, created.get_json()
    tenant = created.get_json()
    assert tenant["quota"] == {"cpu": 16, "memory_gb": 64, "gpu": 4} and tenant["display_name"] == "Vision team"
    assert created.headers["Location"].endswith(f"/api/v1/admin/tenants/{tenant['id']}")
    for body, field in [({"name": "Vision"}, "name"), ({"name": "vision"}, "name"), ({"name": "x", "quota": {"gpu": -1}}, "gpu"),
                        ({"name": "x", "quota": {"tpu": 1}}, "quota"), ({"name": "x", "quota": 3}, "quota")]:
        response = admin.post("/api/v1/admin/tenants", json=body)
        assert response.status_code in (400, 409) and response.get_json()["error"]["field"] == field, body
    updated = admin.client.put(f"/api/v1/admin/tenants/{tenant['id']}", json={"quota": {"gpu": 2}},
                               headers={"Authorization": f"Bearer {admin.token}"}).get_json()
    assert updated["quota"] == {"cpu": None, "memory_gb": None, "gpu": 2}
    names = [t["name"] for t in admin.get("/api/v1/admin/tenants").get_json()["items"]]
    assert "vision" in names
    user = factory.api()
    assert user.post("/api/v1/admin/tenants", json={"name": "mine"}).status_code == 403
    assert user.get("/api/v1/admin/tenants").status_code == 403
