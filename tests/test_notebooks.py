"""Notebooks and TensorBoard over the API without engines (SQLite and PostgreSQL): the lifetime
policy, validation, tenancy, the site's command templates, and placement by the node flags."""
from __future__ import annotations

import pytest

import kqi
from kqi.extensions import db
from kqi.kinds import interactive as services
from kqi.models import Job, Role
from kqi.models.services import ServiceRun
from kqi.scheduler import snapshot
from kqi.scheduler.plan import plan


def tenant_with_policy(factory, default_hours, max_hours):
    admin = factory.api(admin=True, role=Role.ADMIN)
    name = f"t{len(admin.get('/api/v1/admin/tenants?per_page=100').get_json()['items'])}"
    response = admin.post("/api/v1/admin/tenants", json={"name": name, "notebook_default_hours": default_hours,
                                                         "notebook_max_hours": max_hours})
    assert response.status_code == 201, response.get_json()
    return admin, factory.api(tenant=name)


def test_a_notebook_gets_the_site_defaults_and_the_tenants_default_lifetime(app, factory):
    _, api = tenant_with_policy(factory, 8, 72)
    response = api.post("/api/v1/notebooks/run", json={"name": "nb-1"})
    assert response.status_code == 201, response.get_json()
    notebook = response.get_json()
    assert response.headers["Location"].endswith(f"/api/v1/notebooks/{notebook['id']}")
    assert notebook["kind"] == "notebook" and notebook["status"] == "Queued"
    assert notebook["image"] == "jupyter/base-notebook:latest" and (notebook["cpu"], notebook["memory_gb"]) == (1, 1)
    assert notebook["lifetime_hours"] == 8 and notebook["url"] is None and notebook["remaining_s"] is None
    assert "{token}" in notebook["command"]  # the template; the token itself is never shown but in the link
    with app.app_context():
        row = db.session.get(ServiceRun, notebook["id"])
        assert row.container_port == 8888 and row.token_sealed and len(services.token(kqi.box_of(app), row)) == 48
        assert services.token(kqi.box_of(app), row) not in row.token_sealed  # sealed at rest
    assert [n["id"] for n in api.get("/api/v1/notebooks").get_json()["items"]] == [notebook["id"]]
    assert api.get("/api/v1/training").get_json()["total"] == 0  # not a training


@pytest.mark.parametrize("asked, expected", [(None, None), (0.5, 0.5), (1000, 1000)])
def test_unlimited_and_any_lifetime_only_where_the_tenant_sets_no_maximum(app, factory, asked, expected):
    _, api = tenant_with_policy(factory, None, None)
    response = api.post("/api/v1/notebooks/run", json={"name": "nb", "lifetime_hours": asked})
    assert response.status_code == 201 and response.get_json()["lifetime_hours"] == expected
    assert api.post("/api/v1/notebooks/run", json={"name": "nb"}).get_json()["lifetime_hours"] is None


@pytest.mark.parametrize("body, field", [
    ({"name": "nb", "lifetime_hours": 73}, "lifetime_hours"),  # over the tenant's maximum
    ({"name": "nb", "lifetime_hours": None}, "lifetime_hours"),  # unlimited, where a maximum is set
    ({"name": "nb", "lifetime_hours": 0}, "lifetime_hours"),
    ({"name": "nb", "lifetime_hours": "long"}, "lifetime_hours"),
    ({"name": "NB"}, "name"),
    ({"name": "nb", "command": "rm -rf /"}, "command"),  # the command is the site's, never the user's
    ({"name": "nb", "time_limit_s": 5}, "time_limit_s"),
    ({"name": "nb", "image": "bad image"}, "image"),
    ({"name": "nb", "cpu": -1}, "cpu"),
    ({"name": "nb", "parent_ids": [999999]}, "parent_ids"),
])
def test_bad_notebooks_are_refused_and_nothing_is_written(app, factory, body, field):
    _, api = tenant_with_policy(factory, 8, 72)
    response = api.post("/api/v1/notebooks/run", json=body)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["field"] == field
    with app.app_context():
        assert db.session.query(Job).count() == 0 and db.session.query(ServiceRun).count() == 0


