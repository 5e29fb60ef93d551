"""Submit -> Running latency through kqi against a bare `docker create` + `start`, in one run.

    python -m bench start-latency [--jobs 50] [--engine unix:///var/run/docker.sock]

kqi runs as `make run` runs it (a separate `kqi_app.py serve` process with its scheduler, SQLite)
with the engine as its only node. Each kqi sample is the time from just before the HTTP submit to
the job's recorded start (the engine's `start` call returned); each baseline sample is the time of
`create` + `start` of the same image and command from this process. The two kinds are interleaved
so that drift in the engine affects both alike.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import docker
import requests

from bench.engine import bench_engine

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "kqi-test/busybox:1"
COMMAND = "true"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def kqi_server(engine_url: str):
    """A kqi server process with the engine registered; yields (base url, token)."""
    with kqi_process() as (base, token, _instance):
        response = requests.post(f"{base}/api/v1/admin/nodes", json={"name": "bench", "url": engine_url},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=30)
        response.raise_for_status()
        yield base, token


@contextlib.contextmanager
def kqi_process(settings: dict[str, str] | None = None):
    """A `kqi_app.py serve` process as `make run` starts it (plus KQI_* `settings`), migrated, with
    an admin; yields (base url, the admin's token, the instance folder)."""
    with tempfile.TemporaryDirectory(prefix="kqi-bench-") as instance:
        port = _free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("KQI_")}
        env.update({"KQI_INSTANCE": instance, "KQI_PORT": str(port), "KQI_HOST": "127.0.0.1",
                    "KQI_ADMIN_PASSWORD": "bench-password", **(settings or {})})
        python = sys.executable
        for command in ("migrate", "create-admin"):
            subprocess.run([python, "kqi_app.py", command], cwd=ROOT, env=env, check=True, capture_output=True)
        log = open(Path(instance) / "server.log", "wb")
        server = subprocess.Popen([python, "kqi_app.py", "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:  # before the web workers have loaded, a connection waits in the socket's backlog
                    if requests.get(f"{base}/healthz", timeout=5).ok:
                        break
                except (requests.ConnectionError, requests.Timeout):
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("kqi server did not start: " + (Path(instance) / "server.log").read_text()[-2000:])
                time.sleep(0.1)
            token = requests.post(f"{base}/api/v1/account/login", json={"username": "admin", "password": "bench-password"},
                                  timeout=10).json()["token"]
            yield base, token, Path(instance)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # never leave a server behind
                server.kill()
                server.wait()
            log.close()


def kqi_sample(base: str, token: str, index: int) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"name": f"bench-{index}", "image": IMAGE, "command": COMMAND, "cpu": 0.1, "memory_gb": 0.0625}
    submitted = datetime.now(UTC)
    job = requests.post(f"{base}/api/v1/training/run", json=body, headers=headers, timeout=30).json()
    deadline = time.monotonic() + 60
    while job["started_at"] is None:
        if job["status"] in ("Error", "Failed", "Killed", "UserCanceled"):
            raise RuntimeError(f"bench job ended as {job['status']}: {job['reason']}")
        if time.monotonic() > deadline:
            raise RuntimeError("bench job did not start within 60 s")
        time.sleep(0.01)
        job = requests.get(f"{base}/api/v1/training/{job['id']}", headers=headers, timeout=30).json()
    started = datetime.fromisoformat(job["started_at"].replace("Z", "+00:00"))
    return (started - submitted).total_seconds()


def bare_start(client: docker.DockerClient, name: str, command: str = COMMAND, cpu: float = 0.1):
    """`docker create` + `start` of the bench image as kqi starts a job's container (the command under
    /bin/sh -c, CPU and memory limits); returns (the container, seconds)."""
    begin = time.perf_counter()
    container = client.containers.create(IMAGE, entrypoint=["/bin/sh", "-c"], command=[command], name=name,
                                         nano_cpus=round(cpu * 1e9), mem_limit=64 * 1024 * 1024,
                                         labels={"kqi.bench": "1"}, detach=True)
    container.start()
    return container, time.perf_counter() - begin


def docker_sample(client: docker.DockerClient, index: int) -> float:
    container, elapsed = bare_start(client, f"bench-bare-{os.getpid()}-{index}")
    container.remove(force=True)
    return elapsed


def run(jobs: int, engine_url: str | None) -> dict:
    with bench_engine(engine_url) as url:
        client = docker.DockerClient(base_url=url)
        with kqi_server(url) as (base, token):
            kqi_sample(base, token, -1)  # warm both paths once; not counted
            docker_sample(client, -1)
            kqi, bare = [], []
            for i in range(jobs):
                bare.append(docker_sample(client, i))
                kqi.append(kqi_sample(base, token, i))
        client.close()
    figures = {
        "jobs": jobs,
        "docker_p50_ms": statistics.median(bare) * 1000, "docker_p95_ms": _percentile(bare, 0.95) * 1000,
        "kqi_p50_ms": statistics.median(kqi) * 1000, "kqi_p95_ms": _percentile(kqi, 0.95) * 1000,
    }
    figures["ratio_p50"] = figures["kqi_p50_ms"] / figures["docker_p50_ms"]
    figures["ratio_p95"] = figures["kqi_p95_ms"] / figures["docker_p95_ms"]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench start-latency", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--engine", help="Docker engine URL (default: the local engine, else a private one)")
    args = parser.parse_args(argv)
    f = run(args.jobs, args.engine)
    print(f"submit -> Running, {f['jobs']} jobs, sequential")
    print(f"{'':24}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'docker create + start':24}{f['docker_p50_ms']:10.1f}{f['docker_p95_ms']:10.1f}")
    print(f"{'kqi submit -> Running':24}{f['kqi_p50_ms']:10.1f}{f['kqi_p95_ms']:10.1f}")
    print(f"{'ratio kqi / docker':24}{f['ratio_p50']:10.2f}{f['ratio_p95']:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
