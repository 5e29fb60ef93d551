"""Data, datasets, git servers, registries and their credentials over the API (SQLite and PostgreSQL)."""
from __future__ import annotations

import hashlib
import io
import os

import pytest

import kqi
from kqi.models import Role

pytestmark = []


def upload(api, name="d1", files=(("a.csv", b"x,y\n1,2\n"),), **fields):
    form = {"name": name, **fields, "files": [(io.BytesIO(body), fname) for fname, body in files]}
    return api.post("/api/v1/data", data=form, content_type="multipart/form-data")


def blobs(app):
    root = os.path.join(app.instance_path, "blobs")
    return sorted(f for _, _, names in os.walk(root) for f in names if len(f) == 64)


def call(api, method, url, **kw):
    return getattr(api.client, method)(url, headers={"Authorization": f"Bearer {api.token}"}, **kw)


def test_upload_list_search_download_edit_and_delete(app, factory):
    api = factory.api()
    response = upload(api, "mnist train", files=[("a.csv", b"1,2\n"), ("b.png", b"\x89PNG...")],
                      memo="handwritten digits", tags="images, mnist ,images")
    assert response.status_code == 201, response.get_json()
    record = response.get_json()
    assert response.headers["Location"].endswith(f"/api/v1/data/{record['id']}")
    assert record["name"] == "mnist train" and record["tags"] == ["images", "mnist"]
    assert [(f["name"], f["size"], f["sha256"]) for f in record["files"]] == [
        ("a.csv", 4, hashlib.sha256(b"1,2\n").hexdigest()), ("b.png", 7, hashlib.sha256(b"\x89PNG...").hexdigest())]

    # the same content twice is stored once
    again = upload(api, "copy", files=[("same.csv", b"1,2\n")]).get_json()
    assert len(blobs(app)) == 2
    upload(api, "other", files=[("o.txt", b"other")], memo="nothing to see")

    listing = api.get("/api/v1/data?per_page=2").get_json()
    assert listing["total"] == 3 and len(listing["items"]) == 2 and listing["page"] == 1
    assert [d["name"] for d in api.get("/api/v1/data?q=MNIST").get_json()["items"]] == ["mnist train"]
    assert [d["name"] for d in api.get("/api/v1/data?q=digits").get_json()["items"]] == ["mnist train"]
    assert [d["name"] for d in api.get("/api/v1/data?tag=images").get_json()["items"]] == ["mnist train"]
    assert api.get("/api/v1/data?tag=imag").get_json()["items"] == []  # whole tags only
    assert api.get("/api/v1/data?q=%25").get_json()["total"] == 0  # LIKE wildcards are literal

    file_id = record["files"][1]["id"]
    download = api.get(f"/api/v1/data/{record['id']}/files/{file_id}")
    assert download.status_code == 200 and download.get_data() == b"\x89PNG..."
    assert 'filename=b.png' in download.headers["Content-Disposition"]

    edited = call(api, "put", f"/api/v1/data/{record['id']}", json={"memo": "new memo", "tags": ["x"]})
    assert edited.status_code == 200 and edited.get_json()["memo"] == "new memo" and edited.get_json()["tags"] == ["x"]
    assert edited.get_json()["name"] == "mnist train"

    # a plain streamed body adds a file (curl -T)
    added = call(api, "put", f"/api/v1/data/{record['id']}/files?name=c.bin", data=b"\x00" * 5000,
                 content_type="application/octet-stream")
    assert added.status_code == 201, added.get_json()
    assert [f["name"] for f in added.get_json()["files"]] == ["a.csv", "b.png", "c.bin"]
    assert call(api, "put", f"/api/v1/data/{record['id']}/files?name=c.bin", data=b"1").status_code == 409
    assert len(blobs(app)) == 4  # the refused duplicate left nothing behind

    # deleting: a blob goes when nothing names it any more
    assert call(api, "delete", f"/api/v1/data/{record['id']}").status_code == 204
    assert api.get(f"/api/v1/data/{record['id']}").status_code == 404
    assert len(blobs(app)) == 2  # "1,2\n" is still named by "copy"
    assert call(api, "delete", f"/api/v1/data/{again['id']}").status_code == 204
    assert len(blobs(app)) == 1


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "a/b", "..", "bad\nname", "tab\tname"])
def test_untrusted_file_names_are_refused_and_nothing_is_kept(app, factory, name):
    api = factory.api()
    response = upload(api, files=[("fine.txt", b"fine"), (name, b"evil")])
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["field"] == "files"
    assert api.get("/api/v1/data").get_json()["total"] == 0
    assert blobs(app) == []
    raw = call(api, "post", "/api/v1/data", data={"name": "n"}, content_type="multipart/form-data")
    assert raw.status_code == 400 and "at least one file" in raw.get_json()["error"]["message"]


