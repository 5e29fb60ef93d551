"""Read-only inputs kept on each node by content (kqi/jobs/node_cache.py), on real engines: shipped
once per node and shared, filled once by starts at the same time, evicted least recently used but
never while a container uses them, never taken from an interrupted fill, and bound read-only
from shared storage instead of shipped; a notebook's code is its own writable copy. What the engine
did is read from its own event stream."""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
import threading
import time

import docker
import pytest

import kqi
from kqi.backends.registry import driver_for
from kqi.extensions import db
from kqi.jobs import node_cache
from kqi.jobs.sources import input_hash
from kqi.models import Node, NodeCacheEntry
from tests.conftest import make_app, wait_for
from tests.node_helpers import IMAGE, NodeSite

pytestmark = pytest.mark.engines
ENDED = ("Completed", "Failed", "Error", "Killed", "UserCanceled")
FILLER = "kqi-volume-filler:1"
# Copies what the job sees into its outputs, and says whether it could write into its inputs.
COPY = ("cp -r /kqi/input/. /kqi/output/input/ && "
        "for d in input git; do (touch /kqi/$d/probe 2>/dev/null && echo writable || echo read-only)"
        " > /kqi/output/$d-mode.txt; done")


@pytest.fixture
def site(tmp_path, docker_engines_clean):
    app = make_app(tmp_path)
    yield NodeSite(app), docker_engines_clean[0]
    kqi.shutdown(app)


def make_repository(folder) -> str:
    folder.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    (folder / "train.sh").write_text("echo training\n")
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, env=env)
    return str(folder)


def run(s: NodeSite, **fields) -> dict:
    job_id = s.submit(**fields)
    job = s.wait_status(job_id, *ENDED, timeout=180)
    assert job["status"] == "Completed", (job, s.log(job_id))
    return job


def output(s: NodeSite, job_id: int, path: str) -> bytes:
    response = s.api.get(f"/api/v1/training/{job_id}/files/{path}")
    assert response.status_code == 200, (path, response.status_code)
    return response.get_data()


def events(engine, since: float, **filters) -> list[dict]:
    client = docker.APIClient(base_url=engine.unix_url, timeout=30)
    try:
        return list(client.events(since=since, until=time.time() + 1, filters=filters, decode=True))
    finally:
        client.close()


def cache_volumes(engine) -> dict[str, dict]:
    client = docker.APIClient(base_url=engine.unix_url, timeout=30)
    try:
        return {v["Name"]: v["Labels"] for v in client.volumes(filters={"label": "kqi.cache"}).get("Volumes") or []}
    finally:
        client.close()


def created_at(engine) -> dict[str, str]:
    """When each cache volume was made (a volume filled again is a new one)."""
    client = docker.APIClient(base_url=engine.unix_url, timeout=30)
    try:
        return {name: client.inspect_volume(name)["CreatedAt"] for name in cache_volumes(engine)}
    finally:
        client.close()


def fills(engine, since: float) -> int:
    """Helper containers made to fill a cache volume (one per fill)."""
    return sum(1 for e in events(engine, since, type="container", event="create")
               if e["Actor"]["Attributes"].get("image") == FILLER)


def mounted_read_only_by(engine, since: float, volume: str, destination: str) -> set[str]:
    """The containers that mounted the volume read-only at `destination`."""
    return {e["Actor"]["Attributes"]["container"] for e in events(engine, since, type="volume", event="mount")
            if e["Actor"]["ID"] == volume and e["Actor"]["Attributes"].get("destination") == destination
            and e["Actor"]["Attributes"].get("read/write") == "false"}


