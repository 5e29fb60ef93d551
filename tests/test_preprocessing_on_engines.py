"""Preprocessing end to end on the real Docker engines: one definition (code from a real git
repository) run over two data items; each run's /kqi/output/{name}/ folders become data with lineage."""
from __future__ import annotations

import pytest

import kqi
from kqi.extensions import db
from kqi.models import Job
from tests.conftest import make_app, ticked, wait_for
from tests.test_data_api import upload
from tests.test_job_contract_on_engines import git
from tests.test_training_on_engines import IMAGE, Cluster

pytestmark = pytest.mark.engines
# Reads its one data item, writes one data folder per input plus a file that is not data.
SCRIPT = """set -e
id=$(ls /kqi/input)
out=/kqi/output/upper-$id
mkdir -p $out/deep
for f in /kqi/input/$id/*; do tr a-z A-Z < $f > $out/$(basename $f); done
echo "$id from $(pwd) as $TRAINING_ID" > $out/deep/where.txt
echo log-only > /kqi/output/not-data.txt
echo "done $id"
"""


@pytest.fixture
def cluster(tmp_path, docker_engines_clean):
    app = make_app(tmp_path)
    yield Cluster(app, docker_engines_clean)
    kqi.shutdown(app)


def history(cluster, definition_id):
    return cluster.api.get(f"/api/v1/preprocessings/{definition_id}/histories").get_json()["items"]


def wait_ended(cluster, definition_id, count):
    def ended():
        items = history(cluster, definition_id)
        return len(items) == count and all(i["status"] not in ("Queued", "Starting", "Running") for i in items) and items

    return wait_for(ended, timeout=90, tick=ticked(cluster.scheduler))


def test_a_definition_over_two_data_items_makes_new_data_with_lineage(cluster, tmp_path):
    repo = tmp_path / "prep"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "upper.sh").write_text(SCRIPT)
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "upper", cwd=repo)
    api = cluster.api
    inputs = [upload(api, f"raw{i}", files=[(f"a{i}.txt", f"hello {i}\n".encode()), ("b.txt", b"bee\n")]).get_json()
              for i in range(2)]
    created = api.post("/api/v1/preprocessings", json={
        "name": "upper", "image": IMAGE, "command": "sh upper.sh", "git": {"repository": str(repo)},
        "cpu": 0.25, "memory_gb": 0.0625})
    assert created.status_code == 201, created.get_json()
    definition = created.get_json()
    assert len(definition["git"]["commit"]) == 40  # pinned when saved

    ran = api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [d["id"] for d in inputs]})
    assert ran.status_code == 201, ran.get_json()
    entries = sorted(wait_ended(cluster, definition["id"], 2), key=lambda e: e["data"]["id"])
    assert [e["status"] for e in entries] == ["Completed", "Completed"], entries

    for source, entry in zip(inputs, entries):
        assert [o["name"] for o in entry["outputs"]] == [f"upper-{source['id']}"]
        made = api.get(f"/api/v1/data/{entry['outputs'][0]['id']}").get_json()
        assert made["tags"] == ["upper"]
        assert made["lineage"]["produced_by"] == {"preprocessing": {"id": definition["id"], "name": "upper"},
                                                  "run_id": entry["id"], "input": {"id": source["id"], "name": source["name"]}}
        files = {f["name"]: api.get(f"/api/v1/data/{made['id']}/files/{f['id']}").get_data() for f in made["files"]}
        i = inputs.index(source)
        assert files == {f"a{i}.txt": f"HELLO {i}\n".encode(), "b.txt": b"BEE\n",
                         "deep/where.txt": f"{source['id']} from /kqi/git as {entry['id']}\n".encode()}
        log = api.get(f"/api/v1/preprocessings/{definition['id']}/histories/{entry['id']}/log").get_data(as_text=True)
        assert f"done {source['id']}" in log
        upstream = api.get(f"/api/v1/data/{source['id']}").get_json()["lineage"]["preprocessed_by"]
        assert [(u["run_id"], u["status"], u["outputs"]) for u in upstream] == [(entry["id"], "Completed", entry["outputs"])]
        with cluster.app.app_context():  # what the run actually got, as recorded at its start
            job = db.session.get(Job, entry["id"])
            assert job.kind == "preprocessing" and job.source.provenance["data"]["id"] == source["id"]
            assert job.source.provenance["git"]["commit"] == definition["git"]["commit"]
        refused = api.delete(f"/api/v1/training/{entry['id']}")  # only through its history, with its data
        assert refused.status_code == 409 and "preprocessing's history" in refused.get_json()["error"]["message"]
    assert cluster.containers() == []

    # Once per definition: the same data item again is refused, naming the run.
    again = api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [inputs[0]["id"]]})
    assert again.status_code == 409 and f"run {entries[0]['id']} (Completed)" in again.get_json()["error"]["message"]


def test_a_run_that_writes_no_data_folder_fails_with_the_reason(cluster):
    api = cluster.api
    source = upload(api, "raw").get_json()
    definition = api.post("/api/v1/preprocessings", json={"name": "forgetful", "image": IMAGE, "cpu": 0.25,
                                                          "memory_gb": 0.0625,
                                                          "command": "echo oops > /kqi/output/top.txt"}).get_json()
    api.post(f"/api/v1/preprocessings/{definition['id']}/run", json={"data_ids": [source["id"]]})
    [entry] = wait_ended(cluster, definition["id"], 1)
    assert entry["status"] == "Failed" and entry["outputs"] == [] and entry["exit_code"] == 0
    assert entry["reason"].startswith("no data made: nothing under /kqi/output/{name}/")
    assert api.get("/api/v1/data").get_json()["total"] == 1
