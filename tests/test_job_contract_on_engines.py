"""The whole /kqi job contract end to end on real engines, with a realistic image (Debian with
python3 and git), a real git server over http with basic auth, real data and datasets, and a
second run that uses the first as its parent."""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import docker
import pytest

import kqi
from tests.conftest import make_app
from tests.infra.debian_image import DEBIAN_IMAGE, debian_image  # noqa: F401  (session fixture)
from tests.infra.git_http import GitHttpServer
from tests.test_training_on_engines import Cluster

pytestmark = pytest.mark.engines
TOKEN = "ghp-" + "T0kenNeverInContainers" * 2

TRAIN = r'''
import json, os, pathlib, sys
sys.path.insert(0, "lib")
from helper import double

def files(root):
    root = pathlib.Path(root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

def writable(folder):
    try:
        open(os.path.join(folder, "probe"), "w").close()
        return True
    except OSError:
        return False

numbers = [int(x) for p in sorted(pathlib.Path("/kqi/input/training").rglob("*.csv")) for x in p.read_text().split()]
parent = pathlib.Path("/kqi/parent/model.txt")
previous = parent.read_text().strip() if parent.exists() else "none"
out = pathlib.Path("/kqi/output")
(out / "model.txt").write_text(f"sum={double(sum(numbers))} previous=[{previous}]\n")
(out / "env.json").write_text(json.dumps(dict(os.environ)))
(out / "seen.json").write_text(json.dumps({
    "input": files("/kqi/input"), "parent": files("/kqi/parent"), "attach": files("/kqi/attach"),
    "git": files("/kqi/git"), "cwd": os.getcwd(),
    "input_writable": writable("/kqi/input/training"), "parent_writable": writable("/kqi/parent"),
}))
print("trained", numbers)
'''