@pytest.mark.parametrize("name", ["..%2Fevil", "%2Fetc%2Fpasswd", "a%5Cb", "bad%0Aname", "%7F", ""])
def test_untrusted_names_of_streamed_bodies_are_refused(app, factory, name):
    api = factory.api()
    record = upload(api).get_json()
    response = call(api, "put", f"/api/v1/data/{record['id']}/files?name={name}", data=b"evil")
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "files", response.get_json()
    assert len(blobs(app)) == 1


def test_upload_over_the_limit_is_refused_with_413(tmp_path, db_url):
    from tests.conftest import Factory, make_app

    app = make_app(tmp_path, db_url, max_upload_gb=1000 / 2**30)  # 1000 bytes
    api = Factory(app).api()
    response = upload(api, files=[("big.bin", b"x" * 2000)])
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "too_large"
    assert blobs(app) == []
    kqi.shutdown(app)


def test_another_tenants_data_is_not_found(app, factory):
    mine = upload(factory.api()).get_json()
    other = factory.api(tenant="other")
    assert other.get(f"/api/v1/data/{mine['id']}").status_code == 404
    assert other.get(f"/api/v1/data/{mine['id']}/files/{mine['files'][0]['id']}").status_code == 404
    assert other.get("/api/v1/data").get_json()["total"] == 0
    response = other.post("/api/v1/datasets", json={"name": "s", "flat": True, "data_ids": [mine["id"]]})
    assert response.status_code == 400 and f"data {mine['id']} not found" in response.get_json()["error"]["message"]


def test_datasets_create_edit_copy_lock_and_delete(app, factory):
    api = factory.api()
    d1, d2, d3 = (upload(api, f"d{i}", files=[(f"f{i}.txt", f"{i}".encode())]).get_json()["id"] for i in range(3))
    response = api.post("/api/v1/datasets", json={"name": "split", "memo": "m",
                                                  "entries": {"training": [d1, d2], "validation": [d3]}})
    assert response.status_code == 201, response.get_json()
    ds = response.get_json()
    assert ds["entries"] == {"training": [d1, d2], "validation": [d3], "testing": []}
    assert ds["locked"] is False and len(ds["content_hash"]) == 64
    flat = api.post("/api/v1/datasets", json={"name": "flat", "flat": True, "data_ids": [d1]}).get_json()
    assert flat["flat"] is True and flat["data_ids"] == [d1] and flat["content_hash"] != ds["content_hash"]

    bad = api.post("/api/v1/datasets", json={"name": "x", "entries": {"train": [d1]}})
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "entries"
    assert api.post("/api/v1/datasets", json={"name": "x", "entries": {"training": [99999]}}).status_code == 400

    edited = call(api, "put", f"/api/v1/datasets/{ds['id']}", json={"name": "split2", "entries": {"training": [d1]}})
    assert edited.status_code == 200 and edited.get_json()["entries"]["training"] == [d1]
    assert edited.get_json()["content_hash"] != ds["content_hash"]

    # data in a dataset cannot be deleted
    assert call(api, "delete", f"/api/v1/data/{d1}").status_code == 409

    copy = api.post(f"/api/v1/datasets/{ds['id']}/copy")
    assert copy.status_code == 201 and copy.get_json()["name"] == "split2 (copy)"
    assert copy.get_json()["content_hash"] == edited.get_json()["content_hash"]

    with app.app_context():
        from kqi.extensions import db
        from kqi.models.data import Dataset
        db.session.get(Dataset, ds["id"]).locked = True
        db.session.commit()
    refused = call(api, "put", f"/api/v1/datasets/{ds['id']}", json={"name": "again", "entries": {"training": [d2]}})
    assert refused.status_code == 409 and "locked" in refused.get_json()["error"]["message"]
    assert call(api, "delete", f"/api/v1/datasets/{ds['id']}").status_code == 409
    # the files of data in a locked dataset cannot change either
    file_id = api.get(f"/api/v1/data/{d1}").get_json()["files"][0]["id"]
    assert call(api, "put", f"/api/v1/data/{d1}/files?name=new.txt", data=b"n").status_code == 409
    assert call(api, "delete", f"/api/v1/data/{d1}/files/{file_id}").status_code == 409
    assert call(api, "delete", f"/api/v1/datasets/{flat['id']}").status_code == 204
    assert api.get("/api/v1/datasets").get_json()["total"] == 2


