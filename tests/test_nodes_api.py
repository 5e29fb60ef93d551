"""The node layer without engines, on SQLite and PostgreSQL: registration input checks, the admin's
settings and their effect on the scheduler's view, heartbeat states and lost jobs, the lease, the
node pages, and the nvidia-smi and URL parsers."""
from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest

import kqi
from kqi.backends.base import NodeError
from kqi.backends.docker.gpus import model_label, parse_apps, parse_gpus
from kqi.backends.registry import validate_url
from kqi.cluster import health as node_health
from kqi.cluster import registry as node_registry
from kqi.extensions import db
from kqi.jobs import lifecycle as jobs
from kqi.models import GpuAllocation, Job, JobPart, JobStatus, Node, Role, utcnow
from kqi.models.nodes import NodeGpu
from kqi.scheduler import snapshot
from kqi.scheduler.lease import SchedulerLease
from tests.conftest import Factory

PEM_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot really a key\n-----END OPENSSH PRIVATE KEY-----\n"


def make_node(app, name="n1", gpus=0, **values):
    with app.app_context():
        node = Node(name=name, url=f"unix:///nowhere/{name}.sock", cpu_milli=4000, memory_mib=8192, gpu_count=gpus,
                    **values)
        db.session.add(node)
        db.session.flush()
        db.session.add_all(NodeGpu(node_id=node.id, gpu_index=i, model="") for i in range(gpus))
        db.session.commit()
        return node.id


@pytest.fixture
def admin(factory):
    return factory.api(admin=True, role=Role.ADMIN)


@pytest.mark.parametrize("body, field, words", [
    ({"url": "http://x:1"}, "url", "must start with"),
    ({"url": "ssh://10.0.0.5"}, "url", "needs a user"),
    ({"url": "ssh://root@10.0.0.5/var/run/docker.sock;reboot"}, "url", "remote Docker socket"),
    ({"url": "ssh://root@10.0.0.5/var/$(id)/docker.sock"}, "url", "remote Docker socket"),
    ({"url": "ssh://root@10.0.0.5:22"}, "ssh_private_key", "needs ssh_private_key"),
    ({"url": "ssh://root@10.0.0.5", "ssh_private_key": PEM_KEY}, "ssh_private_key", "not an unencrypted"),
    ({"url": "ssh://root@10.0.0.5", "ssh_private_key": "hello"}, "ssh_private_key", "PEM"),
    ({"url": "ssh://root@10.0.0.5", "ssh_host_key_fingerprint": "MD5:aa"}, "ssh_host_key_fingerprint", "SHA256"),
    ({"url": "unix:///var/run/docker.sock", "tls_ca": "-----BEGIN CERTIFICATE-----\n"}, "tls_ca", "tcp://"),
    ({"url": "tcp://10.0.0.5:2376", "tls_ca": "-----BEGIN CERTIFICATE-----\n"}, "tls_cert", "together"),
    ({"url": "tcp://10.0.0.5:2376", "ssh_private_key": PEM_KEY}, "ssh_private_key", "for ssh://"),
    ({"url": "unix:///x.sock", "tenants": ["nobody-here"]}, "tenants", "no tenant"),
    ({"url": "unix:///x.sock", "tenants": "default"}, "tenants", "list"),
    ({"url": "unix:///x.sock", "allow_notebooks": "maybe"}, "allow_notebooks", "true or false"),
    ({"url": "unix:///x.sock", "secret": 1}, "secret", "unknown"),
    ({"url": "unix:///x.sock", "shared_storage": "mnt/share"}, "shared_storage", "absolute folder path"),
    ({"url": "unix:///x.sock", "shared_storage": "/tmp/../etc"}, "shared_storage", "'..'"),
    ({"url": "unix:///x.sock", "shared_storage": "/tmp/./x"}, "shared_storage", "'..'"),
    ({"url": "unix:///x.sock", "shared_storage": "/tmp\n"}, "shared_storage", "absolute folder path"),
    ({"url": "unix:///x.sock", "shared_storage": "/tmp/a b"}, "shared_storage", "absolute folder path"),
    ({"url": "unix:///x.sock", "shared_storage": "/tmp:/etc"}, "shared_storage", "absolute folder path"),
    ({"url": "unix:///x.sock", "shared_storage": "/"}, "shared_storage", "absolute folder path"),
    ({"url": "unix:///x.sock", "shared_storage": "/no/such/share/here"}, "shared_storage", "not a folder on the kqi"),
    ({"url": "unix:///x.sock", "shared_storage": ["/tmp"]}, "shared_storage", "must be a string"),
    ({"url": "unix:///x.sock", "cache_gb": -1}, "cache_gb", "at least 0"),
    ({"url": "unix:///x.sock", "cache_gb": "lots"}, "cache_gb", "must be a number"),
])
def test_registration_rejects_bad_input_before_touching_anything(app, admin, body, field, words):
    response = admin.post("/api/v1/admin/nodes", json={"name": "n1", **body})
    error = response.get_json()["error"]
    assert response.status_code == 400 and error["field"] == field and words in error["message"], error
    assert admin.get("/api/v1/admin/nodes").get_json()["items"] == []


