"""Load: many concurrent API clients submitting and polling jobs against a running kqi server.

    python -m bench load [--db sqlite|postgresql|both] [--clients 200] [--jobs 25] [--seed 10000] [--pace 8]

A real `kqi_app.py serve` process on loopback (its scheduler running; no node is registered, so
jobs stay queued and every tick plans the whole queue). The database is first seeded with --seed
queued jobs (and the bench waits until the scheduler has planned them once); then each client, with
its own connection and one of 20 users' tokens in 4 tenants, runs --jobs rounds: submit a job, list
the first page of its tenant's jobs, poll the job it submitted, then think for --pace seconds on
average (uniformly between half and one and a half times it, so the clients drift apart as real ones
do; each also starts at a random moment within the first --pace seconds). --pace 0 is a closed loop:
every client as fast as the server answers, which measures saturation, not latency. Reported:
throughput, p50/p99 latency of submit, list and poll. Checked after: every submission answered 201
and is in the database (none lost, none twice), and no node holds more than it has (with no node
registered this check has nothing to find: run the engine benches for placements). Bounded:
--deadline seconds per database, then the clients stop; each request times out after 30 s.

Targets: 0 lost, p99 submit < 1 s, p99 list < 100 ms with 10,000 jobs in the database.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.start_latency import _percentile, kqi_process

USERS, TENANTS = 20, 4
TARGET_SUBMIT_P99_S, TARGET_LIST_P99_S = 1.0, 0.1
JOB = {"image": "kqi-test/busybox:1", "command": "true", "cpu": 0.1, "memory_gb": 0.0625}


@contextlib.contextmanager
def database(kind: str):
    """The database URL for the server: its own SQLite file, or a private PostgreSQL cluster."""
    if kind == "sqlite":
        yield ""
        return
    from tests.infra import postgres

    base = tempfile.mkdtemp(prefix="kqi-load-pg-", dir="/tmp")
    server = postgres.start_postgres(base)
    try:
        yield server.url
    finally:
        postgres.stop_postgres(server)
        shutil.rmtree(base, ignore_errors=True)


def _app(instance, database_url: str):
    from kqi import create_app

    return create_app({"instance": str(instance), "database_url": database_url, "scheduler_enabled": False})


def seed(instance, database_url: str, count: int) -> None:
    """Queued jobs written straight into the database (an old queue), in one transaction."""
    from sqlalchemy import insert, select

    from kqi.extensions import db
    from kqi.models import Job, JobStatus, Tenant, User

    app = _app(instance, database_url)
    with app.app_context():
        tenant_id = db.session.scalar(select(Tenant.id).order_by(Tenant.id))
        user_id = db.session.scalar(select(User.id).order_by(User.id))
        rows = [{"tenant_id": tenant_id, "user_id": user_id, "kind": "training", "name": f"seed-{i}", "image": JOB["image"],
                 "command": "true", "cpu_milli": 100, "memory_mib": 64, "gpu_milli": 0, "nodes": 1, "env": {},
                 "memo": "", "priority": 0, "partition": "", "status": JobStatus.QUEUED, "reason": "",
                 "halt_requested": False, "pending_reasons": []} for i in range(count)]
        for start in range(0, count, 1000):
            db.session.execute(insert(Job), rows[start:start + 1000])
        db.session.commit()
        db.engine.dispose()


def settled(base: str, admin_token: str, timeout_s: float = 120) -> None:
    """Wait until the scheduler has planned the seeded queue once (an old queue is a planned one)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        newest = requests.get(f"{base}/api/v1/training?per_page=1", headers={"Authorization": f"Bearer {admin_token}"},
                              timeout=60).json()["items"]
        if newest and newest[0]["queue_position"] is not None:
            return
        time.sleep(0.5)
    raise RuntimeError("the scheduler did not plan the seeded queue in time")


def make_users(base: str, admin_token: str) -> list[str]:
    """USERS users spread over TENANTS tenants; returns one token each."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    for t in range(TENANTS):
        requests.post(f"{base}/api/v1/admin/tenants", json={"name": f"load-{t}"}, headers=headers, timeout=30).raise_for_status()
    tokens = []
    for u in range(USERS):
        body = {"username": f"load{u}", "password": "load-password",
                "tenants": [{"tenant": f"load-{u % TENANTS}", "role": "user"}]}
        requests.post(f"{base}/api/v1/admin/users", json=body, headers=headers, timeout=30).raise_for_status()
        answer = requests.post(f"{base}/api/v1/account/login", json={"username": f"load{u}", "password": "load-password"},
                               timeout=30)
        answer.raise_for_status()
        tokens.append(answer.json()["token"])
    return tokens


def server_cpu_s() -> float:
    """CPU seconds used so far by the `kqi_app.py serve` child of this process: its cost per request,
    which a busy machine disturbs far less than it does latencies."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == os.getpid() and b"serve" in (stat.parent / "cmdline").read_bytes():
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
    return total


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.samples: dict[str, list[float]] = {"submit": [], "list": [], "poll": []}
        self.submitted: list[int] = []
        self.errors: list[str] = []

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.samples[kind].append(seconds)


