"""The submit form: the availability and estimate service (both databases) and its API route, the
four steps checked one by one through the test client, and "copy and run" / "run inference"."""
from __future__ import annotations

import io
import re
import subprocess
from html import unescape

import kqi
from kqi.accounts.auth import principal_in
from kqi.data import gitsource
from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.jobs import sources as job_sources
from kqi.models import GpuAllocation, Job, JobPart, JobStatus, Node, Tenant, User
from kqi.models.nodes import NodeGpu
from kqi.scheduler import availability
from tests.test_pages import login

HX = {"HX-Request": "true"}
JOB = {"name": "base", "image": "kqi-test/busybox:1", "command": "true", "cpu": 1, "memory_gb": 1}


def add_node(name, cpu=8, memory_gb=32, gpus=0, partition="", tenants=None):
    node = Node(name=name, url=f"unix:///nowhere/{name}.sock", cpu_milli=cpu * 1000, memory_mib=memory_gb * 1024,
                gpu_count=gpus, partition=partition, tenants=tenants)
    db.session.add(node)
    db.session.flush()
    db.session.add_all(NodeGpu(node_id=node.id, gpu_index=i, model="") for i in range(gpus))
    return node


def run_on(app, principal, node, gpu_indices, name="holder"):
    """A job of `principal`'s tenant Running on `node` with whole GPUs `gpu_indices`."""
    job = jobs.submit(db.session, kqi.settings_of(app), kqi.box_of(app), principal,
                      {**JOB, "name": name, "gpu": len(gpu_indices)})
    job.status = JobStatus.RUNNING
    db.session.add(JobPart(job_id=job.id, rank=0, node_id=node.id, gpu_indices=list(gpu_indices)))
    db.session.add_all(GpuAllocation(job_id=job.id, node_id=node.id, gpu_index=i, milli=1000) for i in gpu_indices)
    db.session.flush()
    return job


def principal_of(username):
    return principal_in(db.session, db.session.query(User).filter_by(username=username).one(), None)


# -- the service, on SQLite and PostgreSQL

def test_estimate_runs_the_scheduler_plan_on_the_snapshot(app, factory):
    username, _ = factory.user("team-a")
    with app.app_context():
        who = principal_of(username)
        add_node("small", cpu=4, memory_gb=8, partition="cpu")
        big = add_node("big", cpu=16, memory_gb=64, gpus=2, partition="a100")
        add_node("private", gpus=8, partition="h100", tenants=["team-b"])
        db.session.commit()

        result = availability.estimate(db.session, who, {"cpu": 1, "memory_gb": 1, "gpu": 1})
        assert result["starts_now"] and result["node"] == "big" and result["gpu_indices"] == [0]
        # the private node is neither offered nor counted; every node open to the tenant is
        assert result["partitions"] == ["a100", "cpu"]
        assert [(n["node"], n["gpus_free"], n["gpus_total"]) for n in result["free"]] == [("big", 2, 2), ("small", 0, 0)]
        assert result["quota"] == {"cpu": None, "memory_gb": None, "gpu": None,
                                   "used": {"cpu": 0.0, "memory_gb": 0.0, "gpu": 0.0}}
        # resource-only bodies are enough; a partition narrows the nodes
        cpu_only = availability.estimate(db.session, who, {"cpu": 2, "memory_gb": 4, "partition": "cpu"})
        assert cpu_only["starts_now"] and cpu_only["nodes"] == ["small"]
        too_big = availability.estimate(db.session, who, {"cpu": 1, "memory_gb": 1, "gpu": 4})
        assert not too_big["starts_now"] and too_big["queue_position"] == 1
        assert too_big["reasons"] == ["node closed to tenant on 1 node", "insufficient gpus on 2 nodes even when idle"]
        closed = availability.estimate(db.session, who, {"cpu": 1, "memory_gb": 1, "partition": "h100"})
        assert closed["reasons"] == ["node closed to tenant on 1 node"]

        # both GPUs held by a running job of the tenant: busy now, and the quota says so
        run_on(app, who, big, [0, 1])
        db.session.get(Tenant, who.tenant.id).quota_gpu_milli = 2000
        db.session.commit()
        busy = availability.estimate(db.session, who, {"cpu": 1, "memory_gb": 1, "gpu": 1})
        assert not busy["starts_now"]
        assert busy["reasons"] == ["tenant gpu quota 2/2 (job needs 1)"]
        assert busy["reason_codes"] == [{"code": "quota", "params": {"resource": "gpu_milli", "used": 2000,
                                                                     "limit": 2000, "asked": 1000}}]
        assert busy["quota"]["gpu"] == 2 and busy["quota"]["used"] == {"cpu": 1.0, "memory_gb": 1.0, "gpu": 2.0}
        assert [(n["node"], n["gpus_free"], n["cpu_free"]) for n in busy["free"]][0] == ("big", 0, 15)
        db.session.get(Tenant, who.tenant.id).quota_gpu_milli = None
        db.session.commit()
        waits = availability.estimate(db.session, who, {"cpu": 1, "memory_gb": 1, "gpu": 1})
        assert waits["reasons"] == ["node closed to tenant on 1 node", "insufficient gpus on 2 nodes",
                                    "reserved big (start unknown: running jobs there have no time limit)"]
        # nothing was written: only the holder job exists, still Running
        assert [(j.name, j.status) for j in db.session.query(Job)] == [("holder", JobStatus.RUNNING)]


