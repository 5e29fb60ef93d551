"""Training jobs end to end on real Docker engines (two dockerd "hosts" of the test cluster)."""
from __future__ import annotations

import docker
import pytest

import kqi
from kqi.extensions import db
from kqi.models import GpuAllocation, Job, JobPart, Role
from tests.conftest import ApiClient, Factory, make_app, ticked, wait_for

pytestmark = pytest.mark.engines
IMAGE = "kqi-test/busybox:1"


class Cluster:
    """An app with both test engines registered as nodes (2 declared GPUs each), and a user."""

    def __init__(self, app, engines):
        self.app = app
        self.engines = engines
        factory = Factory(app)
        admin = factory.api(admin=True, role=Role.ADMIN)
        for i, engine in enumerate(engines):
            response = admin.post("/api/v1/admin/nodes", json={"name": f"node{i + 1}", "url": engine.unix_url, "gpus": 2,
                                                               "address": engine.address})
            assert response.status_code == 201, response.get_json()
        self.admin = admin
        self.factory = factory
        self.api = factory.api()

    @property
    def scheduler(self):
        return self.app.extensions["kqi_scheduler"]

    def submit(self, **fields):
        body = {"name": "job", "image": IMAGE, "command": "true", "cpu": 0.5, "memory_gb": 0.25, **fields}
        response = self.api.post("/api/v1/training/run", json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def job(self, job_id):
        return self.api.get(f"/api/v1/training/{job_id}").get_json()

    def wait_status(self, job_id, *statuses, timeout=60):
        return wait_for(lambda: self.job(job_id)["status"] in statuses and self.job(job_id), timeout=timeout,
                        tick=ticked(self.scheduler))

    def containers(self, job_id=None):
        site = kqi.settings_of(self.app).site_id
        label = [f"kqi.site={site}"] + ([f"kqi.job={job_id}"] if job_id else [])
        found = []
        for engine in self.engines:
            client = docker.DockerClient(base_url=engine.unix_url)
            found += client.containers.list(all=True, filters={"label": label})
            client.close()
        return found


@pytest.fixture
def cluster(tmp_path, docker_engines_clean):
    app = make_app(tmp_path)
    yield Cluster(app, docker_engines_clean)
    kqi.shutdown(app)


def test_job_runs_to_completion_with_log_outputs_and_contract(cluster):
    job_id = cluster.submit(name="train-1", gpu=1, env={"LR": "0.5"}, command=(
        "echo start; pwd; env | sort; ls -d /kqi/*; mkdir -p /kqi/output/sub; "
        "echo 42 > /kqi/output/model.txt; echo deep > /kqi/output/sub/w.bin; "
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; echo done"))
    job = cluster.wait_status(job_id, "Completed", "Failed", "Error")
    assert job["status"] == "Completed", job
    assert job["exit_code"] == 0 and job["reason"] is None
    assert job["node"] in ("node1", "node2") and job["gpu_indices"] == [0]
    assert job["started_at"] and job["completed_at"] and job["started_at"] <= job["completed_at"]

    log = cluster.api.get(f"/api/v1/training/{job_id}/log").get_data(as_text=True)
    lines = log.splitlines()
    assert lines[0] == "start" and lines[1] == "/kqi/git" and lines[-1] == "done"
    for expected in (f"TRAINING_ID={job_id}", "LC_ALL=C.UTF-8", "LANG=C.UTF-8", "LR=0.5",
                     "NVIDIA_VISIBLE_DEVICES=0", "KQI_GPU_INDICES=0"):
        assert expected in lines, expected
    for folder in ("/kqi/attach", "/kqi/git", "/kqi/input", "/kqi/output", "/kqi/parent"):
        assert folder in lines
    assert str(256 * 1024 * 1024) in lines  # memory_gb 0.25 became the container's limit

    files = cluster.api.get(f"/api/v1/training/{job_id}/files").get_json()["items"]
    assert files == [{"path": "model.txt", "size": 3}, {"path": "sub/w.bin", "size": 5}]
    assert cluster.api.get(f"/api/v1/training/{job_id}/files/model.txt").get_data() == b"42\n"
    assert cluster.api.get(f"/api/v1/training/{job_id}/files/sub/w.bin").get_data() == b"deep\n"
    assert cluster.api.get(f"/api/v1/training/{job_id}/files/..%2f..%2fsecret_key").status_code == 404
    assert cluster.api.get(f"/api/v1/training/{job_id}/files/nope.txt").status_code == 404
    assert cluster.containers(job_id) == []  # collected and removed
    with cluster.app.app_context():
        assert db.session.query(GpuAllocation).count() == 0


def test_non_zero_exit_fails_with_the_exit_code(cluster):
    job_id = cluster.submit(command="echo oops >&2; exit 3")
    job = cluster.wait_status(job_id, "Failed", "Completed", "Error")
    assert job["status"] == "Failed" and job["exit_code"] == 3 and job["reason"] == "exit code 3"
    assert "oops" in cluster.api.get(f"/api/v1/training/{job_id}/log").get_data(as_text=True)


def test_missing_image_ends_in_error_with_the_engines_message(cluster):
    job_id = cluster.submit(image="kqi-test/not-there:1")
    job = cluster.wait_status(job_id, "Error", "Failed", "Completed")
    assert job["status"] == "Error"
    assert "kqi-test/not-there:1" in job["reason"]
    with cluster.app.app_context():
        assert db.session.query(GpuAllocation).count() == 0


def test_gpus_are_assigned_distinct_indices_and_never_double_booked(cluster):
    # 2 nodes x 2 GPUs: four one-GPU jobs fill them, the fifth waits with its reasons.
    ids = [cluster.submit(name=f"g{i}", gpu=1, command="sleep 30") for i in range(5)]
    running = [cluster.wait_status(i, "Running") for i in ids[:4]]
    placed = sorted((j["node"], j["gpu_indices"][0]) for j in running)
    assert placed == [("node1", 0), ("node1", 1), ("node2", 0), ("node2", 1)]
    waiting = cluster.job(ids[4])
    assert waiting["status"] == "Queued" and waiting["queue_position"] == 1
    assert any("gpu" in reason for reason in waiting["pending_reasons"]), waiting
    cluster.api.post(f"/api/v1/training/{ids[1]}/halt")
    freed = cluster.job(ids[1])
    started = cluster.wait_status(ids[4], "Running")
    assert cluster.wait_status(ids[1], "UserCanceled")["status"] == "UserCanceled"
    assert (started["node"], started["gpu_indices"]) == (freed["node"], freed["gpu_indices"])
    for job_id in ids:
        cluster.api.post(f"/api/v1/training/{job_id}/halt")
    for job_id in ids:
        cluster.wait_status(job_id, "UserCanceled", "Completed")


def test_halt_stops_a_running_container(cluster):
    job_id = cluster.submit(command="echo up; sleep 300")
    cluster.wait_status(job_id, "Running")
    wait_for(lambda: "up" in cluster.api.get(f"/api/v1/training/{job_id}/log").get_data(as_text=True), timeout=20)
    assert cluster.api.post(f"/api/v1/training/{job_id}/halt").get_json()["halt_requested"] is True
    job = cluster.wait_status(job_id, "UserCanceled", "Completed", "Failed")
    assert job["status"] == "UserCanceled" and job["reason"] == "halted by user"
    assert "up" in cluster.api.get(f"/api/v1/training/{job_id}/log").get_data(as_text=True)
    assert cluster.containers(job_id) == []


def test_time_limit_kills_the_job(cluster):
    job_id = cluster.submit(command="sleep 300", time_limit_s=2)
    job = cluster.wait_status(job_id, "Killed", "Completed", "Failed", timeout=40)
    assert job["status"] == "Killed" and job["reason"] == "time limit"


def test_out_of_memory_is_killed_with_oomkilled(cluster):
    job_id = cluster.submit(memory_gb=0.03, command="head -c 200000000 /dev/zero | tail -c 200000000 > /dev/null")
    job = cluster.wait_status(job_id, "Killed", "Completed", "Failed", "Error")
    assert job["status"] == "Killed" and job["reason"] == "OOMKilled"


def test_jobs_spread_over_both_nodes_when_one_is_full(cluster):
    # Each engine reports the machine's CPUs; a job asking for all of them fills one node.
    with cluster.app.app_context():
        from kqi.models import Node
        cpus = db.session.query(Node).first().cpu_milli / 1000
    first = cluster.submit(name="big-1", cpu=cpus, command="sleep 30")
    second = cluster.submit(name="big-2", cpu=cpus, command="sleep 30")
    third = cluster.submit(name="big-3", cpu=cpus, command="sleep 30")
    nodes = {cluster.wait_status(first, "Running")["node"], cluster.wait_status(second, "Running")["node"]}
    assert nodes == {"node1", "node2"}
    waiting = cluster.job(third)
    assert waiting["status"] == "Queued" and any("cpu" in r for r in waiting["pending_reasons"]), waiting
    for job_id in (first, second, third):
        cluster.api.post(f"/api/v1/training/{job_id}/halt")
    for job_id in (first, second, third):
        cluster.wait_status(job_id, "UserCanceled")


def test_restarted_server_finishes_running_jobs_and_never_starts_one_twice(tmp_path, docker_engines_clean):
    instance = tmp_path / "instance"
    app = make_app(tmp_path, site_id="restart1")
    cluster = Cluster(app, docker_engines_clean)
    running_id = cluster.submit(name="survivor", command="echo begun; sleep 4; echo ended > /kqi/output/out.txt")
    cluster.wait_status(running_id, "Running")
    # A job the old server placed but had not started when it died (status Starting, GPUs held).
    placed_id = cluster.submit(name="placed", gpu=1, command="echo once >> /kqi/output/runs.txt")
    with app.app_context():
        from kqi.jobs import lifecycle as jobs
        from kqi.models import JobStatus, Node
        node = db.session.query(Node).filter_by(name="node1").one()
        assert jobs.transition(db.session, placed_id, JobStatus.QUEUED, JobStatus.STARTING)
        db.session.add(JobPart(job_id=placed_id, rank=0, node_id=node.id, gpu_indices=[1]))
        db.session.add(GpuAllocation(job_id=placed_id, node_id=node.id, gpu_index=1, milli=1000))
        db.session.commit()
    app.extensions["kqi_scheduler"].shutdown()  # the old server is gone; its containers live on

    reborn = make_app(tmp_path, site_id="restart1", instance=str(instance))
    cluster.app = reborn
    cluster.api = ApiClient(reborn.test_client(), cluster.api.token)  # tokens live in the database
    done = cluster.wait_status(running_id, "Completed", "Failed", "Error")
    assert done["status"] == "Completed"
    assert cluster.api.get(f"/api/v1/training/{running_id}/files/out.txt").get_data() == b"ended\n"
    placed = cluster.wait_status(placed_id, "Completed", "Failed", "Error")
    assert placed["status"] == "Completed" and placed["gpu_indices"] == [1]
    assert cluster.api.get(f"/api/v1/training/{placed_id}/files/runs.txt").get_data() == b"once\n"
    assert cluster.containers() == []
    with reborn.app_context():
        assert db.session.query(GpuAllocation).count() == 0
        assert db.session.query(Job).filter(Job.status.in_(["Starting", "Running"])).count() == 0
    kqi.shutdown(reborn)


def test_gang_job_starts_one_part_per_node_with_torchrun_variables(cluster):
    job_id = cluster.submit(name="gang", nodes=2, gpu=2, command=(
        "echo rank=$NODE_RANK world=$WORLD_SIZE master=$MASTER_ADDR:$MASTER_PORT gpus=$NVIDIA_VISIBLE_DEVICES; "
        "echo $NODE_RANK > /kqi/output/rank.txt"))
    job = cluster.wait_status(job_id, "Completed", "Failed", "Error")
    assert job["status"] == "Completed", job
    parts = job["parts"]
    assert [p["rank"] for p in parts] == [0, 1] and {p["node"] for p in parts} == {"node1", "node2"}
    assert all(p["gpu_indices"] == [0, 1] for p in parts)
    master = next(e for e in cluster.engines if f"node{cluster.engines.index(e) + 1}" == parts[0]["node"])
    port = 20000 + job_id % 20000
    log = cluster.api.get(f"/api/v1/training/{job_id}/log").get_data(as_text=True)
    assert f"rank=0 world=2 master={master.address}:{port} gpus=0,1" in log
    # rank 0's outputs are the job's outputs; rank 1's log is kept beside the job's log
    assert cluster.api.get(f"/api/v1/training/{job_id}/files/rank.txt").get_data() == b"0\n"
    rank1_log = (cluster.app.instance_path + f"/jobs/{job_id}/stdout_stderr.rank1.log")
    assert f"rank=1 world=2 master={master.address}:{port}" in open(rank1_log).read()
    assert cluster.containers(job_id) == []


def test_gang_job_fails_as_a_whole_when_one_rank_fails(cluster):
    job_id = cluster.submit(name="gang-bad", nodes=2, command='if [ "$NODE_RANK" = 1 ]; then exit 4; fi; sleep 300')
    job = cluster.wait_status(job_id, "Failed", "Completed", "Error")
    assert job["status"] == "Failed" and job["reason"] == "rank 1 exit code 4" and job["exit_code"] == 4
    assert cluster.containers(job_id) == []


def test_job_over_its_tenant_quota_waits_then_starts_when_the_other_ends(cluster):
    tenant_id = cluster.admin.get("/api/v1/account").get_json()["tenant"]["id"]
    response = cluster.admin.client.put(f"/api/v1/admin/tenants/{tenant_id}", json={"quota": {"gpu": 1}},
                                        headers={"Authorization": f"Bearer {cluster.admin.token}"})
    assert response.status_code == 200 and response.get_json()["quota"]["gpu"] == 1
    first = cluster.submit(name="q1", gpu=1, command="sleep 3")
    second = cluster.submit(name="q2", gpu=1, command="true")
    cluster.wait_status(first, "Running")
    cluster.scheduler.tick()
    waiting = cluster.job(second)
    assert waiting["status"] == "Queued"
    assert any(r.startswith("tenant gpu quota 1/1") for r in waiting["pending_reasons"]), waiting
    assert cluster.wait_status(first, "Completed")["status"] == "Completed"
    done = cluster.wait_status(second, "Completed", "Failed", "Error")
    assert done["status"] == "Completed" and done["started_at"] >= cluster.job(first)["completed_at"]