def test_other_tenants_notebooks_and_tensorboards_are_404(app, factory):
    api = factory.api()
    other = factory.api(tenant="elsewhere")
    notebook = api.post("/api/v1/notebooks/run", json={"name": "mine"}).get_json()
    training = api.post("/api/v1/training/run", json={"name": "t", "image": "x", "command": "true", "cpu": 1,
                                                       "memory_gb": 1}).get_json()
    for method, url in [("GET", f"/api/v1/notebooks/{notebook['id']}"), ("POST", f"/api/v1/notebooks/{notebook['id']}/halt"),
                        ("POST", f"/api/v1/notebooks/{notebook['id']}/rerun"), ("DELETE", f"/api/v1/notebooks/{notebook['id']}"),
                        ("GET", f"/api/v1/notebooks/{notebook['id']}/log"),
                        ("GET", f"/api/v1/training/{training['id']}/tensorboard"),
                        ("POST", f"/api/v1/training/{training['id']}/tensorboard")]:
        assert other.open(url, method).status_code == 404, (method, url)
    assert other.get("/api/v1/notebooks").get_json()["total"] == 0
    assert api.get(f"/api/v1/notebooks/{training['id']}").status_code == 404  # a training is not a notebook


def test_halt_rerun_and_delete_follow_the_notebooks_state(app, factory):
    api = factory.api()
    notebook = api.post("/api/v1/notebooks/run", json={"name": "nb", "env": {"A": "1"}, "memo": "m"}).get_json()
    refused = api.post(f"/api/v1/notebooks/{notebook['id']}/rerun")
    assert refused.status_code == 409  # still queued
    assert api.delete(f"/api/v1/notebooks/{notebook['id']}").status_code == 409
    assert api.post(f"/api/v1/notebooks/{notebook['id']}/halt").get_json()["status"] == "UserCanceled"
    rerun = api.post(f"/api/v1/notebooks/{notebook['id']}/rerun")
    assert rerun.status_code == 201, rerun.get_json()
    again = rerun.get_json()
    assert again["previous_id"] == notebook["id"] and again["id"] != notebook["id"]
    assert (again["name"], again["env"], again["memo"], again["lifetime_hours"]) == ("nb", {"A": "1"}, "m", None)
    assert api.delete(f"/api/v1/notebooks/{notebook['id']}").status_code == 204
    assert api.get(f"/api/v1/notebooks/{notebook['id']}").status_code == 404
    assert api.get(f"/api/v1/notebooks/{again['id']}").get_json()["previous_id"] is None


def test_tensorboard_needs_an_ended_run(app, factory):
    api = factory.api()
    training = api.post("/api/v1/training/run", json={"name": "t", "image": "x", "command": "true", "cpu": 1,
                                                       "memory_gb": 1}).get_json()
    assert api.get(f"/api/v1/training/{training['id']}/tensorboard").get_json() == {"tensorboard": None}
    refused = api.post(f"/api/v1/training/{training['id']}/tensorboard")
    assert refused.status_code == 409 and "ended" in refused.get_json()["error"]["message"]
    api.post(f"/api/v1/training/{training['id']}/halt")
    first = api.post(f"/api/v1/training/{training['id']}/tensorboard")
    assert first.status_code == 201, first.get_json()
    board = first.get_json()["tensorboard"]
    assert board["kind"] == "tensorboard" and board["run_id"] == training["id"] and board["url"] is None
    second = api.post(f"/api/v1/training/{training['id']}/tensorboard")  # one per run at a time
    assert second.status_code == 200 and second.get_json()["tensorboard"]["id"] == board["id"]
    stopped = api.delete(f"/api/v1/training/{training['id']}/tensorboard").get_json()["tensorboard"]
    assert stopped["status"] == "UserCanceled"
    notebook = api.post("/api/v1/notebooks/run", json={"name": "nb"}).get_json()
    assert api.post(f"/api/v1/training/{notebook['id']}/tensorboard").status_code == 404  # not a run