def test_only_admins_manage_nodes(app, factory):
    node_id = make_node(app)
    user = factory.api()
    assert user.post("/api/v1/admin/nodes", json={"name": "x", "url": "unix:///x"}).status_code == 403
    assert user.get(f"/api/v1/admin/nodes/{node_id}/events").status_code == 403
    assert user.post(f"/api/v1/admin/nodes/{node_id}/refresh").status_code == 403


def test_admin_settings_shape_the_schedulers_view_and_are_recorded(app, admin):
    node_id = make_node(app, gpus=1)
    other_id = make_node(app, name="n2")
    put = lambda body: admin.client.put(f"/api/v1/admin/nodes/{node_id}", json=body,  # noqa: E731
                                        headers={"Authorization": f"Bearer {admin.token}"})
    assert put({"state": "Offline"}).status_code == 400  # only the heartbeat decides that
    assert put({}).status_code == 400
    assert put({"gpus": 65}).get_json()["error"]["field"] == "gpus"
    assert admin.client.put("/api/v1/admin/nodes/999999", json={"state": "Ready"},
                            headers={"Authorization": f"Bearer {admin.token}"}).status_code == 404

    changed = put({"state": "Draining", "tenants": ["default"], "allow_notebooks": False, "gpus": 2,
                   "gpu_model": "NVIDIA H100 80GB HBM3", "partition": "fast"})
    node = changed.get_json()
    assert changed.status_code == 200, node
    assert (node["state"], node["admin_state"], node["schedulable"]) == ("Draining", "Draining", False)
    assert node["tenants"] == ["default"] and node["allow_notebooks"] is False and node["allow_tensorboard"] is True
    assert node["labels"] == ["fast", "nvidia-h100-80gb-hbm3"] and node["gpus"]["total"] == 2
    events = admin.get(f"/api/v1/admin/nodes/{node_id}/events").get_json()["items"]
    assert (events[0]["old_state"], events[0]["new_state"]) == ("Ready", "Draining")

    with app.app_context():
        db.session.query(NodeGpu).filter_by(node_id=node_id, gpu_index=1).update({"busy": True})
        db.session.commit()
        views = {v.name: v for v in snapshot.read(db.session, now=time.time()).state.nodes}
    view = views["n1"]
    assert not view.schedulable and view.tenants == frozenset({"default"})
    # The node flags become the planner's node features (kqi/scheduler/placement.py): TensorBoard allowed
    # here, notebooks not; the labels are the partitions alone.
    assert view.labels == frozenset({"fast", "nvidia-h100-80gb-hbm3"})
    assert "tensorboard" in view.features and "notebook" not in view.features
    assert [(g.index, g.model, g.busy) for g in view.gpus] == [(0, "NVIDIA H100 80GB HBM3", False),
                                                              (1, "NVIDIA H100 80GB HBM3", True)]
    assert views["n2"].schedulable and views["n2"].tenants is None
    assert put({"state": "Ready", "tenants": None}).get_json()["schedulable"] is True
    assert admin.get(f"/api/v1/admin/nodes/{other_id}").get_json()["state"] == "Ready"


def test_shared_storage_and_cache_budget_are_node_settings(app, admin, tmp_path):
    node_id = make_node(app)
    share = tmp_path / "share"
    share.mkdir()
    put = lambda body: admin.client.put(f"/api/v1/admin/nodes/{node_id}", json=body,  # noqa: E731
                                        headers={"Authorization": f"Bearer {admin.token}"})
    node = admin.get(f"/api/v1/admin/nodes/{node_id}").get_json()
    assert (node["shared_storage"], node["cache_gb"], node["cache"]) == (None, None, {"volumes": 0, "bytes": 0})
    node = put({"shared_storage": str(share), "cache_gb": 2.5}).get_json()
    assert (node["shared_storage"], node["cache_gb"]) == (str(share), 2.5)
    refused = put({"shared_storage": str(share / ".." / "share")})
    assert refused.status_code == 400 and refused.get_json()["error"]["field"] == "shared_storage"
    assert admin.get(f"/api/v1/admin/nodes/{node_id}").get_json()["shared_storage"] == str(share)  # unchanged
    node = put({"shared_storage": "", "cache_gb": None}).get_json()
    assert (node["shared_storage"], node["cache_gb"]) == (None, None)  # none; the site's node_cache_gb


