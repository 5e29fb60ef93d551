"""The run history over the API (SQLite and PostgreSQL): filters, favorites, tags, memo, the status
timeline, the inference kind and its value, delete with everything that hangs off a job."""
from __future__ import annotations

from datetime import timedelta

import pytest

from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.jobs.files import JobFiles
from kqi.jobs.history import read_value
from kqi.jobs.shell import masked
from kqi.models import Job, JobStatus, utcnow
from kqi.models.runs import JobEvent, JobFavorite, JobTag

JOB = {"image": "kqi-test/busybox:1", "command": "true", "cpu": 0.5, "memory_gb": 0.25}


def submit(api, name, kind="training", **fields):
    response = api.post(f"/api/v1/{kind}/run", json={"name": name, **JOB, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def ids(api, query="", kind="training"):
    body = api.get(f"/api/v1/{kind}?per_page=100&{query}").get_json()
    assert body["total"] == len(body["items"]), body
    return [j["id"] for j in body["items"]]


def end(app, job_id, status=JobStatus.COMPLETED, **values):
    with app.app_context():
        assert jobs.transition(db.session, job_id, JobStatus.QUEUED, status, **values)
        db.session.commit()


def test_history_filters_by_status_name_tag_user_date_and_favorites(app, factory):
    alice, bob = factory.api(), factory.api()
    a1, a2 = submit(alice, "resnet-a"), submit(alice, "bert-base")
    b1 = submit(bob, "resnet-b")
    end(app, a2)
    bob_name = bob.get(f"/api/v1/training/{b1}").get_json()["user"]
    with app.app_context():  # a1 was made long ago
        db.session.get(Job, a1).created_at = utcnow() - timedelta(days=40)
        db.session.commit()

    assert ids(alice) == [b1, a2, a1]
    assert ids(alice, "status=Completed") == [a2]
    assert ids(alice, "name=resnet") == [b1, a1]
    assert ids(alice, "name=%25") == []  # a LIKE wildcard is a plain character
    assert ids(alice, f"user={bob_name}") == [b1]
    assert ids(alice, "user=nobody") == []
    since = (utcnow() - timedelta(days=1)).date().isoformat()
    assert ids(alice, f"created_from={since}") == [b1, a2]
    old = (utcnow() - timedelta(days=40)).date().isoformat()
    assert ids(alice, f"created_to={old}") == [a1]  # a bare date covers that whole day
    assert ids(alice, f"created_from={old}&created_to={old}&name=resnet") == [a1]

    assert alice.open(f"/api/v1/training/{a1}", "PATCH", json={"tags": ["vision", "baseline"]}).status_code == 200
    assert alice.open(f"/api/v1/training/{b1}", "PATCH", json={"tags": ["vision"]}).status_code == 200
    assert ids(alice, "tag=vision") == [b1, a1]
    assert ids(alice, "tag=baseline&name=resnet") == [a1]
    assert ids(alice, "tag=visio") == []  # a tag matches whole

    assert alice.open(f"/api/v1/training/{a2}", "PATCH", json={"favorite": True}).get_json()["favorite"] is True
    assert ids(alice, "favorites=1") == [a2]
    assert ids(bob, "favorites=true") == []  # stars are per user
    listed = {j["id"]: j for j in alice.get("/api/v1/training").get_json()["items"]}
    assert listed[a2]["favorite"] and not listed[a1]["favorite"] and listed[a1]["tags"] == ["baseline", "vision"]
    assert alice.open(f"/api/v1/training/{a2}", "PATCH", json={"favorite": False}).get_json()["favorite"] is False
    assert ids(alice, "favorites=1") == []

    paged = alice.get("/api/v1/training?per_page=2&page=2").get_json()
    assert paged["total"] == 3 and [j["id"] for j in paged["items"]] == [a1]
    for query, field in [("created_from=yesterday", "created_from"), ("created_to=2026-13-01", "created_to"),
                         ("favorites=maybe", "favorites"), ("status=Sleeping", "status"), ("name=" + "x" * 65, "name")]:
        response = alice.get(f"/api/v1/training?{query}")
        assert response.status_code == 400 and response.get_json()["error"]["field"] == field, query


def test_tags_and_memo_are_checked_whole_and_nothing_is_half_written(app, factory):
    api = factory.api()
    job_id = submit(api, "tagged", memo="first")
    edited = api.open(f"/api/v1/training/{job_id}", "PATCH", json={"tags": [" b ", "a", "b", "学習"], "memo": "second"})
    assert edited.status_code == 200
    assert edited.get_json()["tags"] == ["a", "b", "学習"] and edited.get_json()["memo"] == "second"

    for body, field in [({"memo": "third", "tags": ["ok", "no\ttabs"]}, "tags"), ({"tags": "a,b"}, "tags"),
                        ({"tags": [str(i) for i in range(21)]}, "tags"), ({"memo": 5}, "memo"),
                        ({"favorite": "yes"}, "favorite"), ({"status": "Completed"}, "status")]:
        response = api.open(f"/api/v1/training/{job_id}", "PATCH", json=body)
        assert response.status_code == 400 and response.get_json()["error"]["field"] == field, body
    job = api.get(f"/api/v1/training/{job_id}").get_json()
    assert job["memo"] == "second" and job["tags"] == ["a", "b", "学習"]
    assert api.open(f"/api/v1/training/{job_id}", "PATCH", json={"tags": []}).get_json()["tags"] == []

    stranger = factory.api(tenant="elsewhere")
    assert stranger.open(f"/api/v1/training/{job_id}", "PATCH", json={"favorite": True}).status_code == 404
    assert stranger.get(f"/api/v1/training/{job_id}/timeline").status_code == 404
    with app.app_context():
        assert db.session.query(JobFavorite).count() == 0


def test_timeline_records_every_status_change_with_its_reason(app, factory):
    api = factory.api()
    job_id = submit(api, "timed")
    with app.app_context():
        assert jobs.transition(db.session, job_id, JobStatus.QUEUED, JobStatus.STARTING)
        assert not jobs.transition(db.session, job_id, JobStatus.QUEUED, JobStatus.STARTING)  # lost race: no event
        assert jobs.transition(db.session, job_id, JobStatus.STARTING, JobStatus.RUNNING)
        assert jobs.transition(db.session, job_id, JobStatus.RUNNING, JobStatus.FAILED, reason="exit code 3", exit_code=3)
        db.session.commit()
    events = api.get(f"/api/v1/training/{job_id}/timeline").get_json()["items"]
    assert [(e["status"], e["reason"]) for e in events] == [
        ("Queued", "submitted"), ("Starting", None), ("Running", None), ("Failed", "exit code 3")]
    assert all(a["at"] <= b["at"] for a, b in zip(events, events[1:]))

    queued = submit(api, "halted")
    api.post(f"/api/v1/training/{queued}/halt")
    assert [e["reason"] for e in api.get(f"/api/v1/training/{queued}/timeline").get_json()["items"]] == [
        "submitted", "halted by user"]


def test_inference_needs_training_parents_lists_apart_and_shows_its_value(app, factory):
    api = factory.api()
    training = submit(api, "base")
    response = api.post("/api/v1/inference/run", json={"name": "inf", **JOB})
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "parent_ids"
    response = api.post("/api/v1/inference/run", json={"name": "inf", "parent_ids": [training], **JOB})
    assert response.status_code == 400 and "not ended" in response.get_json()["error"]["message"]
    end(app, training)
    inference = submit(api, "inf", kind="inference", parent_ids=[training])
    with app.app_context():
        assert db.session.query(Job).count() == 2  # the refused ones left nothing behind
    response = api.post("/api/v1/inference/run", json={"name": "inf2", "parent_ids": [inference], **JOB})
    assert response.status_code == 400  # an inference is not a parent of an inference (nor is a queued one)

    assert ids(api, kind="inference") == [inference] and ids(api) == [training]
    assert api.get(f"/api/v1/inference/{training}").status_code == 404
    assert api.get(f"/api/v1/training/{inference}").get_json()["kind"] == "inference"  # any run by its id
    got = api.get(f"/api/v1/inference/{inference}").get_json()
    assert got["kind"] == "inference" and got["parent_ids"] == [training] and got["value"] is None

    end(app, inference, value=0.25)
    assert [j["value"] for j in api.get("/api/v1/inference").get_json()["items"]] == [0.25]
    assert api.get(f"/api/v1/inference/{inference}/timeline").get_json()["items"][-1]["status"] == "Completed"


@pytest.mark.parametrize("text, expected", [
    ("0.875\n", 0.875), (" -3e2 ", -300.0), ("12", 12.0), ("nan", None), ("inf", None), ("", None),
    ("1 2", None), ("x" * 2000, None),
])
def test_value_txt_holds_one_finite_number(tmp_path, text, expected):
    output = JobFiles(tmp_path, 7).output
    output.mkdir(parents=True)
    (output / "value.txt").write_text(text)
    assert read_value(tmp_path, 7) == expected


def test_value_txt_missing_or_a_link_is_no_value(tmp_path):
    assert read_value(tmp_path, 8) is None
    output = JobFiles(tmp_path, 8).output
    output.mkdir(parents=True)
    (tmp_path / "secret").write_text("42")
    (output / "value.txt").symlink_to(tmp_path / "secret")
    assert read_value(tmp_path, 8) is None


def test_delete_takes_events_tags_and_stars_with_the_job(app, factory):
    api = factory.api()
    job_id = submit(api, "gone")
    api.open(f"/api/v1/training/{job_id}", "PATCH", json={"tags": ["x"], "favorite": True})
    assert api.delete(f"/api/v1/training/{job_id}").status_code == 409  # still queued
    api.post(f"/api/v1/training/{job_id}/halt")
    assert api.delete(f"/api/v1/inference/{job_id}").status_code == 404  # not an inference
    assert api.delete(f"/api/v1/training/{job_id}").status_code == 204
    with app.app_context():
        for table in (JobEvent, JobTag, JobFavorite):
            assert db.session.query(table).count() == 0, table


def test_exec_is_refused_unless_running_and_checks_the_command(app, factory):
    api = factory.api()
    job_id = submit(api, "queued")
    refused = api.post(f"/api/v1/training/{job_id}/exec", json={"command": "id"})
    assert refused.status_code == 409 and "Queued" in refused.get_json()["error"]["message"]
    for body in ({"command": ""}, {"command": []}, {"command": [""]}, {"command": ["a\x00b"]}, {"command": 5},
                 {"command": "x" * 20000}, {"command": "id", "user": "root"}, {}):
        response = api.post(f"/api/v1/training/{job_id}/exec", json=body)
        assert response.status_code == 400, body
    assert factory.api(tenant="elsewhere").post(f"/api/v1/training/{job_id}/exec", json={"command": "id"}).status_code == 404


def test_audited_commands_keep_no_secrets():
    assert masked("export API_TOKEN=abc123 && run", []) == "export API_TOKEN=**** && run"
    assert masked("login --password 'p w' --user me", []) == "login --password **** --user me"
    assert masked("curl -H 'Authorization: Bearer eyJabc' http://x", []) == "curl -H 'Authorization: Bearer ****' http://x"
    assert masked("echo s3cr3t-value", ["s3cr3t-value"]) == "echo ****"
    assert masked("ls -la /kqi/output; LR=0.1 python x.py", []) == "ls -la /kqi/output; LR=0.1 python x.py"
