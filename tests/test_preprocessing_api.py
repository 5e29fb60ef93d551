"""Preprocessing over the API (SQLite and PostgreSQL): definitions, runs once per data item and
definition, a completed run's output folders becoming data with lineage, and deleting history."""
from __future__ import annotations

import os

import kqi
from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.jobs.files import JobFiles
from kqi.kinds import preprocessing
from kqi.models import Job, JobStatus, Role
from tests.test_data_api import blobs, upload

GOOD = {"name": "crop-1", "image": "kqi-test/busybox:1", "command": "sh /kqi/git/crop.sh", "cpu": 0.5,
        "memory_gb": 0.25}


def define(api, **fields):
    response = api.post("/api/v1/preprocessings", json={**GOOD, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def data_ids(api, count):
    return [upload(api, f"raw{i}", files=[(f"img{i}.txt", f"image {i}\n".encode())]).get_json()["id"] for i in range(count)]


def test_definitions_need_only_a_name_and_are_checked_like_jobs(app, factory):
    api = factory.api()
    bare = api.post("/api/v1/preprocessings", json={"name": "only-name"})
    assert bare.status_code == 201 and bare.headers["Location"].endswith(f"/preprocessings/{bare.get_json()['id']}")
    assert bare.get_json() | {"id": 0, "user": "", "created_at": ""} == {
        "id": 0, "name": "only-name", "image": None, "command": None, "git": None, "cpu": None, "memory_gb": None,
        "gpu": None, "partition": None, "memo": "", "user": "", "runs": 0, "locked": False, "runnable": False,
        "created_at": "", "last_run_at": None}
    for body, field in (({"name": "Bad Name"}, "name"), ({"name": "x" * 31}, "name"), ({}, "name"),
                        ({"name": "ok", "image": "no spaces allowed"}, "image"), ({"name": "ok", "cpu": 0}, "cpu"),
                        ({"name": "ok", "gpu": 1.5}, "gpu"), ({"name": "ok", "memory_gb": "lots"}, "memory_gb"),
                        ({"name": "ok", "git": {"repository": "relative/path"}}, "git"), ({"name": "ok", "x": 1}, "x")):
        refused = api.post("/api/v1/preprocessings", json=body)
        assert refused.status_code == 400 and refused.get_json()["error"]["field"] == field, (body, refused.get_json())
    assert api.post("/api/v1/preprocessings", json={"name": "only-name"}).status_code == 409

    full = define(api, gpu=0.25, partition="a100", memo="crops the images")
    assert (full["cpu"], full["memory_gb"], full["gpu"], full["partition"], full["runnable"]) == (0.5, 0.25, 0.25, "a100", True)
    changed = api.put(f"/api/v1/preprocessings/{full['id']}", json={"memo": "v2", "cpu": None, "command": "true"})
    assert changed.status_code == 200
    assert (changed.get_json()["memo"], changed.get_json()["cpu"], changed.get_json()["command"]) == ("v2", None, "true")
    assert changed.get_json()["memory_gb"] == 0.25  # untouched fields stay
    assert api.put(f"/api/v1/preprocessings/{full['id']}", json={"name": "only-name"}).status_code == 409
    listing = api.get("/api/v1/preprocessings?per_page=1").get_json()
    assert listing["total"] == 2 and [d["name"] for d in listing["items"]] == ["crop-1"]

    other = factory.api("other-tenant")
    assert other.get(f"/api/v1/preprocessings/{full['id']}").status_code == 404
    assert other.post(f"/api/v1/preprocessings/{full['id']}/run", json={"data_ids": [1]}).status_code == 404
    assert other.get("/api/v1/preprocessings").get_json()["total"] == 0
    assert api.delete(f"/api/v1/preprocessings/{full['id']}").status_code == 204
    assert api.get(f"/api/v1/preprocessings/{full['id']}").status_code == 404


def test_a_run_needs_image_and_command_and_data_of_the_tenant(app, factory):
    api = factory.api()
    bare = api.post("/api/v1/preprocessings", json={"name": "bare"}).get_json()
    [data_id] = data_ids(api, 1)
    refused = api.post(f"/api/v1/preprocessings/{bare['id']}/run", json={"data_ids": [data_id]})
    assert refused.status_code == 409 and "without an image and a command" in refused.get_json()["error"]["message"]
    definition = define(api, cpu=None)
    no_cpu = api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [data_id]})
    assert no_cpu.status_code == 400 and no_cpu.get_json()["error"]["field"] == "cpu"  # no default, none given
    outsider = data_ids(factory.api("elsewhere"), 1)[0]
    for body, field in (({"data_ids": [outsider]}, "data_ids"), ({"data_ids": []}, "data_ids"),
                        ({"data_ids": [data_id], "cpu": -1}, "cpu"),
                        ({"data_ids": [data_id], "cpu": 1, "env": {"LANG": "x"}}, "env")):
        response = api.post(f"/api/v1/preprocessings/{definition['id']}/run", json=body)
        assert response.status_code == 400 and response.get_json()["error"]["field"] == field, response.get_json()
    with app.app_context():
        assert db.session.query(Job).count() == 0  # nothing half-written