def test_estimate_api_validates_like_a_submit(app, factory):
    api = factory.api()
    for body, field in (({"cpu": "x", "memory_gb": 1}, "cpu"), ({"gpu": 1.5}, "gpu"), ({"name": "Bad Name"}, "name"),
                        ({"nodes": 0}, "nodes"), ({"colour": "red"}, "colour")):
        response = api.post("/api/v1/training/estimate", json=body)
        assert response.status_code == 400 and response.get_json()["error"]["field"] == field, response.get_json()


def test_estimate_api_answers_the_documented_shape(app, factory):
    api = factory.api()
    with app.app_context():
        add_node("n1", cpu=4, memory_gb=8, gpus=1)
        db.session.commit()
    ok = api.post("/api/v1/training/estimate", json={**JOB, "gpu": 1}).get_json()
    assert ok["starts_now"] and ok["node"] == "n1" and ok["free"][0]["gpus_free"] == 1
    waits = api.post("/api/v1/training/estimate", json={"cpu": 8, "memory_gb": 1}).get_json()
    assert not waits["starts_now"] and waits["reasons"] == ["insufficient cpu on 1 node even when idle"]
    assert waits["reason_codes"] == [{"code": "insufficient_cpu", "params": {"nodes": 1, "when_idle": True}}]
    assert ok["reason_codes"] == []
    assert api.get("/api/v1/training").get_json()["total"] == 0


# -- the pages (SQLite)

def shown_step(html: str) -> int:
    """The one step fieldset without the hidden attribute."""
    visible = re.findall(r'<fieldset class="stack step" data-step="(\d)"\s*>', html)
    assert len(visible) == 1, visible
    return int(visible[0])


def post(client, csrf, url="/training/new", **form):
    return client.post(url, data={"csrf_token": csrf, **form}, headers={**HX, "X-CSRFToken": csrf},
                       content_type="multipart/form-data")


def form_of(**values: str) -> dict[str, str]:
    """JOB as the form posts it, with `values` over it."""
    return {**{k: str(v) for k, v in JOB.items()}, **values}


def value_of(html: str, name: str) -> str:
    found = re.search(rf'<input[^>]*name="{name}" value="([^"]*)"', html)
    return unescape(found.group(1)) if found else ""


def test_each_step_is_checked_before_the_next_and_errors_show_on_their_step(sqlite_app):
    client, csrf = login(sqlite_app)
    first = client.get("/training/new").get_data(as_text=True)
    assert shown_step(first) == 1 and 'id="availability"' in first and "Next: Code and command" in first
    typed = {"name": "Bad Name", "image": "kqi-test/busybox:1", "command": "echo hi", "cpu": "1", "memory_gb": "1",
             "gpu": "0", "nodes": "1", "priority": "normal", "env": "LR=0.1"}

    bad = post(client, csrf, step="1", to="2", **typed)
    html = bad.get_data(as_text=True)
    assert bad.status_code == 422 and shown_step(html) == 1 and 'id="err-name"' in html and "<html" not in html
    assert "lower-case letters" in html and value_of(html, "image") == "kqi-test/busybox:1"  # later steps kept

    parent = post(client, csrf, step="1", to="2", **{**typed, "name": "ok-1", "parent_ids": "999"})
    assert parent.status_code == 422 and 'id="err-parent_ids"' in parent.get_data(as_text=True)

    step2 = post(client, csrf, step="1", to="2", **{**typed, "name": "ok-1"})
    assert step2.status_code == 200 and shown_step(step2.get_data(as_text=True)) == 2
    no_image = post(client, csrf, step="2", to="3", **{**typed, "name": "ok-1", "image": ""})
    assert no_image.status_code == 422 and "image is required" in no_image.get_data(as_text=True)
    assert shown_step(no_image.get_data(as_text=True)) == 2

    share = post(client, csrf, step="3", to="4", **{**typed, "name": "ok-1", "gpu": "1.5"})
    assert share.status_code == 422 and shown_step(share.get_data(as_text=True)) == 3
    assert 'id="err-gpu"' in share.get_data(as_text=True)
    back = post(client, csrf, step="3", to="2", **{**typed, "name": "ok-1", "gpu": "1.5"})  # back: nothing checked
    assert back.status_code == 200 and shown_step(back.get_data(as_text=True)) == 2

    # the final submit goes through every rule; the error opens its own step, whatever step is shown
    final = post(client, csrf, step="4", to="submit", **typed)
    assert final.status_code == 422 and shown_step(final.get_data(as_text=True)) == 1
    env = post(client, csrf, step="4", to="submit", **{**typed, "name": "ok-1", "env": "no-equals"})
    assert env.status_code == 422 and shown_step(env.get_data(as_text=True)) == 4
    with sqlite_app.app_context():
        assert db.session.query(Job).count() == 0  # step checks and refusals wrote nothing

    good = post(client, csrf, step="4", to="submit", **{**typed, "name": "ok-1", "time_limit_s": "600",
                                                         "priority": "high", "requeue_on_node_loss": "1",
                                                         "files": [(io.BytesIO(b"PK zip"), "extra.zip")]})
    assert good.status_code == 204, good.get_data(as_text=True)
    with sqlite_app.app_context():
        job = db.session.query(Job).one()
        assert good.headers["HX-Redirect"] == f"/training/{job.id}"
        assert (job.name, job.env, job.time_limit_s, job.priority, job.requeue_on_node_loss) == \
            ("ok-1", {"LR": "0.1"}, 600, 1, True)
        assert [(a.name, a.size) for a in job_sources.attachments(db.session, job)] == [("extra.zip", 6)]


