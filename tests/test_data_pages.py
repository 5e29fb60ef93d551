"""Data and dataset pages, and the run page's sources, over the Flask test client (SQLite)."""
from __future__ import annotations

import io

from tests.test_pages import login


def test_upload_page_streams_files_and_shows_them(sqlite_app):
    client, csrf = login(sqlite_app)
    assert 'data-upload="/data/upload"' in client.get("/data/new").get_data(as_text=True)
    form = {"name": "photos", "tags": "cats, dogs", "memo": "pets",
            "files": [(io.BytesIO(b"jpeg-1"), "cat.jpg"), (io.BytesIO(b"zip-bytes"), "more.zip")]}
    refused = client.post("/data/upload", data=form, content_type="multipart/form-data")
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "csrf"
    form["files"] = [(io.BytesIO(b"jpeg-1"), "cat.jpg"), (io.BytesIO(b"zip-bytes"), "more.zip")]
    response = client.post("/data/upload", data=form, content_type="multipart/form-data",
                           headers={"X-CSRFToken": csrf})
    assert response.status_code == 201, response.get_json()
    detail_url = response.get_json()["url"]
    page = client.get(detail_url).get_data(as_text=True)
    assert "cat.jpg" in page and "more.zip" in page and 'value="cats, dogs"' in page
    listing = client.get("/data?q=dogs").get_data(as_text=True)
    assert "photos" in listing and "cats" in listing
    assert "No data" in client.get("/data?q=nothing-like-it").get_data(as_text=True)

    bad = client.post("/data/upload", data={"name": "x", "files": [(io.BytesIO(b"1"), "../x")]},
                      content_type="multipart/form-data", headers={"X-CSRFToken": csrf})
    assert bad.status_code == 400 and "plain name" in bad.get_json()["error"]["message"]

    edited = client.post(detail_url, data={"name": "", "tags": "", "memo": "", "csrf_token": csrf},
                         headers={"HX-Request": "true"})
    assert edited.status_code == 422 and "name is required" in edited.get_data(as_text=True)


def test_dataset_pages_select_data_into_areas_and_lock(sqlite_app):
    client, csrf = login(sqlite_app)
    ids = []
    for name in ("a", "b"):
        response = client.post("/data/upload", data={"name": name, "files": [(io.BytesIO(name.encode()), f"{name}.txt")]},
                               content_type="multipart/form-data", headers={"X-CSRFToken": csrf})
        ids.append(response.get_json()["id"])
    new = client.get("/datasets/new").get_data(as_text=True)
    assert f'<option value="{ids[0]}"' in new and 'name="training"' in new and 'name="validation"' in new
    created = client.post("/datasets/new", data={"name": "set", "training": [str(ids[0])], "testing": [str(ids[1])],
                                                 "csrf_token": csrf})
    assert created.status_code == 302
    detail = client.get(created.headers["Location"]).get_data(as_text=True)
    assert "a.txt" in detail and "b.txt" in detail and "editable" in detail
    bad = client.post("/datasets/new", data={"name": "", "csrf_token": csrf}, headers={"HX-Request": "true"})
    assert bad.status_code == 422 and "name is required" in bad.get_data(as_text=True)

    with sqlite_app.app_context():
        from kqi.extensions import db
        from kqi.models.data import Dataset
        dataset = db.session.query(Dataset).one()
        dataset.locked = True
        db.session.commit()
        dataset_id = dataset.id
    # a locked dataset's edit page sends to the (read-only) detail; the form is refused
    assert client.get(f"/datasets/{dataset_id}/edit").status_code == 302
    refused = client.post(f"/datasets/{dataset_id}/edit", data={"name": "x", "csrf_token": csrf},
                          headers={"HX-Request": "true"})
    assert refused.status_code == 422 and "locked" in refused.get_data(as_text=True)
    copy = client.post(f"/datasets/{dataset_id}/copy", data={"csrf_token": csrf})
    assert copy.status_code == 302 and copy.headers["Location"].endswith("/edit")


def test_submit_page_pins_sources_and_the_run_page_shows_them(sqlite_app, tmp_path):
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "train.py").write_text("print(1)\n")
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "x"], cwd=repo, check=True, env=env)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()

    client, csrf = login(sqlite_app)
    base = {"name": "j", "image": "busybox", "command": "true", "cpu": "1", "memory_gb": "1", "csrf_token": csrf}
    bad = client.post("/training/new", data={**base, "git_repository": f"file://{repo}", "git_commit": "abcdef12"},
                      headers={"HX-Request": "true"})
    assert bad.status_code == 422 and "commit abcdef12 not found" in bad.get_data(as_text=True)
    bad = client.post("/training/new", data={**base, "parent_ids": "1, x"}, headers={"HX-Request": "true"})
    assert bad.status_code == 422 and "parent_ids" in bad.get_data(as_text=True)
    ok = client.post("/training/new", data={**base, "git_repository": f"file://{repo}"})
    assert ok.status_code == 302
    page = client.get(ok.headers["Location"]).get_data(as_text=True)
    assert head[:12] in page and f"file://{repo}" in page and "Lineage" in page