def _running_job(app, principal_user, node_id, requeue=False, gpu_index=0):
    """A job as the scheduler leaves it once started: Running on the node, one GPU held."""
    with app.app_context():
        from kqi.accounts.auth import principal_for_token
        who = principal_for_token(db.session, principal_user.token)
        job = jobs.submit(db.session, kqi.settings_of(app), kqi.box_of(app), who,
                          {"name": "j", "image": "busybox", "command": "true", "cpu": 1, "memory_gb": 1, "gpu": 1,
                           "requeue_on_node_loss": requeue})
        job.status, job.started_at = JobStatus.RUNNING, utcnow()
        db.session.add(JobPart(job_id=job.id, rank=0, node_id=node_id, gpu_indices=[gpu_index], container_id="c1"))
        db.session.add(GpuAllocation(job_id=job.id, node_id=node_id, gpu_index=gpu_index, milli=1000))
        db.session.commit()
        return job.id


def test_missed_heartbeats_make_a_node_unreachable_then_offline_and_its_jobs_lost(app, factory):
    node_id = make_node(app, gpus=2)
    user = factory.api()
    killed = _running_job(app, user, node_id)
    requeued = _running_job(app, user, node_id, requeue=True, gpu_index=1)
    with app.app_context():
        session = db.session
        node = session.get(Node, node_id)
        silent = {node_id: node_health.Outcome(error=NodeError("connection refused"))}
        node_health.record_heartbeats(session, [node], silent, grace_s=15)
        assert (node.state, node.schedulable, node.last_error) == ("Unreachable", False, "connection refused")
        assert node_health.end_jobs_on_lost_nodes(session, 15, False, lambda job, lost: None) == 0
        node.down_since = utcnow() - timedelta(seconds=16)  # the grace period has passed
        node_health.record_heartbeats(session, [node], silent, grace_s=15)
        assert node.state == "Offline"
        discarded = []
        assert node_health.end_jobs_on_lost_nodes(session, 15, False,
                                                  lambda job, lost: discarded.append((job.id, lost))) == 2
        assert discarded == [(killed, {node_id}), (requeued, {node_id})]
        first, second = session.get(Job, killed), session.get(Job, requeued)
        session.refresh(first)
        session.refresh(second)
        assert (first.status, first.reason) == (JobStatus.KILLED, "node lost")
        assert second.status == JobStatus.QUEUED and second.parts == [] and second.started_at is None
        assert session.query(GpuAllocation).count() == 0
        node_health.record_heartbeats(session, [node], {node_id: node_health.Outcome(containers=[])}, grace_s=15)
        assert (node.state, node.down_since, node.last_error) == ("Ready", None, "")
        session.commit()
        states = [(e.old_state, e.new_state) for e in reversed(node_registry.events(session, node))]
    assert states == [("Ready", "Unreachable"), ("Unreachable", "Offline"), ("Offline", "Ready")]


def test_the_site_setting_requeues_every_lost_job(app, factory):
    node_id = make_node(app, gpus=1)
    job_id = _running_job(app, factory.api(), node_id)
    with app.app_context():
        node = db.session.get(Node, node_id)
        node.down_since = utcnow() - timedelta(seconds=60)
        db.session.commit()
        assert node_health.end_jobs_on_lost_nodes(db.session, 15, True, lambda job, lost: None) == 1
        assert db.session.get(Job, job_id).status == JobStatus.QUEUED


def test_lease_one_holder_at_a_time_and_taken_over_when_it_lapses(app):
    first, second = SchedulerLease(ttl_s=1), SchedulerLease(ttl_s=1)
    with app.app_context():
        shared = db.engine.dialect.name == "postgresql"
        assert first.hold(db.session)
        assert first.unbroken is (not shared)  # taken, not renewed: what the scheduler kept may be stale
        assert second.hold(db.session) is (not shared)  # SQLite: one process, no lease
        if shared:
            assert first.hold(db.session) and first.unbroken  # renewing
            time.sleep(1.3)
            assert second.hold(db.session) and not first.hold(db.session)
            second.release(db.session)
            assert first.hold(db.session) and not first.unbroken  # taken back: the other one scheduled meanwhile
            time.sleep(1.3)  # lapsed, though nobody took it: renewed, but no longer unbroken
            assert first.hold(db.session) and not first.unbroken
            assert first.hold(db.session) and first.unbroken
        db.session.remove()