def test_git_servers_tokens_and_registry_credentials_are_sealed_and_never_shown(app, factory):
    admin = factory.api(admin=True, role=Role.ADMIN)
    user = factory.api()
    assert user.post("/api/v1/admin/git-servers", json={"name": "g", "url": "https://git.example"}).status_code == 403
    server = admin.post("/api/v1/admin/git-servers", json={"name": "gitea", "url": "https://git.example/", "kind": "gitea"})
    assert server.status_code == 201 and server.get_json()["url"] == "https://git.example"
    assert admin.post("/api/v1/admin/git-servers", json={"name": "x", "url": "https://u:p@git.example"}).status_code == 400
    token = "tok-" + "s3cr3t" * 4
    saved = call(user, "put", "/api/v1/account/git-tokens", json={"git_server_id": server.get_json()["id"], "token": token})
    assert saved.status_code == 200 and token not in saved.get_data(as_text=True)
    assert token not in user.get("/api/v1/account/git-tokens").get_data(as_text=True)

    registry = admin.post("/api/v1/admin/registries", json={"name": "local", "host": "localhost:5000"}).get_json()
    cred = call(user, "put", "/api/v1/account/registry-credentials",
                json={"registry_id": registry["id"], "username": "u", "password": token})
    assert cred.status_code == 200 and token not in cred.get_data(as_text=True)
    with app.app_context():
        from kqi.data import registries
        from kqi.extensions import db
        from kqi.models.data import GitToken, RegistryCredential
        stored = [db.session.query(GitToken).one().sealed_token, db.session.query(RegistryCredential).one().sealed_password]
        assert all(token not in s for s in stored)
        user_id = db.session.query(RegistryCredential).one().user_id
        assert registries.auth_config(db.session, kqi.box_of(app), user_id, "localhost:5000/team/img:1") == {
            "username": "u", "password": token, "serveraddress": "localhost:5000"}
        assert registries.auth_config(db.session, kqi.box_of(app), user_id, "busybox:1") is None


def test_uploads_are_bounded_by_max_upload_gb_not_by_the_request_limit(tmp_path):
    """max_request_mb bounds ordinary requests; every upload route lifts it to max_upload_gb
    before it touches the body (multipart, a raw body, the page's XHR)."""
    from tests.conftest import Factory, make_app
    from tests.test_pages import login

    app = make_app(tmp_path, max_request_mb=1)
    api = Factory(app).api()
    body = b"z" * (3 << 20)
    created = upload(api, files=[("big.bin", body)])
    assert created.status_code == 201, created.get_json()
    record = created.get_json()
    raw = call(api, "put", f"/api/v1/data/{record['id']}/files?name=raw.bin", data=body + b"!")
    assert raw.status_code == 201, raw.get_json()
    client, csrf = login(app)
    page = client.post("/data/upload", data={"name": "p", "files": [(io.BytesIO(body + b"?"), "p.bin")]},
                       content_type="multipart/form-data", headers={"X-CSRFToken": csrf})
    assert page.status_code == 201, page.get_data()
    assert api.post("/api/v1/datasets", json={"name": "x" * 300, "memo": "m" * (2 << 20)}).status_code == 413
    kqi.shutdown(app)