def test_each_data_item_is_preprocessed_once_per_definition(app, factory):
    api = factory.api()
    first, second = data_ids(api, 2)
    definition = define(api)
    ran = api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [first, second], "gpu": 0.5,
                                                                           "env": {"SIZE": "64"}})
    assert ran.status_code == 201, ran.get_json()
    runs = ran.get_json()["items"]
    assert [(r["data"]["id"], r["status"], r["gpu"], r["outputs"]) for r in runs] == [
        (first, "Queued", 0.5, []), (second, "Queued", 0.5, [])]
    with app.app_context():
        job = db.session.get(Job, runs[0]["id"])
        assert (job.kind, job.name, job.env, job.source.data_id) == ("preprocessing", "crop-1", {"SIZE": "64"}, first)

    again = api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [second]})
    assert again.status_code == 409
    assert again.get_json()["error"]["message"].startswith(f"data {second} was already preprocessed by crop-1: run {runs[1]['id']} (Queued)")
    both = api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [first, second]})
    assert both.status_code == 409 and api.get(f"/api/v1/preprocessings/{definition['id']}/histories").get_json()["total"] == 2
    other = define(api, name="resize")
    assert api.post(f"/api/v1/preprocessings/{other['id']}/run", json={"data_ids": [first]}).status_code == 201

    # Its history fixes what ran: image, code and command; the rest may change.
    locked = api.put(f"/api/v1/preprocessings/{definition['id']}", json={"command": "other"})
    assert locked.status_code == 409 and locked.get_json()["error"]["field"] == "command"
    same = api.put(f"/api/v1/preprocessings/{definition['id']}", json={"command": GOOD["command"], "memo": "ok"})
    assert same.status_code == 200 and same.get_json()["locked"] is True and same.get_json()["runs"] == 2
    assert api.delete(f"/api/v1/preprocessings/{definition['id']}").status_code == 409
    assert "input of run" in api.delete(f"/api/v1/data/{first}").get_json()["error"]["message"]

    # A run that did not complete does not count: halted, the data item may be run again.
    assert api.delete(f"/api/v1/preprocessings/{definition['id']}/histories/{runs[0]['id']}").status_code == 409
    halted = api.post(f"/api/v1/preprocessings/{definition['id']}/histories/{runs[0]['id']}/halt")
    assert halted.get_json()["status"] == "UserCanceled"
    assert api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [first]}).status_code == 201
    assert factory.api("nosy").get(f"/api/v1/preprocessings/{definition['id']}/histories/{runs[0]['id']}").status_code == 404


def _complete(app, run_id, outputs: dict[str, bytes]):
    """What the scheduler does when a run's container exits 0: its /kqi/output is collected, then the run ends."""
    with app.app_context():
        job = db.session.get(Job, run_id)
        assert jobs.transition(db.session, run_id, JobStatus.QUEUED, JobStatus.RUNNING)
        output = JobFiles(app.instance_path, run_id).output
        for path, content in outputs.items():
            (output / path).parent.mkdir(parents=True, exist_ok=True)
            (output / path).write_bytes(content)
        status, reason = preprocessing.on_collected(db.session, kqi.settings_of(app), job, JobStatus.COMPLETED, "")
        jobs.transition(db.session, run_id, JobStatus.RUNNING, status, reason=reason, exit_code=0)
        db.session.commit()