def think_times(index: int, jobs: int, pace_s: float) -> list[float]:
    """A client's pause before its first round, then after each round: a fixed pace would march all
    clients in step, 200 submits landing in the same instant every round, which no user base does."""
    rng = random.Random(index)  # the same pauses every run
    return [rng.uniform(0, pace_s)] + [rng.uniform(pace_s / 2, pace_s * 3 / 2) for _ in range(jobs)]


def client(base: str, token: str, index: int, jobs: int, deadline: float, rec: Recorder, pace_s: float) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    pauses = think_times(index, jobs, pace_s)
    time.sleep(pauses[0])
    for i in range(jobs):
        if time.monotonic() > deadline:
            rec.errors.append(f"client {index}: deadline reached after {i} jobs")
            return
        begin = time.perf_counter()
        try:
            response = session.post(f"{base}/api/v1/training/run", json={"name": f"c{index}-{i}", **JOB}, timeout=30)
        except requests.RequestException as exc:
            rec.errors.append(f"client {index} submit {i}: {type(exc).__name__}")
            continue
        rec.add("submit", time.perf_counter() - begin)
        if response.status_code != 201:
            rec.errors.append(f"client {index} submit {i}: HTTP {response.status_code} {response.text[:200]}")
            continue
        job_id = response.json()["id"]
        with rec.lock:
            rec.submitted.append(job_id)
        for kind, url in (("list", f"{base}/api/v1/training?page=1&per_page=20"), ("poll", f"{base}/api/v1/training/{job_id}")):
            begin = time.perf_counter()
            try:
                answer = session.get(url, timeout=30)
            except requests.RequestException as exc:
                rec.errors.append(f"client {index} {kind}: {type(exc).__name__}")
                continue
            rec.add(kind, time.perf_counter() - begin)
            if answer.status_code != 200:
                rec.errors.append(f"client {index} {kind}: HTTP {answer.status_code}")
        time.sleep(pauses[i + 1])
    session.close()


def check(instance, database_url: str, submitted: list[int]) -> dict:
    """Every accepted submission is in the database once; no node holds more than it has."""
    from sqlalchemy import func, select

    from kqi.extensions import db
    from kqi.models import GpuAllocation, Job, JobPart, Node, Tenant

    app = _app(instance, database_url)
    with app.app_context():
        stored = set(db.session.scalars(select(Job.id).join(Tenant).where(Tenant.name.like("load-%"))))
        total = db.session.scalar(select(func.count(Job.id)))
        over = []
        for node in db.session.scalars(select(Node)):
            cpu, mem = db.session.execute(
                select(func.coalesce(func.sum(Job.cpu_milli), 0), func.coalesce(func.sum(Job.memory_mib), 0))
                .join(JobPart, JobPart.job_id == Job.id).where(JobPart.node_id == node.id, Job.status.in_(("Starting", "Running")))
            ).one()
            if cpu > node.cpu_milli or mem > node.memory_mib:
                over.append(node.name)
        double_gpus = db.session.execute(
            select(GpuAllocation.node_id, GpuAllocation.gpu_index).group_by(GpuAllocation.node_id, GpuAllocation.gpu_index)
            .having(func.sum(GpuAllocation.milli) > 1000)).all()
        db.engine.dispose()
    return {"lost": len(set(submitted) - stored), "duplicates": len(submitted) - len(set(submitted)),
            "unexpected": len(stored - set(submitted)), "jobs_in_db": total, "nodes_over": over,
            "gpus_over": len(double_gpus)}