@pytest.mark.parametrize("key, value, ok", [
    ("notebook_command", "busybox httpd -f -p {port} -h /kqi/output", True),
    ("notebook_command", "jupyter lab --token={token} --x={secret}", False),
    ("notebook_command", "jupyter 'unterminated", False),
    ("notebook_command", "", False),
    ("notebook_port", 70000, False),
    ("tensorboard_command", "tensorboard --logdir /kqi/parent --port {port}", True),
    ("tensorboard_image", "bad image", False),
])
def test_site_service_settings_are_checked(app, factory, key, value, ok):
    admin = factory.api(admin=True, role=Role.ADMIN)
    response = admin.put("/api/v1/admin/settings", json={key: value})
    assert (response.status_code == 200) is ok, response.get_json()
    if ok:
        assert response.get_json()[key] == value
    else:
        assert response.get_json()["error"]["field"] == key


def test_argv_replaces_placeholders_inside_elements_without_a_shell():
    template = "sh -c 'echo $0' --port={port} --token={token}"
    assert services.argv(template, 8888, "abc") == ("sh", "-c", "echo $0", "--port=8888", "--token=abc")


def test_services_are_placed_only_on_nodes_whose_flag_allows_them(app, factory):
    api = factory.api()
    with app.app_context():
        from kqi.models import Node

        db.session.add_all([Node(name="closed", url="unix:///x.sock", cpu_milli=8000, memory_mib=16000,
                                 allow_notebooks=False, allow_tensorboard=False, partition="gpu"),
                            Node(name="open", url="unix:///y.sock", cpu_milli=8000, memory_mib=16000, partition="cpu")])
        db.session.commit()
    notebook = api.post("/api/v1/notebooks/run", json={"name": "nb"}).get_json()
    in_gpu = api.post("/api/v1/notebooks/run", json={"name": "nb2", "partition": "gpu"}).get_json()
    training = api.post("/api/v1/training/run", json={"name": "t", "image": "x", "command": "true", "cpu": 1,
                                                       "memory_gb": 1, "partition": "gpu"}).get_json()
    with app.app_context():
        snap = snapshot.read(db.session, now=0)
        result = plan(snap.state)
        placed = {p.job_id: p.parts[0].node for p in result.placements}
        assert placed == {notebook["id"]: "open", training["id"]: "closed"}
        snapshot.apply(db.session, snap, result)
        db.session.commit()
    waiting = api.get(f"/api/v1/notebooks/{in_gpu['id']}").get_json()
    assert waiting["status"] == "Queued"
    assert waiting["pending_reasons"] == ["no node of partition gpu allows notebooks"]
    assert waiting["pending_reason_codes"] == [{"code": "node_feature_missing",
                                                "params": {"feature": "notebook", "partition": "gpu"}}]


def test_the_settings_page_changes_the_service_commands(sqlite_app):
    from tests.test_admin_pages import browser, post

    admin = browser(sqlite_app, role=Role.ADMIN, admin=True)
    command = "busybox httpd -f -p {port} -h '/kqi/output'"
    refused = post(admin, "/admin/settings", notebook_command="jupyter lab --x={secret}")
    assert refused.status_code == 422 and "placeholders" in refused.get_data(as_text=True)
    assert post(admin, "/admin/settings", notebook_command=command, notebook_port="9000").status_code == 303
    page = admin.get("/admin/settings").get_data(as_text=True)
    assert 'value="9000"' in page and "busybox httpd -f -p {port} -h &#39;/kqi/output&#39;" in page


def test_a_rerun_restores_output_writable_by_the_notebook_user(tmp_path):
    """Notebook images run as a non-root user: restored folders and files must stay writable."""
    import io
    import tarfile

    from kqi.jobs.files import JobFiles

    files = JobFiles(tmp_path, 7)
    (files.output / "nb" / "ckpt").mkdir(parents=True)
    (files.output / "nb" / "ckpt" / "w.bin").write_bytes(b"w")
    (files.output / "notes.txt").write_text("n")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        files.add_output_to(archive, services.OUTPUT_ARCHIVE_PREFIX, writable=True)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as archive:
        members = {m.name: (m.isdir(), m.mode & 0o777, m.uid) for m in archive}
    assert members == {"kqi/output/nb": (True, 0o777, 0), "kqi/output/nb/ckpt": (True, 0o777, 0),
                       "kqi/output/nb/ckpt/w.bin": (False, 0o666, 0), "kqi/output/notes.txt": (False, 0o666, 0)}