def git(*args, cwd):
    subprocess.run(["git", "-c", "protocol.file.allow=always", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"})


def make_repositories(root: Path) -> tuple[Path, str]:
    """private/model.git (train.py, a submodule lib/ with helper.py) and public/lib.git; returns the
    bare model repository and its main commit."""
    work = root / "work"
    lib, model = work / "lib", work / "model"
    for folder in (lib, model):
        folder.mkdir(parents=True)
        git("init", "-q", "-b", "main", cwd=folder)
    (lib / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    git("add", ".", cwd=lib)
    git("commit", "-q", "-m", "lib", cwd=lib)
    (root / "public").mkdir()
    git("clone", "-q", "--bare", str(lib), str(root / "public" / "lib.git"), cwd=root)
    (model / "train.py").write_text(TRAIN)
    git("add", ".", cwd=model)
    git("commit", "-q", "-m", "train", cwd=model)
    git("submodule", "add", "-q", "../../public/lib.git", "lib", cwd=model)
    git("commit", "-q", "-m", "with lib", cwd=model)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=model, capture_output=True, text=True).stdout.strip()
    (root / "private").mkdir()
    bare = root / "private" / "model.git"
    git("clone", "-q", "--bare", str(model), str(bare), cwd=root)
    # a later commit on another branch: a pinned run must not see it
    git("checkout", "-q", "-b", "next", cwd=model)
    (model / "train.py").write_text("raise SystemExit('the wrong commit ran')\n")
    git("commit", "-q", "-am", "next", cwd=model)
    git("push", "-q", str(bare), "next", cwd=model)
    return bare, head


@pytest.fixture
def contract(tmp_path, docker_engines_clean, debian_image):  # noqa: F811
    repos = tmp_path / "repos"
    bare, head = make_repositories(repos)
    server = GitHttpServer(repos, "oauth2", TOKEN)
    app = make_app(tmp_path)
    cluster = Cluster(app, docker_engines_clean)
    yield cluster, server, head
    server.stop()
    kqi.shutdown(app)


def call(api, method, url, **kw):
    return getattr(api.client, method)(url, headers={"Authorization": f"Bearer {api.token}"}, **kw)


def everything_under(folder: str) -> bytes:
    """Every regular file's bytes under `folder` (the instance folder: small in these tests)."""
    blob = b""
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                blob += Path(path).read_bytes()
    return blob


def test_two_runs_with_git_dataset_parent_and_attachment(contract):
    cluster, server, head = contract
    api = cluster.api
    repository = f"{server.url}/private/model.git"
    git_server = cluster.admin.post("/api/v1/admin/git-servers", json={"name": "local", "url": server.url}).get_json()
    assert call(api, "put", "/api/v1/account/git-tokens",
                json={"git_server_id": git_server["id"], "token": TOKEN}).status_code == 200

    data = api.post("/api/v1/data", data={"name": "numbers", "files": [(io.BytesIO(b"1 2 3\n"), "a.csv")]},
                    content_type="multipart/form-data").get_json()
    extra = api.post("/api/v1/data", data={"name": "more", "files": [(io.BytesIO(b"10\n"), "b.csv")]},
                     content_type="multipart/form-data").get_json()
    dataset = api.post("/api/v1/datasets", json={"name": "nums", "entries": {
        "training": [data["id"]], "testing": [extra["id"]]}}).get_json()

    first_id = cluster.submit(name="train", image=DEBIAN_IMAGE, command="python3 train.py", memory_gb=0.5,
                              dataset_id=dataset["id"], git={"repository": repository, "branch": "main"},
                              env={"LR": "0.1", "API_PASSWORD": "hunter2"})
    attached = call(api, "put", f"/api/v1/training/{first_id}/attachments?name=notes.txt", data=b"before start")
    assert attached.status_code == 201 and attached.get_json()["delivered"] == "at start"
    first = cluster.wait_status(first_id, "Completed", "Failed", "Error", "Killed", timeout=120)
    log = api.get(f"/api/v1/training/{first_id}/log").get_data(as_text=True)
    assert first["status"] == "Completed", (first, log)
    assert first["git"] == {"repository": repository, "branch": "main", "commit": head}
    assert first["dataset_id"] == dataset["id"] and first["dataset_hash"] == dataset["content_hash"]

    model = api.get(f"/api/v1/training/{first_id}/files/model.txt").get_data(as_text=True)
    assert model == "sum=12 previous=[none]\n"  # (1+2+3)*2 by the submodule's helper
    seen = json.loads(api.get(f"/api/v1/training/{first_id}/files/seen.json").get_data())
    assert seen["input"] == [f"testing/{extra['id']}/b.csv", f"training/{data['id']}/a.csv"]
    assert seen["input_writable"] is False and seen["parent"] == [] and seen["attach"] == ["notes.txt"]
    assert seen["cwd"] == "/kqi/git" and {"train.py", "lib/helper.py", ".gitmodules"} <= set(seen["git"])
    env = json.loads(api.get(f"/api/v1/training/{first_id}/files/env.json").get_data())
    assert env["MODEL_REPOSITORY"] == repository and env["COMMIT_ID"] == head
    assert env["DATASET_ID"] == str(dataset["id"]) and env["TRAINING_ID"] == str(first_id)
    assert env["LC_ALL"] == "C.UTF-8" and env["COLUMNS"] == "120" and env["LR"] == "0.1"
    assert "PARENT_ID" not in env

    provenance = first["provenance"]
    assert provenance["git"]["commit"] == head and provenance["image"]["reference"] == DEBIAN_IMAGE
    assert provenance["image"]["id"].startswith("sha256:")
    assert provenance["dataset"] == {"id": dataset["id"], "content_hash": dataset["content_hash"]}
    assert provenance["placement"][0]["node"] == first["node"]
    assert provenance["environment"]["API_PASSWORD"] == "****" and provenance["environment"]["LR"] == "0.1"
    assert provenance["resources"]["memory_gb"] == 0.5

    # the dataset is locked now
    locked = call(api, "put", f"/api/v1/datasets/{dataset['id']}", json={"name": "x", "entries": {}})
    assert locked.status_code == 409

    # the second run: the first is its parent; an abbreviated commit is pinned to the full SHA
    second_id = cluster.submit(name="finetune", image=DEBIAN_IMAGE, command="python3 train.py", memory_gb=0.5,
                               dataset_id=dataset["id"], parent_ids=[first_id],
                               git={"repository": repository, "commit": head[:10], "branch": "next"})
    call(api, "put", f"/api/v1/training/{second_id}/attachments?name=notes.txt", data=b"for the second run")
    second = cluster.wait_status(second_id, "Completed", "Failed", "Error", "Killed", timeout=120)
    assert second["status"] == "Completed", (second, api.get(f"/api/v1/training/{second_id}/log").get_data(as_text=True))
    assert second["git"]["commit"] == head and second["parent_ids"] == [first_id]
    assert api.get(f"/api/v1/training/{second_id}/files/model.txt").get_data(as_text=True) == \
        "sum=12 previous=[sum=12 previous=[none]]\n"
    seen = json.loads(api.get(f"/api/v1/training/{second_id}/files/seen.json").get_data())
    assert {"model.txt", "env.json", "seen.json"} <= set(seen["parent"]) and seen["parent_writable"] is False
    assert seen["attach"] == ["notes.txt"]
    env = json.loads(api.get(f"/api/v1/training/{second_id}/files/env.json").get_data())
    assert env["PARENT_ID"] == str(first_id) and env["COMMIT_ID"] == head

    lineage = api.get(f"/api/v1/training/{first_id}/lineage").get_json()
    keys = {n["key"] for n in lineage["nodes"]}
    assert {f"job:{first_id}", f"job:{second_id}", f"dataset:{dataset['id']}"} <= keys
    assert {"from": f"job:{first_id}", "to": f"job:{second_id}"} in lineage["edges"]
    assert {"from": f"dataset:{dataset['id']}", "to": f"job:{first_id}"} in lineage["edges"]

    # the token went to the git server as a header, and nowhere else: not into the containers
    # (their whole environment and every file they saw are in the outputs), the logs, the
    # mirrors' configs, the cached trees or anything else the server keeps on disk
    assert any(auth.startswith("Basic ") for auth in server.seen_auth)
    instance = cluster.app.instance_path
    kept = everything_under(instance)
    assert TOKEN.encode() not in kept
    for job_id in (first_id, second_id):
        assert TOKEN not in api.get(f"/api/v1/training/{job_id}/log").get_data(as_text=True)
        assert TOKEN not in json.dumps(api.get(f"/api/v1/training/{job_id}").get_json())
    assert cluster.containers() == []
    for engine in cluster.engines:  # no volume per job: inputs stay on the node as shared cache volumes
        client = docker.DockerClient(base_url=engine.unix_url)
        assert not [v.name for v in client.volumes.list() if v.name.startswith("training-")]
        client.close()


def test_bad_git_sources_are_refused_before_any_job_exists(contract):
    cluster, server, head = contract
    api = cluster.api
    repository = f"{server.url}/private/model.git"
    body = {"name": "bad", "image": "kqi-test/busybox:1", "command": "true", "cpu": 0.1, "memory_gb": 0.1}

    no_token = api.post("/api/v1/training/run", json={**body, "git": {"repository": repository}})
    assert no_token.status_code == 400
    message = no_token.get_json()["error"]["message"]
    assert "cannot read git repository" in message and "token" in message

    git_server = cluster.admin.post("/api/v1/admin/git-servers", json={"name": "local", "url": server.url}).get_json()
    call(api, "put", "/api/v1/account/git-tokens", json={"git_server_id": git_server["id"], "token": TOKEN})
    unknown = api.post("/api/v1/training/run", json={**body, "git": {"repository": repository, "commit": "deadbeef"}})
    assert unknown.status_code == 400 and "commit deadbeef not found" in unknown.get_json()["error"]["message"]
    branch = api.post("/api/v1/training/run", json={**body, "git": {"repository": repository, "branch": "nope"}})
    assert branch.status_code == 400 and "branch nope not found" in branch.get_json()["error"]["message"]
    creds = api.post("/api/v1/training/run", json={**body, "git": {
        "repository": f"http://oauth2:{TOKEN}@127.0.0.1:{server.port}/private/model.git"}})
    assert creds.status_code == 400 and TOKEN not in creds.get_data(as_text=True)
    inside = api.post("/api/v1/training/run", json={**body, "git": {"repository": cluster.app.instance_path + "/git"}})
    assert inside.status_code == 400
    assert api.get("/api/v1/training").get_json()["total"] == 0

    # a second user without a token cannot read the repository through the first one's mirror
    other = cluster.factory.api()
    good = api.post("/api/v1/training/run", json={**body, "git": {"repository": repository}})
    assert good.status_code == 201 and good.get_json()["git"]["commit"] == head
    refused = other.post("/api/v1/training/run", json={**body, "git": {"repository": repository}})
    assert refused.status_code == 400
    api.post(f"/api/v1/training/{good.get_json()['id']}/halt")


def test_outputs_with_refused_names_are_reported_and_not_kept(cluster_busybox):
    cluster = cluster_busybox
    job_id = cluster.submit(command=(
        "echo good > /kqi/output/good.txt; echo bad > '/kqi/output/bad name.txt'; "
        "ln -s /etc/passwd /kqi/output/link; mkdir -p /kqi/output/sub; echo x > /kqi/output/sub/ok-1.bin"))
    job = cluster.wait_status(job_id, "Completed", "Failed", "Error")
    assert job["status"] == "Completed"
    files = [f["path"] for f in cluster.api.get(f"/api/v1/training/{job_id}/files").get_json()["items"]]
    assert files == ["good.txt", "sub/ok-1.bin"]
    refused = job["provenance"]["refused_outputs"]
    assert sorted(refused["names"]) == ["output/bad name.txt", "output/link"]
    assert "letters, digits" in refused["message"]
    zipped = cluster.api.get(f"/api/v1/training/{job_id}/output.zip")
    import zipfile
    assert sorted(zipfile.ZipFile(io.BytesIO(zipped.get_data())).namelist()) == ["good.txt", "sub/ok-1.bin"]


def test_archive_members_that_escape_are_refused(tmp_path):
    from kqi.jobs.files import JobFiles

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in ("output/ok.txt", "output/../../escape.txt", "/abs.txt", "output/../output2/x.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            archive.addfile(info, io.BytesIO(b"hi"))
        link = tarfile.TarInfo("output/evil-link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    files = JobFiles(tmp_path / "instance", 7)
    stored = files.store_output([buffer.getvalue()], "output")
    assert sorted(stored.unsafe.names) == ["/abs.txt", "output/../../escape.txt", "output/../output2/x.txt", "output/evil-link"]
    assert [f.path for f in files.list_output()] == ["ok.txt"]
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "instance" / "escape.txt").exists()


@pytest.fixture
def cluster_busybox(tmp_path, docker_engines_clean):
    app = make_app(tmp_path)
    yield Cluster(app, docker_engines_clean)
    kqi.shutdown(app)



def test_a_file_attached_during_the_run_reaches_the_container(cluster_busybox):
    cluster = cluster_busybox
    job_id = cluster.submit(command="until [ -f /kqi/attach/late.txt ]; do sleep 0.2; done; "
                                    "cp /kqi/attach/late.txt /kqi/output/late.txt", time_limit_s=60)
    cluster.wait_status(job_id, "Running")
    response = call(cluster.api, "put", f"/api/v1/training/{job_id}/attachments?name=late.txt", data=b"late news")
    assert response.status_code == 201 and response.get_json()["delivered"] == "now"
    job = cluster.wait_status(job_id, "Completed", "Failed", "Killed", "Error")
    assert job["status"] == "Completed"
    assert cluster.api.get(f"/api/v1/training/{job_id}/files/late.txt").get_data() == b"late news"
    ended = call(cluster.api, "put", f"/api/v1/training/{job_id}/attachments?name=after.txt", data=b"x")
    assert ended.status_code == 409