def test_name_is_checked_as_it_is_typed_and_the_panel_follows_the_resources(sqlite_app):
    client, csrf = login(sqlite_app)
    bad = post(client, csrf, "/training/new/name", name="Bad_Name").get_data(as_text=True)
    assert 'id="err-name"' in bad and "lower-case letters" in bad
    long = post(client, csrf, "/training/new/name", name="a" * 31).get_data(as_text=True)
    assert "too long" in long
    assert "✓ a valid name" in post(client, csrf, "/training/new/name", name="resnet-50.v2").get_data(as_text=True)

    with sqlite_app.app_context():
        add_node("gpu-node", cpu=8, memory_gb=16, gpus=2, partition="a100")
        db.session.commit()
    fits = post(client, csrf, "/training/new/availability", cpu="2", memory_gb="4", gpu="1").get_data(as_text=True)
    assert "Starts at once on <strong>gpu-node</strong> (GPU 0)" in fits and "<code class=\"tag\">a100</code>" in fits
    assert "0 cores <small>(no limit)</small>" in fits and "8 / 8" in fits
    waits = post(client, csrf, "/training/new/availability", cpu="2", memory_gb="4", gpu="4").get_data(as_text=True)
    assert "Waits" in waits and "insufficient gpus on 1 node even when idle" in waits
    typo = post(client, csrf, "/training/new/availability", cpu="two", memory_gb="4").get_data(as_text=True)
    assert "Cannot estimate: cpu must be a number" in typo and "gpu-node" in typo


def make_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "train.py").write_text("print(1)\n")
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "x"], cwd=repo, check=True, env=env)
    return repo


def ended(app, job_id):
    with app.app_context():
        assert jobs.transition(db.session, job_id, JobStatus.QUEUED, JobStatus.COMPLETED)
        db.session.commit()