def test_output_folders_become_data_with_lineage_and_deleting_history_deletes_them(app, factory):
    api = factory.api()
    [source] = data_ids(api, 1)
    definition = define(api)
    [run] = api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [source]}).get_json()["items"]
    _complete(app, run["id"], {"cropped/a.txt": b"A", "cropped/deep/b.txt": b"BB", "thumbs/t.txt": b"T",
                               "ignored.txt": b"top-level files are not data"})
    entry = api.get(f"/api/v1/preprocessings/{definition['id']}/histories/{run['id']}").get_json()
    assert entry["status"] == "Completed" and [o["name"] for o in entry["outputs"]] == ["cropped", "thumbs"]
    cropped = api.get(f"/api/v1/data/{entry['outputs'][0]['id']}").get_json()
    assert [(f["name"], f["size"]) for f in cropped["files"]] == [("a.txt", 1), ("deep/b.txt", 2)]
    assert cropped["tags"] == ["crop-1"]
    assert cropped["lineage"]["produced_by"] == {"preprocessing": {"id": definition["id"], "name": "crop-1"},
                                                 "run_id": run["id"], "input": {"id": source, "name": "raw0"}}
    b_file = cropped["files"][1]
    assert api.get(f"/api/v1/data/{cropped['id']}/files/{b_file['id']}").get_data() == b"BB"
    assert api.get(f"/api/v1/data/{source}").get_json()["lineage"]["preprocessed_by"] == [
        {"preprocessing": {"id": definition["id"], "name": "crop-1"}, "run_id": run["id"], "status": "Completed",
         "outputs": entry["outputs"]}]
    # the files moved into the blob store: the job keeps only what is not data
    assert [f.path for f in JobFiles(app.instance_path, run["id"]).list_output()] == ["ignored.txt"]
    again = api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [source]})
    assert again.status_code == 409 and "(Completed)" in again.get_json()["error"]["message"]

    thumbs = entry["outputs"][1]["id"]
    dataset = api.post("/api/v1/datasets", json={"name": "uses-thumbs", "flat": True, "data_ids": [thumbs]}).get_json()
    refused = api.delete(f"/api/v1/preprocessings/{definition['id']}/histories/{run['id']}")
    assert refused.status_code == 409 and "dataset" in refused.get_json()["error"]["message"]
    assert api.get(f"/api/v1/data/{cropped['id']}").status_code == 200  # nothing deleted
    assert api.delete(f"/api/v1/datasets/{dataset['id']}").status_code == 204
    before = len(blobs(app))
    assert api.delete(f"/api/v1/preprocessings/{definition['id']}/histories/{run['id']}").status_code == 204
    assert api.get(f"/api/v1/data/{cropped['id']}").status_code == 404 and api.get(f"/api/v1/data/{thumbs}").status_code == 404
    assert len(blobs(app)) == before - 3 and not os.path.exists(JobFiles(app.instance_path, run["id"]).root)
    assert api.get(f"/api/v1/preprocessings/{definition['id']}/histories").get_json()["total"] == 0
    assert api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [source]}).status_code == 201


def test_a_run_with_nothing_to_make_data_from_fails_with_the_reason(app, factory):
    api = factory.api(role=Role.USER)
    [source] = data_ids(api, 1)
    definition = define(api)
    [run] = api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [source]}).get_json()["items"]
    _complete(app, run["id"], {"only-top-level.txt": b"x"})
    entry = api.get(f"/api/v1/preprocessings/{definition['id']}/histories/{run['id']}").get_json()
    assert entry["status"] == "Failed" and entry["outputs"] == []
    assert entry["reason"].startswith("no data made: nothing under /kqi/output/{name}/")
    assert api.get("/api/v1/data").get_json()["total"] == 1
    # failed: the data item may be run again
    assert api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [source]}).status_code == 201


def test_a_page_of_history_costs_the_same_statements_for_1_or_5_entries(app, factory):
    """Each entry shows its job, submitter, input, node and outputs: read for the whole page."""
    from tests.test_load import counted

    api = factory.api()
    sources = data_ids(api, 5)
    definition = define(api)
    url = f"/api/v1/preprocessings/{definition['id']}/histories"

    def page():
        with counted(app) as statements:
            answer = api.get(url)
        assert answer.status_code == 200
        return answer.get_json()["items"], statements[0]

    [first] = api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": sources[:1]}).get_json()["items"]
    _complete(app, first["id"], {"cropped/a.txt": b"A"})
    one, statements_for_one = page()
    assert one[0]["outputs"][0]["name"] == "cropped"
    assert api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": sources[1:]}).status_code == 201
    five, statements_for_five = page()
    assert len(five) == 5 and statements_for_five == statements_for_one
    assert five[-1] == one[0] == api.get(f"{url}/{first['id']}").get_json()
    assert [entry["data"]["id"] for entry in five] == sources[::-1]
