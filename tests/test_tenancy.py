"""Tenants, users, memberships and roles over the API, and a walk over every route of the app as a
user of another tenant (on SQLite and PostgreSQL)."""
from __future__ import annotations

import re

import pytest

import kqi
from kqi.models import Role

GOOD_JOB = {"name": "secret-a-job", "image": "kqi-test/busybox:1", "command": "true", "cpu": 1, "memory_gb": 0.5}


def login(app, username, password, tenant=None):
    body = {"username": username, "password": password, **({"tenant": tenant} if tenant else {})}
    return app.test_client().post("/api/v1/account/login", json=body)


def test_admin_creates_users_with_memberships_and_they_log_in_per_tenant(app, factory):
    admin = factory.api(admin=True, role=Role.ADMIN)
    for name in ("vision", "speech"):
        assert admin.post("/api/v1/admin/tenants", json={"name": name, "notebook_default_hours": 8,
                                                         "notebook_max_hours": 72}).status_code == 201
    created = admin.post("/api/v1/admin/users", json={"username": "alice", "password": "alice-pass-1",
                                                      "tenants": [{"tenant": "vision", "role": "manager"},
                                                                  {"tenant": "speech", "role": "user"}]})
    assert created.status_code == 201, created.get_json()
    alice = created.get_json()
    assert created.headers["Location"].endswith(f"/api/v1/admin/users/{alice['id']}")
    assert {(m["tenant"]["name"], m["role"]) for m in alice["tenants"]} == {("vision", "manager"), ("speech", "user")}
    assert "password" not in str(alice) and "hash" not in str(alice)

    token = login(app, "alice", "alice-pass-1", "speech").get_json()["token"]
    me = app.test_client().get("/api/v1/account", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert me["tenant"]["name"] == "speech" and me["role"] == "user"
    switched = app.test_client().post("/api/v1/account/tenant", json={"tenant": "vision"},
                                      headers={"Authorization": f"Bearer {token}"})
    assert switched.status_code == 200
    new_token = switched.get_json()["token"]
    me = app.test_client().get("/api/v1/account", headers={"Authorization": f"Bearer {new_token}"}).get_json()
    assert me["tenant"]["name"] == "vision" and me["role"] == "manager"
    refused = app.test_client().post("/api/v1/account/tenant", json={"tenant": "default"},
                                     headers={"Authorization": f"Bearer {new_token}"})
    assert refused.status_code == 403 and refused.get_json()["error"]["field"] == "tenant"

    tenant = admin.get("/api/v1/admin/tenants?per_page=100").get_json()
    vision = next(t for t in tenant["items"] if t["name"] == "vision")
    assert tenant["total"] >= 3 and vision["notebook_default_hours"] == 8 and vision["notebook_max_hours"] == 72
    bad = admin.put(f"/api/v1/admin/tenants/{vision['id']}", json={"notebook_default_hours": 100})
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "notebook_default_hours"


@pytest.mark.parametrize("body, field", [
    ({"username": "bob", "password": "short", "tenants": [{"tenant": "default", "role": "user"}]}, "password"),
    ({"username": "b b", "password": "long-enough", "tenants": [{"tenant": "default", "role": "user"}]}, "username"),
    ({"username": "bob", "password": "long-enough", "tenants": [{"tenant": "nope", "role": "user"}]}, "tenants"),
    ({"username": "bob", "password": "long-enough", "tenants": [{"tenant": "default", "role": "boss"}]}, "role"),
    ({"username": "bob", "password": "long-enough", "tenants": []}, "tenants"),
    ({"username": "bob", "password": "long-enough", "tenants": "default"}, "tenants"),
    ({"username": "bob", "password": "long-enough", "tenants": [], "is_admin": "yes"}, "is_admin"),
])
def test_bad_user_creation_is_refused_and_writes_nothing(app, factory, body, field):
    admin = factory.api(admin=True, role=Role.ADMIN)
    response = admin.post("/api/v1/admin/users", json=body)
    assert response.status_code == 400 and response.get_json()["error"]["field"] == field, response.get_json()
    assert admin.get("/api/v1/admin/users?q=bob").get_json()["total"] == 0


def test_reset_password_and_disable_revoke_access(app, factory):
    admin = factory.api(admin=True, role=Role.ADMIN)
    username, password = factory.user()
    user_id = admin.get(f"/api/v1/admin/users?q={username}").get_json()["items"][0]["id"]
    token = login(app, username, password).get_json()["token"]
    headers = {"Authorization": f"Bearer {token}"}

    assert admin.put(f"/api/v1/admin/users/{user_id}", json={"password": "brand-new-pass"}).status_code == 200
    assert app.test_client().get("/api/v1/account", headers=headers).status_code == 401  # old token revoked
    assert login(app, username, password).status_code == 401
    token = login(app, username, "brand-new-pass").get_json()["token"]

    disabled = admin.put(f"/api/v1/admin/users/{user_id}", json={"disabled": True}).get_json()
    assert disabled["disabled"] is True
    assert app.test_client().get("/api/v1/account", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert login(app, username, "brand-new-pass").status_code == 401
    assert admin.put(f"/api/v1/admin/users/{user_id}", json={"disabled": False}).status_code == 200
    assert login(app, username, "brand-new-pass").status_code == 200

    me = admin.get("/api/v1/account").get_json()
    my_id = admin.get(f"/api/v1/admin/users?q={me['username']}").get_json()["items"][0]["id"]
    assert admin.put(f"/api/v1/admin/users/{my_id}", json={"disabled": True}).status_code == 409
    assert admin.put(f"/api/v1/admin/users/{my_id}", json={"is_admin": False}).status_code == 409
    assert admin.put(f"/api/v1/admin/users/{user_id}", json={"password": "x"}).status_code == 400


def test_memberships_by_admin_and_by_a_tenant_manager(app, factory):
    admin = factory.api(admin=True, role=Role.ADMIN)
    manager = factory.api("team-a", Role.MANAGER)
    member = factory.api("team-a", Role.USER)
    outsider_name, _ = factory.user("team-b")
    outsider = admin.get(f"/api/v1/admin/users?q={outsider_name}").get_json()["items"][0]
    team_a = next(t for t in admin.get("/api/v1/admin/tenants").get_json()["items"] if t["name"] == "team-a")

    members = manager.get("/api/v1/tenant/members").get_json()
    assert members["total"] == 2 and {m["role"] for m in members["items"]} == {"manager", "user"}
    assert member.get("/api/v1/tenant/members").status_code == 403
    assert member.post("/api/v1/tenant/members", json={"username": outsider_name, "role": "user"}).status_code == 403

    added = manager.post("/api/v1/tenant/members", json={"username": outsider_name, "role": "user"})
    assert added.status_code == 200 and added.get_json()["username"] == outsider_name
    assert manager.put(f"/api/v1/tenant/members/{outsider['id']}", json={"role": "manager"}).get_json()["role"] == "manager"
    assert manager.put(f"/api/v1/tenant/members/{outsider['id']}", json={"role": "admin"}).status_code == 400
    assert manager.delete(f"/api/v1/tenant/members/{outsider['id']}").status_code == 204
    assert manager.delete(f"/api/v1/tenant/members/{outsider['id']}").status_code == 404

    # The system administrator's own membership is out of a manager's reach.
    admin_name = admin.get("/api/v1/account").get_json()["username"]
    admin_id = admin.get(f"/api/v1/admin/users?q={admin_name}").get_json()["items"][0]["id"]
    assert admin.put(f"/api/v1/admin/users/{admin_id}/tenants/{team_a['id']}", json={"role": "user"}).status_code == 200
    promoted = admin.put(f"/api/v1/admin/users/{outsider['id']}/tenants/{team_a['id']}", json={"role": "manager"})
    assert ("team-a", "manager") in {(m["tenant"]["name"], m["role"]) for m in promoted.get_json()["tenants"]}
    assert admin.delete(f"/api/v1/admin/users/{outsider['id']}/tenants/{team_a['id']}").status_code == 204
    assert admin.delete(f"/api/v1/admin/users/{outsider['id']}/tenants/{team_a['id']}").status_code == 404


def test_login_is_rate_limited_per_username_and_address(app, factory):
    username, password = factory.user()
    client = app.test_client()
    limit = kqi.settings_of(app).login_max_failures
    for _ in range(limit):
        assert client.post("/api/v1/account/login", json={"username": username, "password": "wrong-one"}).status_code == 401
    throttled = client.post("/api/v1/account/login", json={"username": username, "password": password})
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert throttled.get_json()["error"]["code"] == "too_many_requests"
    other, other_password = factory.user()
    assert client.post("/api/v1/account/login", json={"username": other, "password": other_password}).status_code == 200
    from_elsewhere = client.post("/api/v1/account/login", json={"username": username, "password": password},
                                 environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert from_elsewhere.status_code == 200


# -- every route, as somebody who must not reach tenant A's objects

PUBLIC_ROUTES = {"/api/v1/account/login", "/api/v1/openapi.json", "/healthz", "/login", "/logout",
                 "/static/<path:filename>"}


def _objects_of_tenant_a(app, factory):
    """Tenant A with a user, a manager, a job and whatever else the app lets a member create."""
    a_user = factory.api("tenant-a", Role.MANAGER)
    job = a_user.post("/api/v1/training/run", json=GOOD_JOB).get_json()
    ids = {"job_id": job["id"]}
    ids.update(_preprocessing_of(a_user))
    from kqi.extensions import db
    from kqi.models import Membership, Tenant

    with app.app_context():
        tenant = db.session.query(Tenant).filter_by(name="tenant-a").one()
        ids["tenant_id"] = tenant.id
        ids["user_id"] = db.session.query(Membership).filter_by(tenant_id=tenant.id).first().user_id
    return a_user, ids


def _preprocessing_of(a_user):
    """A data item, a preprocessing definition and a (queued) run of it on that item."""
    import io

    data = a_user.post("/api/v1/data", data={"name": "secret-a-data", "files": [(io.BytesIO(b"x"), "x.txt")]},
                       content_type="multipart/form-data").get_json()
    definition = a_user.post("/api/v1/preprocessings", json={**GOOD_JOB, "name": "secret-a-pre"}).get_json()
    [run] = a_user.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [data["id"]]}).get_json()["items"]
    return {"data_id": data["id"], "preprocessing_id": definition["id"], "run_id": run["id"]}


def _fill(rule, ids):
    def value(match):
        name = match.group(2)
        if name == "path":
            return "model.txt"
        return str(ids.get(name, 1))  # ids of other kinds of objects: the first one, made by tenant A

    return re.sub(r"<(?:([a-z]+):)?([a-z_]+)>", value, rule)


def _routes(app):
    for rule in app.url_map.iter_rules():
        if rule.rule in PUBLIC_ROUTES:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def test_every_route_refuses_another_tenants_objects(app, factory):
    a_user, ids = _objects_of_tenant_a(app, factory)
    b_manager = factory.api("tenant-b", Role.MANAGER)
    b_user = factory.api("tenant-b", Role.USER)
    pages = app.test_client()
    username, password = factory.user("tenant-b", Role.MANAGER)
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', pages.get("/login").get_data(as_text=True)).group(1)
    assert pages.post("/login", data={"username": username, "password": password, "csrf_token": csrf}).status_code == 302

    checked, wrong = 0, []
    for rule, method in _routes(app):
        url = _fill(rule.rule, ids)
        for who in (b_manager, b_user):
            if url.startswith("/api/"):
                response = who.open(url, method, json={})
            else:
                # With a valid CSRF token, so that a refusal is for the tenant, not for the token.
                response = pages.open(url, method=method, data={"csrf_token": csrf}, headers={"X-CSRFToken": csrf})
            if rule.arguments:
                refused = response.status_code in (403, 404)
            elif rule.rule.startswith(("/api/v1/admin", "/admin")):
                refused = response.status_code == 403
            else:  # the caller's own tenant: nothing of tenant A may show
                refused = response.status_code < 500 and b"secret-a-job" not in response.data
            if not refused:
                wrong.append((method, url, response.status_code))
            checked += 1
    assert checked > 40
    assert not wrong, f"routes that did not refuse another tenant's objects: {wrong}"
    # Nothing of A's was changed by all that.
    job = a_user.get(f"/api/v1/training/{ids['job_id']}").get_json()
    assert job["status"] == "Queued" and not job["halt_requested"]


def test_non_admins_get_403_on_every_admin_route(app, factory):
    manager = factory.api("default", Role.MANAGER)
    for rule, method in _routes(app):
        if rule.rule.startswith("/api/v1/admin"):
            response = manager.open(_fill(rule.rule, {}), method, json={})
            assert response.status_code == 403, (method, rule.rule, response.status_code)