def test_copy_prefills_every_field_and_resubmits_with_the_same_attachments(sqlite_app, tmp_path):
    client, csrf = login(sqlite_app)
    repo = make_repo(tmp_path)
    parent = post(client, csrf, step="4", to="submit", **form_of(name="parent"))
    parent_id = int(parent.headers["HX-Redirect"].rsplit("/", 1)[1])
    ended(sqlite_app, parent_id)
    form = {"name": "orig.1", "image": "kqi-test/busybox:1", "command": "python train.py --lr 0.1", "cpu": "2",
            "memory_gb": "0.5", "gpu": "0.25", "nodes": "1", "env": "A=1\nB=x=y", "memo": "first try",
            "time_limit_s": "3600", "priority": "low", "partition": "a100", "parent_ids": str(parent_id),
            "git_repository": f"file://{repo}", "git_branch": "main", "pull": "1",
            "files": [(io.BytesIO(b"config"), "cfg.yaml")]}
    original = post(client, csrf, step="4", to="submit", **form)
    assert original.status_code == 204, original.get_data(as_text=True)
    original_id = int(original.headers["HX-Redirect"].rsplit("/", 1)[1])

    html = client.get(f"/training/new?copy={original_id}").get_data(as_text=True)
    assert f"copy of run #{original_id}" in html
    for name in ("name", "image", "cpu", "memory_gb", "gpu", "nodes", "time_limit_s", "git_repository", "git_branch"):
        expected = {"name": "orig.1", "cpu": "2", "memory_gb": "0.5", "gpu": "0.25", "git_repository": f"file://{repo}"}
        assert value_of(html, name) == expected.get(name, form.get(name)), name
    assert len(value_of(html, "git_commit")) == 40  # pinned: the copy runs the same code
    assert "python train.py --lr 0.1</textarea>" in html and "A=1\nB=x=y</textarea>" in html
    assert "first try</textarea>" in html and '<option selected>low</option>' in html
    assert '<option selected>a100</option>' in html  # kept even where no node has that label now
    assert f'<option value="{parent_id}" selected>' in html
    assert 'name="pull" value="1" checked' in html and "cfg.yaml" in html

    copied = {k: v for k, v in form.items() if k != "files"}
    keep = re.search(r'name="keep_attachment" value="(\d+)" checked', html).group(1)
    again = post(client, csrf, step="4", to="submit", **copied, copy_of=str(original_id), keep_attachment=keep)
    assert again.status_code == 204, again.get_data(as_text=True)
    with sqlite_app.app_context():
        first, second = db.session.get(Job, original_id), db.session.query(Job).order_by(Job.id.desc()).first()
        names = [[(a.name, a.sha256) for a in job_sources.attachments(db.session, j)] for j in (first, second)]
        assert names[0] == names[1] and names[0][0][0] == "cfg.yaml"
        assert second.source.git_commit == first.source.git_commit and second.partition == "a100"


def test_run_inference_opens_the_form_with_the_training_as_parent(sqlite_app):
    client, csrf = login(sqlite_app)
    training = post(client, csrf, step="4", to="submit", **form_of(name="trained", gpu="1",
                                                                       memo="the training's memo"))
    training_id = int(training.headers["HX-Redirect"].rsplit("/", 1)[1])
    assert client.get(f"/inference/new?parent={training_id}").status_code == 200  # queued parents are offered too
    ended(sqlite_app, training_id)
    html = client.get(f"/inference/new?parent={training_id}").get_data(as_text=True)
    assert "<h1>New inference" in html and 'action="/inference/new"' in html
    assert f'<option value="{training_id}" selected>' in html and value_of(html, "gpu") == "1"
    assert "the training's memo" not in html
    no_parent = post(client, csrf, "/inference/new", step="1", to="2", **form_of())
    assert no_parent.status_code == 422 and "at least one parent training" in no_parent.get_data(as_text=True)
    done = post(client, csrf, "/inference/new", step="4", to="submit",
                **form_of(name="infer", parent_ids=str(training_id)))
    assert done.status_code == 204, done.get_data(as_text=True)
    with sqlite_app.app_context():
        job = db.session.query(Job).filter_by(name="infer").one()
        assert job.kind == "inference" and done.headers["HX-Redirect"] == f"/inference/{job.id}"


def test_copy_and_parent_of_another_tenants_run_are_404(sqlite_app):
    owner, owner_csrf = login(sqlite_app, "team-a")
    made = post(owner, owner_csrf, step="4", to="submit", **form_of(name="theirs"))
    job_id = int(made.headers["HX-Redirect"].rsplit("/", 1)[1])
    ended(sqlite_app, job_id)
    stranger, csrf = login(sqlite_app, "team-b")
    assert stranger.get(f"/training/new?copy={job_id}").status_code == 404
    assert stranger.get(f"/inference/new?parent={job_id}").status_code == 404
    assert "theirs" not in stranger.get("/training/new").get_data(as_text=True)
    refused = post(stranger, csrf, step="1", to="2", **form_of(parent_ids=str(job_id)))
    assert refused.status_code == 422 and f"parent job {job_id} not found" in refused.get_data(as_text=True)
    kept = post(stranger, csrf, step="4", to="submit", **form_of(copy_of=str(job_id), keep_attachment="1"))
    assert kept.status_code == 422 and "job not found" in kept.get_data(as_text=True)


def test_a_repository_on_a_registered_server_is_a_path_without_dot_dot(sqlite_app):
    client, csrf = login(sqlite_app)
    with sqlite_app.app_context():
        server = gitsource.register_server(db.session, {"name": "corp", "url": "https://git.example.com"})
        db.session.commit()
        server_id = server.id
    for path in ("../other/repo", "team/../../x", "https://evil.example/x", "team/model?x=1"):
        bad = post(client, csrf, step="2", to="3", **form_of(git_server=str(server_id), git_repository=path))
        assert bad.status_code == 422 and "path on the server" in bad.get_data(as_text=True), path