def test_a_second_job_on_the_node_mounts_the_same_volumes_and_ships_nothing(site, tmp_path):
    s, engine = site
    node_id = s.register(name="n1", url=engine.unix_url)["id"]
    files = {"weights.bin": os.urandom(300_000), "labels.csv": b"1,cat\n2,dog\n"}
    dataset = s.dataset(files)
    git = {"repository": make_repository(tmp_path / "repo")}
    since = time.time()
    first = run(s, name="first", dataset_id=dataset["id"], git=git, command=COPY)
    between, made = time.time(), created_at(engine)
    second = run(s, name="second", dataset_id=dataset["id"], git=git, command=COPY)

    for job in (first, second):  # byte for byte what was uploaded, read-only
        for name, content in files.items():
            assert output(s, job["id"], f"input/training/{dataset['data_id']}/{name}") == content
        assert output(s, job["id"], "input-mode.txt") == b"read-only\n"
        assert output(s, job["id"], "git-mode.txt") == b"read-only\n"
    site_id = kqi.settings_of(s.app).site_id
    commit = first["git"]["commit"]
    expected = {node_cache.volume_name(site_id, input_hash("dataset", dataset["content_hash"])): "/kqi/input",
                node_cache.volume_name(site_id, input_hash("git", git["repository"], commit)): "/kqi/git"}
    volumes = cache_volumes(engine)
    assert set(volumes) == set(expected)
    for name, labels in volumes.items():
        assert labels["kqi.site"] == site_id and name.endswith(labels["kqi.cache"][:32]) and int(labels["kqi.bytes"]) > 0
    # the engine's record: each volume filled once, by the first job, and kept as it was; both jobs mounted it
    # read-only
    assert fills(engine, since) == 2 and fills(engine, between) == 0 and created_at(engine) == made
    assert events(engine, since, type="volume", event="destroy") == []
    for name, destination in expected.items():
        assert len(mounted_read_only_by(engine, since, name, destination)) == 2  # the two jobs' containers
    node = s.node(node_id)
    assert node["cache"]["volumes"] == 2 and node["cache"]["bytes"] == sum(int(labels["kqi.bytes"]) for labels in volumes.values())