def test_parents_must_be_ended_runs_of_the_tenant_and_are_kept(app, factory):
    from kqi.extensions import db
    from kqi.jobs import lifecycle as jobs
    from kqi.models import JobStatus

    api = factory.api()
    body = {"name": "p", "image": "busybox", "command": "true", "cpu": 0.1, "memory_gb": 0.1}
    parent = api.post("/api/v1/training/run", json=body).get_json()["id"]
    running = api.post("/api/v1/training/run", json={**body, "parent_ids": [parent]})
    assert running.status_code == 400 and "has not ended" in running.get_json()["error"]["message"]
    with app.app_context():
        assert jobs.transition(db.session, parent, JobStatus.QUEUED, JobStatus.COMPLETED)
        db.session.commit()
    other = factory.api(tenant="elsewhere")
    assert other.post("/api/v1/training/run", json={**body, "parent_ids": [parent]}).status_code == 400
    assert api.post("/api/v1/training/run", json={**body, "parent_ids": "1"}).status_code == 400
    child = api.post("/api/v1/training/run", json={**body, "parent_ids": [parent], "dataset_id": None})
    assert child.status_code == 201 and child.get_json()["parent_ids"] == [parent]
    assert api.get(f"/api/v1/training/{parent}/lineage").get_json()["edges"] == [
        {"from": f"job:{parent}", "to": f"job:{child.get_json()['id']}"}]
    removed = call(api, "delete", f"/api/v1/training/{parent}")
    assert removed.status_code == 409 and "parent" in removed.get_json()["error"]["message"]
    for reserved in ("PARENT_ID", "COMMIT_ID", "MODEL_REPOSITORY", "DATASET_ID", "COLUMNS"):
        refused = api.post("/api/v1/training/run", json={**body, "env": {reserved: "x"}})
        assert refused.status_code == 400 and "cannot be overridden" in refused.get_json()["error"]["message"]


@pytest.mark.parametrize("size", [1 << 20, 3 * (1 << 20) + 17, 9 * (1 << 20) + 5])
def test_multipart_files_larger_than_the_parser_buffer_arrive_whole(sqlite_app, size):
    # The multipart decoder refuses a buffer past 1 MiB; the body must be fed to it in smaller
    # pieces whatever the file size (a 3 MiB file once failed with 413 depending on chunking).
    from tests.conftest import Factory

    api = Factory(sqlite_app).api()
    payload = os.urandom(size)
    response = api.client.post("/api/v1/data", data={"name": "big", "files": [(io.BytesIO(payload), "big.bin")]},
                               headers={"Authorization": f"Bearer {api.token}"}, content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["files"][0]["sha256"] == hashlib.sha256(payload).hexdigest()


def test_deleting_a_run_deletes_its_attachments_blobs_unless_data_names_them(app, factory):
    from kqi.extensions import db
    from kqi.jobs import lifecycle as jobs
    from kqi.models import JobStatus

    api = factory.api()
    body = {"name": "att", "image": "busybox", "command": "true", "cpu": 0.1, "memory_gb": 0.1}
    job_id = api.post("/api/v1/training/run", json=body).get_json()["id"]
    shared = b"x,y\n1,2\n"  # the same bytes as a data file: that blob must stay
    assert upload(api, files=(("a.csv", shared),)).status_code == 201
    for name, content in (("notes.txt", b"only attached"), ("same.csv", shared)):
        response = call(api, "put", f"/api/v1/training/{job_id}/attachments?name={name}", data=content)
        assert response.status_code in (200, 201), response.get_json()
    assert len(blobs(app)) == 2
    with app.app_context():
        assert jobs.transition(db.session, job_id, JobStatus.QUEUED, JobStatus.COMPLETED)
        db.session.commit()
    assert call(api, "delete", f"/api/v1/training/{job_id}").status_code == 204
    assert blobs(app) == [hashlib.sha256(shared).hexdigest()]
    assert api.get(f"/api/v1/training/{job_id}").status_code == 404