def _admin_page_client(app):
    username, password = Factory(app).user(admin=True, role=Role.ADMIN)
    client = app.test_client()
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    assert client.post("/login", data={"username": username, "password": password, "csrf_token": token}).status_code == 302
    return client, token


def test_node_page_shows_state_events_and_takes_admin_actions(sqlite_app):
    node_id = make_node(sqlite_app, gpus=1)
    client, token = _admin_page_client(sqlite_app)
    assert f'/nodes/{node_id}"' in client.get("/nodes").get_data(as_text=True)
    html = client.get(f"/nodes/{node_id}").get_data(as_text=True)
    assert "State changes" in html and "Refresh inventory" in html and ">Ready<" in html
    drained = client.post(f"/nodes/{node_id}/state", data={"state": "Draining", "csrf_token": token},
                          headers={"HX-Request": "true"})
    body = drained.get_data(as_text=True)
    assert drained.status_code == 200 and "<html" not in body and ">Draining<" in body and "set by an administrator" in body
    bad = client.post(f"/nodes/{node_id}/state", data={"state": "Gone", "csrf_token": token}, headers={"HX-Request": "true"})
    assert bad.status_code == 422 and "state must be one of" in bad.get_data(as_text=True)
    refused = client.post(f"/nodes/{node_id}/refresh", data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert refused.status_code == 422 and "cannot reach" in refused.get_data(as_text=True)
    access = client.post(f"/nodes/{node_id}/access", data={"tenants": "default", "allow_tensorboard": "on",
                                                           "csrf_token": token})
    assert access.status_code == 200 and "only default" in access.get_data(as_text=True)
    assert "cached on the node: 0 volume(s), 0 of 100 GB (the site's default)" in access.get_data(as_text=True)
    storage = client.post(f"/nodes/{node_id}/storage", data={"shared_storage": "relative/path", "cache_gb": "",
                                                            "csrf_token": token}, headers={"HX-Request": "true"})
    assert storage.status_code == 422 and "absolute folder path" in storage.get_data(as_text=True)
    storage = client.post(f"/nodes/{node_id}/storage", data={"shared_storage": "", "cache_gb": "7.5",
                                                            "csrf_token": token}, headers={"HX-Request": "true"})
    assert storage.status_code == 200 and "0 of 7.5 GB" in storage.get_data(as_text=True)


def test_nvidia_smi_output_is_parsed_strictly():
    text = "0, GPU-aaa, NVIDIA A100-SXM4-80GB, 81920\n\n1, GPU-bbb, Tesla V100-PCIE-16GB, 16160\n"
    gpus = parse_gpus(text)
    assert [(g.index, g.uuid, g.model, g.memory_mib) for g in gpus] == [
        (0, "GPU-aaa", "NVIDIA A100-SXM4-80GB", 81920), (1, "GPU-bbb", "Tesla V100-PCIE-16GB", 16160)]
    assert parse_apps("GPU-bbb, 4242\nGPU-bbb, 4243\n") == {"GPU-bbb"}
    for bad in ("0, GPU-a, A100\n", "x, GPU-a, A100, 1\n", "0, a, A, 1\n0, b, B, 1\n"):
        with pytest.raises(NodeError):
            parse_gpus(bad)
    assert model_label("Tesla V100-PCIE-16GB") == "tesla-v100-pcie-16gb"


@pytest.mark.parametrize("url, ok", [
    ("unix:///var/run/docker.sock", True), ("tcp://10.0.0.5:2376", True), ("ssh://kqi@10.0.0.5", True),
    ("ssh://kqi@10.0.0.5:2222/run/user/1000/docker.sock", True), ("tcp://10.0.0.5", False),
    ("ssh://kqi:pw@10.0.0.5", False), ("ssh://kqi@10.0.0.5/a b", False), ("ssh://-oProxyCommand=x@h", False),
    ("ssh://kqi@h/../etc/docker.sock", False), ("tcp://h:1?x=1", False),
])
def test_node_urls(url, ok):
    assert (validate_url(url) is None) is ok, validate_url(url)