def test_starts_at_the_same_time_fill_an_input_once(tmp_path, docker_engines_clean, db_url):
    engine = docker_engines_clean[0]
    app = make_app(tmp_path, database_url=db_url)
    try:
        s = NodeSite(app)
        node_id = s.register(name="n1", url=engine.unix_url)["id"]
        site_id = kqi.settings_of(app).site_id

        # Two jobs placed in one tick, with a dataset the node does not have: one fill.
        dataset = s.dataset({"x.bin": os.urandom(50_000)})
        since = time.time()
        ids = [s.submit(name=f"j{i}", dataset_id=dataset["id"], command=COPY) for i in range(2)]
        for job_id in ids:
            assert s.wait_status(job_id, *ENDED, timeout=180)["status"] == "Completed", s.log(job_id)
        assert fills(engine, since) == 1 and len(cache_volumes(engine)) == 1

        # Two threads placing the same input on the node at once (as per-node executors do): the
        # second waits for the first's fill and mounts it; the tar is built once.
        content, built = "ab" * 32, []

        def build(scratch):
            built.append(threading.get_ident())
            time.sleep(0.5)  # a slow build: the other thread arrives while this one fills
            scratch.mkdir(parents=True, exist_ok=True)
            target = scratch / f"{threading.get_ident()}.tar"
            with tarfile.open(target, "w") as archive:
                info = tarfile.TarInfo("data.txt")
                info.size = 5
                archive.addfile(info, io.BytesIO(b"hello"))
            return target

        driver = driver_for(engine.unix_url)
        barrier, placed, failed = threading.Barrier(2), [], []

        def start():
            try:
                with app.app_context():
                    node = db_node(node_id)
                    pins = node_cache.Pins()
                    barrier.wait()
                    placed.append(node_cache.place(db.session, node, driver, [
                        node_cache.ReadOnlyInput("/kqi/input", content, build)], scratch=tmp_path / "scratch",
                        pins=pins, site=site_id, budget_gb=1))
                    pins.release()
                    db.session.remove()
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                failed.append(exc)

        since = time.time()
        threads = [threading.Thread(target=start) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        driver.close()
        assert not failed and len(built) == 1 and placed[0] == placed[1], (failed, built, placed)
        assert placed[0][0].volume == node_cache.volume_name(site_id, content)
        assert fills(engine, since) == 1
        with app.app_context():
            rows = db.session.query(NodeCacheEntry).filter_by(node_id=node_id).all()
            assert sorted(r.state for r in rows) == ["ready", "ready"]
    finally:
        kqi.shutdown(app)
        with app.app_context():
            db.engine.dispose()


def db_node(node_id: int) -> Node:
    return db.session.get(Node, node_id)


def test_eviction_removes_the_least_recently_used_volume_no_container_uses(site):
    s, engine = site
    node_id = s.register(name="n1", url=engine.unix_url)["id"]
    site_id = kqi.settings_of(s.app).site_id
    datasets = {key: s.dataset({"f.bin": os.urandom(1000)}, name=key) for key in "ABCD"}
    volume = {key: node_cache.volume_name(site_id, input_hash("dataset", d["content_hash"])) for key, d in datasets.items()}

    # A: the least recently used, but its job still runs
    holder = s.submit(name="holder", dataset_id=datasets["A"]["id"], command="sleep 120")
    s.wait_status(holder, "Running", timeout=120)
    size = int(cache_volumes(engine)[volume["A"]]["kqi.bytes"])  # every dataset here makes a tar of this size
    response = s.put_node(node_id, cache_gb=3.5 * size / 1024 ** 3)  # room for three
    assert response.status_code == 200, response.get_json()
    run(s, name="b", dataset_id=datasets["B"]["id"], command=COPY)
    run(s, name="d", dataset_id=datasets["D"]["id"], command=COPY)
    assert set(cache_volumes(engine)) == {volume["A"], volume["B"], volume["D"]}

    since = time.time()
    c = run(s, name="c", dataset_id=datasets["C"]["id"], command=COPY)
    assert output(s, c["id"], f"input/training/{datasets['C']['data_id']}/f.bin")  # its input arrived
    # B went: the least recently used that no container uses; A (older, in use) and D stay
    assert set(cache_volumes(engine)) == {volume["A"], volume["D"], volume["C"]}
    assert [e["Actor"]["ID"] for e in events(engine, since, type="volume", event="destroy")] == [volume["B"]]
    with s.app.app_context():
        hashes = {r.content_hash for r in db.session.query(NodeCacheEntry).filter_by(node_id=node_id)}
    assert hashes == {input_hash("dataset", datasets[k]["content_hash"]) for k in "ADC"}

    # B again: refilled (it was evicted), and now A can go as well once its job has ended
    assert s.api.post(f"/api/v1/training/{holder}/halt").status_code in (200, 202)
    s.wait_status(holder, *ENDED, timeout=120)
    s.put_node(node_id, cache_gb=1.5 * size / 1024 ** 3)
    b = run(s, name="b2", dataset_id=datasets["B"]["id"], command=COPY)
    assert output(s, b["id"], f"input/training/{datasets['B']['data_id']}/f.bin")
    assert set(cache_volumes(engine)) == {volume["B"]}


def test_a_shared_storage_node_binds_inputs_read_only_and_ships_nothing(site, tmp_path):
    s, engine = site
    share = tmp_path / "share"
    share.mkdir()
    s.register(name="n1", url=engine.unix_url, shared_storage=str(share))
    files = {"weights.bin": os.urandom(200_000), "labels.csv": b"1,cat\n"}
    dataset = s.dataset(files)
    content = input_hash("dataset", dataset["content_hash"])
    since = time.time()
    job_id = s.submit(name="shared", dataset_id=dataset["id"], command=COPY + " && touch /kqi/output/done && sleep 120")
    s.wait_status(job_id, "Running", timeout=180)
    client = docker.DockerClient(base_url=engine.unix_url, timeout=30)
    try:
        container = wait_for(lambda: client.containers.list(filters={"label": f"kqi.job={job_id}"}), timeout=60)[0]
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    finally:
        client.close()
    folder = share / "kqi-inputs" / content
    assert mounts["/kqi/input"]["Type"] == "bind" and mounts["/kqi/input"]["Source"] == str(folder)
    assert mounts["/kqi/input"]["RW"] is False
    wait_for(lambda: any(f["path"] == "done" for f in s.api.get(f"/api/v1/training/{job_id}/files").get_json()["items"]),
             timeout=60)
    assert s.api.post(f"/api/v1/training/{job_id}/halt").status_code in (200, 202)
    assert s.wait_status(job_id, *ENDED, timeout=120)["status"] == "UserCanceled"
    for name, data in files.items():
        assert output(s, job_id, f"input/training/{dataset['data_id']}/{name}") == data
        assert (folder / "training" / str(dataset["data_id"]) / name).read_bytes() == data
    assert output(s, job_id, "input-mode.txt") == b"read-only\n"
    assert sorted(p.name for p in (share / "kqi-inputs").iterdir()) == [content]  # no partial folder left
    assert cache_volumes(engine) == {} and fills(engine, since) == 0


def test_an_interrupted_fill_is_never_used(site):
    s, engine = site
    s.register(name="n1", url=engine.unix_url)
    site_id = kqi.settings_of(s.app).site_id
    files = {"weights.bin": os.urandom(100_000)}
    dataset = s.dataset(files)
    content = input_hash("dataset", dataset["content_hash"])
    name = node_cache.volume_name(site_id, content)
    # What a crash in the middle of a fill leaves: the volume, labelled, with part of the input
    client = docker.APIClient(base_url=engine.unix_url, timeout=30)
    try:
        client.create_volume(name, labels={"kqi.site": site_id, "kqi.cache": content, "kqi.bytes": "100000"})
        helper = client.create_container(IMAGE, command=["true"], host_config=client.create_host_config(
            mounts=[docker.types.Mount("/fill", name, type="volume")]))
        partial = io.BytesIO()
        with tarfile.open(fileobj=partial, mode="w") as archive:
            info = tarfile.TarInfo(f"training/{dataset['data_id']}/weights.bin")
            info.size = 1000
            archive.addfile(info, io.BytesIO(files["weights.bin"][:1000]))
        client.put_archive(helper["Id"], "/fill", partial.getvalue())
        client.remove_container(helper["Id"], force=True)
    finally:
        client.close()

    since = time.time()
    job = run(s, name="after-crash", dataset_id=dataset["id"], command=COPY)
    assert output(s, job["id"], f"input/training/{dataset['data_id']}/weights.bin") == files["weights.bin"]
    assert [e["Actor"]["ID"] for e in events(engine, since, type="volume", event="destroy")] == [name]
    assert fills(engine, since) == 1

    # A complete volume that disappeared from the node (pruned by hand) is filled again, not assumed
    client = docker.APIClient(base_url=engine.unix_url, timeout=30)
    try:
        client.remove_volume(name)
    finally:
        client.close()
    since = time.time()
    again = run(s, name="after-prune", dataset_id=dataset["id"], command=COPY)
    assert output(s, again["id"], f"input/training/{dataset['data_id']}/weights.bin") == files["weights.bin"]
    assert fills(engine, since) == 1


def test_a_notebook_edits_its_own_copy_of_the_code(site, tmp_path):
    s, engine = site
    s.register(name="n1", url=engine.unix_url)
    command = ("sh -c 'cat /kqi/git/train.sh; touch /kqi/git/edited && echo code writable; "
               "exec httpd -f -p \"$0\" -h /kqi' {port}")
    settings = {"notebook_image": IMAGE, "notebook_command": command, "default_cpu": 0.1, "default_memory_gb": 0.05}
    assert s.admin.put("/api/v1/admin/settings", json=settings).status_code == 200
    created = s.api.post("/api/v1/notebooks/run", json={"name": "nb", "git": {"repository": make_repository(
        tmp_path / "repo")}})
    assert created.status_code == 201, created.get_json()
    notebook = f"/api/v1/notebooks/{created.get_json()['id']}"
    wait_for(lambda: s.api.get(notebook).get_json()["status"] == "Running", timeout=180, tick=s.scheduler.tick)
    log = wait_for(lambda: "code writable" in (text := s.api.get(f"{notebook}/log").get_data(as_text=True)) and text,
                   timeout=60)
    assert "echo training" in log
    assert cache_volumes(engine) == {}  # unpacked into its container, not the node's shared read-only copy
    assert s.api.post(f"{notebook}/halt").status_code == 200
    wait_for(lambda: s.api.get(notebook).get_json()["status"] in ENDED, timeout=120, tick=s.scheduler.tick)