def run(kind: str, clients: int, jobs: int, seed_count: int, deadline_s: float, pace_s: float,
        scheduler: bool = True) -> dict:
    with database(kind) as url:
        settings = {"KQI_DATABASE_URL": url} if url else {}
        if not scheduler:
            settings["KQI_SCHEDULER_ENABLED"] = "false"
        with kqi_process(settings) as (base, admin_token, instance):
            if seed_count:
                seed(instance, url, seed_count)
                if scheduler:
                    settled(base, admin_token)
            tokens = make_users(base, admin_token)
            rec = Recorder()
            load_before, cpu_before = os.getloadavg()[0], server_cpu_s()
            deadline = time.monotonic() + deadline_s
            begin = time.perf_counter()
            with ThreadPoolExecutor(max_workers=clients) as pool:
                for c in range(clients):
                    pool.submit(client, base, tokens[c % len(tokens)], c, jobs, deadline, rec, pace_s)
            elapsed = time.perf_counter() - begin
            load_after, server_cpu = os.getloadavg()[0], server_cpu_s() - cpu_before
            checked = check(instance, url, rec.submitted)
    figures = {"db": kind, "clients": clients, "jobs_each": jobs, "pace_s": pace_s, "scheduler": scheduler, "elapsed_s": elapsed,
               "load_avg": (load_before, load_after), "server_cpu_s": server_cpu, "errors": rec.errors,
               "submitted": len(rec.submitted), "submit_per_s": len(rec.submitted) / elapsed, **checked}
    for name, samples in rec.samples.items():
        figures[f"{name}_samples"] = samples
        figures[f"{name}_p50_ms"] = statistics.median(samples) * 1000 if samples else float("nan")
        figures[f"{name}_p99_ms"] = _percentile(samples, 0.99) * 1000 if samples else float("nan")
    figures["ok"] = (not rec.errors and checked["lost"] == 0 and checked["duplicates"] == 0
                     and len(rec.submitted) == clients * jobs and not checked["nodes_over"] and not checked["gpus_over"]
                     and figures["submit_p99_ms"] < TARGET_SUBMIT_P99_S * 1000
                     and figures["list_p99_ms"] < TARGET_LIST_P99_S * 1000)
    return figures


def report(f: dict) -> None:
    print(f"{f['db']}: {f['clients']} clients x {f['jobs_each']} jobs, think time {f['pace_s']:g} s on average "
          f"({f['pace_s'] / 2:g} to {f['pace_s'] * 3 / 2:g} s) between rounds, scheduler {'on' if f['scheduler'] else 'off'}, "
          f"{f['jobs_in_db']} jobs in the database at the end; load average {f['load_avg'][0]:.1f} before, "
          f"{f['load_avg'][1]:.1f} after ({os.cpu_count()} cores)")
    print(f"  {f['submitted']} submitted in {f['elapsed_s']:.1f} s = {f['submit_per_s']:.0f} submits/s; "
          f"lost {f['lost']}, twice {f['duplicates']}, stored but unanswered (client timeout) {f['unexpected']}, "
          f"nodes over capacity {len(f['nodes_over'])}, GPUs over {f['gpus_over']}")
    requests_made = sum(len(f[f"{name}_samples"]) for name in ("submit", "list", "poll"))
    print(f"  server CPU {f['server_cpu_s']:.1f} s = {1000 * f['server_cpu_s'] / max(requests_made, 1):.1f} ms a request "
          f"(scheduler included), {f['server_cpu_s'] / f['elapsed_s']:.2f} cores on average")
    print(f"  {'':8}{'p50 ms':>10}{'p99 ms':>10}")
    for name in ("submit", "list", "poll"):
        print(f"  {name:8}{f[f'{name}_p50_ms']:10.1f}{f[f'{name}_p99_ms']:10.1f}")
    for error in f["errors"][:10]:
        print(f"  error: {error}")
    verdict = "met" if f["ok"] else "MISSED"
    print(f"  targets (0 lost, p99 submit < {TARGET_SUBMIT_P99_S * 1000:.0f} ms, p99 list < {TARGET_LIST_P99_S * 1000:.0f} ms): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench load", description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=25, help="jobs each client submits")
    parser.add_argument("--seed", type=int, default=10000, help="queued jobs in the database before the clients start")
    parser.add_argument("--deadline", type=float, default=270, help="seconds per database before the clients give up")
    parser.add_argument("--no-scheduler", action="store_true",
                        help="serve without the scheduler loop (the API's own cost, without planning the queue)")
    parser.add_argument("--pace", type=float, default=8.0,
                        help="seconds each client thinks between rounds, on average (0: as fast as it can)")
    args = parser.parse_args(argv)
    status = 0
    for kind in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
        figures = run(kind, args.clients, args.jobs, args.seed, args.deadline, args.pace, not args.no_scheduler)
        report(figures)
        status = status or (0 if figures["ok"] else 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
