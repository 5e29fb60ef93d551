"""Load: many concurrent API clients submitting and polling jobs against a running kqi server.

    python -m bench load [--db sqlite|postgresql|both] [--clients 200] [--jobs 25] [--seed 10000] [--pace 8]
                         [--no-nodes]

A real `kqi_app.py serve` process on loopback (its scheduler running) with two private Docker
engines registered as nodes (tests/infra/engines.py, as bench/nodes.py starts them). Each node is
registered over the API, declares 2 GPUs, and is then shrunk in the database to 1 core and 640 MiB
(an engine reports the whole machine; 2 shared cores must not be flooded by containers): at most
10 of the clients' jobs (0.1 core, 64 MiB, `sleep 1` on the busybox test image) run on a node at
once, so placements and releases happen all through the run. Every 4th job asks for a GPU, a whole
one or half of one in turn, so GPU booking (shares included) is exercised too.

The database is first seeded with --seed queued jobs (and the bench waits until the scheduler has
planned them once). They ask for a partition no node has: they are the old queue every tick plans
(its cost is what the seed is for), they never fit, so they block nobody and the engines serve the
clients' jobs (10,000 runnable seeds would keep the nodes busy with the seed alone, and start 10,000
containers on a 2-core machine). Then each client, with its own connection and one of 20 users'
tokens in 4 tenants, runs --jobs rounds: submit a job, list the first page of its tenant's jobs,
poll the job it submitted, ask /healthz (no database: the floor under every request on this
machine, measured in the same run), then think for --pace seconds on average (uniformly between half and
one and a half times it, so the clients drift apart as real ones do; each also starts at a random
moment within the first --pace seconds). --pace 0 is a closed loop: every client as fast as the
server answers, which measures saturation, not latency. --no-nodes registers no node (every job
stays queued: the API and planning cost alone, as before the nodes were added).

Reported: throughput, p50/p99 latency of submit, list, poll and health, the jobs that ran on the nodes and
each node's peak allocation. Checked after: every submission answered 201 and is in the database
(none lost, none twice), and over the WHOLE run no node ever held more than it has: each job part's
hold runs from its placement (the job's last Starting event) to its end (the next finished or Queued
event, or still held when checked), and a sweep over those intervals (sweep()) finds any moment
where a node's summed cpu or memory exceeded its own, or a GPU index was held more than once over
(GpuAllocation rows are deleted at release, so the GPUs come from the parts' gpu_indices). A
requeued job's earlier placement is not seen (its parts are replaced); no node is lost here, so
none is requeued. Bounded: --deadline seconds per database, then the clients stop; each request
times out after 30 s. The server and the engines are stopped whatever happens.

Targets: 0 lost, p99 submit < 1 s, p99 list < 100 ms with 10,000 jobs in the database.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench.procs import server_cpu_s
from bench.start_latency import _percentile, kqi_process

USERS, TENANTS = 20, 4
TARGET_SUBMIT_P99_S, TARGET_LIST_P99_S = 1.0, 0.1
JOB = {"image": "kqi-test/busybox:1", "command": "sleep 1", "cpu": 0.1, "memory_gb": 0.0625}
NODES, NODE_CPU_MILLI, NODE_MEMORY_MIB, NODE_GPUS = 2, 1000, 640, 2
SEED_PARTITION = "load-seed"  # no node has it: the seeded jobs are planned every tick and never placed
WHOLE_GPU = 1000


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
                 "memo": "", "priority": 0, "partition": SEED_PARTITION, "status": JobStatus.QUEUED, "reason": "",
                 "halt_requested": False, "pending_reasons": []} for i in range(count)]
        for start in range(0, count, 1000):
            db.session.execute(insert(Job), rows[start:start + 1000])
        db.session.commit()
        db.engine.dispose()


def register_nodes(base: str, admin_token: str, instance, database_url: str, engines) -> None:
    """The engines as nodes with 2 declared GPUs each, then shrunk to NODE_CPU_MILLI / NODE_MEMORY_MIB:
    registration reads the engine's (the whole machine's) capacity, and only an explicit refresh reads
    it again, so the scheduler plans with the small one for the whole run."""
    from sqlalchemy import update

    from kqi.extensions import db
    from kqi.models import Node

    names = []
    for i, engine in enumerate(engines):
        body = {"name": f"load-n{i}", "url": engine.unix_url, "gpus": NODE_GPUS, "address": engine.address}
        requests.post(f"{base}/api/v1/admin/nodes", json=body, headers={"Authorization": f"Bearer {admin_token}"},
                      timeout=60).raise_for_status()
        names.append(body["name"])
    app = _app(instance, database_url)
    with app.app_context():
        db.session.execute(update(Node).where(Node.name.in_(names))
                           .values(cpu_milli=NODE_CPU_MILLI, memory_mib=NODE_MEMORY_MIB))
        db.session.commit()
        db.engine.dispose()


def job_body(index: int, round_: int) -> dict:
    """Every 4th job of a client asks for a GPU: a whole one, then half of one, in turn."""
    gpu = {0: 1, 4: 0.5}.get((index + round_) % 8, 0)
    return {"name": f"c{index}-{round_}", **JOB, **({"gpu": gpu} if gpu else {})}


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


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.samples: dict[str, list[float]] = {"submit": [], "list": [], "poll": [], "health": []}
        self.submitted: list[int] = []
        self.errors: list[str] = []

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.samples[kind].append(seconds)


REFERENCE_LOOP = 3_000_000


def reference_ms() -> float:
    """A fixed piece of pure Python, best of 3, while the server idles: a VM's speed drifts with its
    neighbours (twice as slow within an hour on the development machine), so two runs compare only
    beside this figure."""
    best = float("inf")
    for _ in range(3):
        begin, total = time.perf_counter(), 0
        for i in range(REFERENCE_LOOP):
            total += i
        best = min(best, time.perf_counter() - begin)
    return best * 1000


def think_times(index: int, jobs: int, pace_s: float) -> list[float]:
    """A client's pause before its first round, then after each round: a fixed pace would march all
    clients in step, 200 submits landing in the same instant every round, which no user base does."""
    rng = random.Random(index)  # the same pauses every run
    return [rng.uniform(0, pace_s)] + [rng.uniform(pace_s / 2, pace_s * 3 / 2) for _ in range(jobs)]


class Connection:
    """One client's keep-alive HTTP connection, on http.client. The clients share the server's
    cores on this machine, so they must cost little: `requests` spent about 1.4 ms of CPU a request
    in the client, as much as the server spends on /healthz; this spends a fraction of that. No
    retry: a lost connection is an error of the run, and a submit is never sent twice."""

    def __init__(self, base: str, token: str, timeout_s: float = 30):
        where = urllib.parse.urlsplit(base)
        self.connection = http.client.HTTPConnection(where.hostname, where.port, timeout=timeout_s)
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        headers, data = self.headers, None
        if body is not None:
            headers, data = {**headers, "Content-Type": "application/json"}, json.dumps(body).encode()
        try:
            self.connection.request(method, path, body=data, headers=headers)
            answer = self.connection.getresponse()
            return answer.status, answer.read()
        except BaseException:
            self.connection.close()  # reopened by the next call
            raise

    def close(self) -> None:
        self.connection.close()


def client(base: str, token: str, index: int, jobs: int, deadline: float, rec: Recorder, pace_s: float) -> None:
    connection = Connection(base, token)
    pauses = think_times(index, jobs, pace_s)
    time.sleep(pauses[0])
    for i in range(jobs):
        if time.monotonic() > deadline:
            rec.errors.append(f"client {index}: deadline reached after {i} jobs")
            return
        begin = time.perf_counter()
        try:
            status, answer = connection.call("POST", "/api/v1/training/run", job_body(index, i))
        except (OSError, http.client.HTTPException) as exc:
            rec.errors.append(f"client {index} submit {i}: {type(exc).__name__}")
            continue
        rec.add("submit", time.perf_counter() - begin)
        if status != 201:
            rec.errors.append(f"client {index} submit {i}: HTTP {status} {answer[:200]!r}")
            continue
        job_id = json.loads(answer)["id"]
        with rec.lock:
            rec.submitted.append(job_id)
        # health: /healthz touches no database, so its latency in the same run is the floor that this
        # machine, the server's HTTP stack and this client's own threads put under every request.
        for kind, path in (("list", "/api/v1/training?page=1&per_page=20"), ("poll", f"/api/v1/training/{job_id}"),
                           ("health", "/healthz")):
            begin = time.perf_counter()
            try:
                status, answer = connection.call("GET", path)
            except (OSError, http.client.HTTPException) as exc:
                rec.errors.append(f"client {index} {kind}: {type(exc).__name__}")
                continue
            rec.add(kind, time.perf_counter() - begin)
            if status != 200:
                rec.errors.append(f"client {index} {kind}: HTTP {status}")
        time.sleep(pauses[i + 1])
    connection.close()


@dataclasses.dataclass(frozen=True)
class Hold:
    """One job part on a node from its placement to its release (end None: still held when checked).
    Times only need to be ordered (datetimes from the database, numbers in the tests)."""

    node: str
    start: Any
    end: Any
    cpu_milli: int
    memory_mib: int
    gpu_milli: dict  # GPU index -> milli held on it


@dataclasses.dataclass
class NodeUse:
    """What a node held over the run: parts placed on it, its peaks, and every moment it was over."""

    parts: int = 0
    peak_cpu_milli: int = 0
    peak_memory_mib: int = 0
    peak_gpu_milli: int = 0  # the most any one GPU index held at once
    over: list = dataclasses.field(default_factory=list)


def hold_span(events: Iterable[tuple[str, Any]]) -> tuple[Any, Any]:
    """(placed at, released at or None) of a job's current placement, from its (status, at) events in
    order: the last Starting, and the first finished or Queued event after it. A job placed but never
    started holds from its placement. (None, None) for a job never placed."""
    from kqi.models import JobStatus

    start = end = None
    for status, at in events:
        if status == JobStatus.STARTING.value:
            start, end = at, None
        elif start is not None and end is None and (status == JobStatus.QUEUED.value or JobStatus(status).finished):
            end = at
    return start, end


def sweep(holds: Iterable[Hold], capacity: dict[str, tuple[int, int, int]]) -> dict[str, NodeUse]:
    """Walk each node's holds in time order and sum what is held after every placement; a node is
    over when its cpu or memory exceeds capacity[node] = (cpu milli, memory MiB, GPUs), or a GPU index
    holds more than a whole GPU or is not one of the node's. At one instant releases come first: a
    job placed when another ends (end == start) does not overlap it."""
    changes: dict[str, list] = defaultdict(list)
    for hold in holds:
        changes[hold.node].append((hold.start, 1, hold))
        if hold.end is not None:
            changes[hold.node].append((hold.end, 0, hold))
    uses = {node: NodeUse() for node in capacity}
    for node, steps in changes.items():
        cpu_cap, memory_cap, gpus = capacity[node]
        use, cpu, memory, gpu = uses[node], 0, 0, Counter()
        for at, placed, hold in sorted(steps, key=lambda step: step[:2]):
            sign = 1 if placed else -1
            cpu += sign * hold.cpu_milli
            memory += sign * hold.memory_mib
            for index, milli in hold.gpu_milli.items():
                gpu[index] += sign * milli
            if not placed:
                continue
            use.parts += 1
            use.peak_cpu_milli, use.peak_memory_mib = max(use.peak_cpu_milli, cpu), max(use.peak_memory_mib, memory)
            use.peak_gpu_milli = max([use.peak_gpu_milli] + [gpu[index] for index in hold.gpu_milli])
            if cpu > cpu_cap:
                use.over.append(f"{at}: cpu {cpu} milli of {cpu_cap}")
            if memory > memory_cap:
                use.over.append(f"{at}: memory {memory} MiB of {memory_cap}")
            for index in hold.gpu_milli:
                if gpu[index] > WHOLE_GPU or not 0 <= index < gpus:
                    use.over.append(f"{at}: GPU {index} holds {gpu[index]} milli ({gpus} GPUs)")
    return uses


def holds_of_run(session) -> tuple[list[Hold], dict[str, tuple[int, int, int]]]:
    """Every job part ever placed (parts stay after their job ends) with its hold interval from the
    job's events, and each node's capacity."""
    from sqlalchemy import select

    from kqi.models import Job, JobPart, Node
    from kqi.models.runs import JobEvent

    events: dict[int, list] = defaultdict(list)
    for job_id, status, at in session.execute(
            select(JobEvent.job_id, JobEvent.status, JobEvent.at).where(JobEvent.job_id.in_(select(JobPart.job_id)))
            .order_by(JobEvent.job_id, JobEvent.id)):
        events[job_id].append((status, at))
    holds = []
    for job_id, node, indices, cpu_milli, memory_mib, gpu_milli, created_at in session.execute(
            select(JobPart.job_id, Node.name, JobPart.gpu_indices, Job.cpu_milli, Job.memory_mib, Job.gpu_milli,
                   Job.created_at)
            .join(Job, Job.id == JobPart.job_id).join(Node, Node.id == JobPart.node_id)):
        start, end = hold_span(events[job_id])
        if start is None:  # a part whose placement is not dated: held from the submit on, the strictest
            start, end = created_at, None
        per_index = gpu_milli // len(indices) if indices else 0  # as the scheduler books them (snapshot.py)
        holds.append(Hold(node, start, end, cpu_milli, memory_mib, {index: per_index for index in indices}))
    capacity = {name: (cpu, memory, gpus) for name, cpu, memory, gpus in
                session.execute(select(Node.name, Node.cpu_milli, Node.memory_mib, Node.gpu_count))}
    return holds, capacity


def check(instance, database_url: str, submitted: list[int]) -> dict:
    """Every accepted submission is in the database once; no node ever held more than it has."""
    from sqlalchemy import func, select

    from kqi.extensions import db
    from kqi.models import Job, JobStatus, Tenant

    app = _app(instance, database_url)
    with app.app_context():
        load_jobs = select(Job.id).join(Tenant).where(Tenant.name.like("load-%"))
        stored = set(db.session.scalars(load_jobs))
        total = db.session.scalar(select(func.count(Job.id)))
        ran = db.session.scalar(select(func.count(Job.id)).where(Job.id.in_(load_jobs), Job.started_at.is_not(None)))
        completed = db.session.scalar(select(func.count(Job.id)).where(Job.id.in_(load_jobs),
                                                                       Job.status == JobStatus.COMPLETED))
        holds, capacity = holds_of_run(db.session)
        db.engine.dispose()
    # Placement to release: what a `sleep 1` costs a node beyond its second (engine start, collection).
    held_s = [(hold.end - hold.start).total_seconds() for hold in holds if hold.end is not None]
    return {"completed": completed, "hold_p50_s": statistics.median(held_s) if held_s else float("nan"),
            "lost": len(set(submitted) - stored), "duplicates": len(submitted) - len(set(submitted)),
            "unexpected": len(stored - set(submitted)), "jobs_in_db": total, "ran_on_nodes": ran,
            "nodes": {node: dataclasses.asdict(use) for node, use in sweep(holds, capacity).items()},
            "capacity": capacity}


def run(kind: str, clients: int, jobs: int, seed_count: int, deadline_s: float, pace_s: float,
        scheduler: bool = True, nodes: bool = True) -> dict:
    """One database's run; `nodes`: with the engines registered (else every job stays queued)."""
    from bench.nodes import _engines

    with contextlib.ExitStack() as stack:  # unwound in reverse: the server, then the engines, then the database
        url = stack.enter_context(database(kind))
        engines = stack.enter_context(_engines(NODES)) if nodes else []
        settings = {"KQI_DATABASE_URL": url} if url else {}
        if not scheduler:
            settings["KQI_SCHEDULER_ENABLED"] = "false"
        base, admin_token, instance = stack.enter_context(kqi_process(settings))
        if seed_count:
            seed(instance, url, seed_count)
        if engines:
            register_nodes(base, admin_token, instance, url, engines)
        if seed_count and scheduler:
            settled(base, admin_token)
        tokens = make_users(base, admin_token)
        reference = reference_ms()
        rec = Recorder()
        load_before, cpu_before, client_cpu_before = os.getloadavg()[0], server_cpu_s(), time.process_time()
        deadline = time.monotonic() + deadline_s
        begin = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            for c in range(clients):
                pool.submit(client, base, tokens[c % len(tokens)], c, jobs, deadline, rec, pace_s)
        elapsed = time.perf_counter() - begin
        load_after, server_cpu = os.getloadavg()[0], server_cpu_s() - cpu_before
        client_cpu = time.process_time() - client_cpu_before
        checked = check(instance, url, rec.submitted)
    figures = {"db": kind, "reference_ms": reference, "clients": clients, "jobs_each": jobs, "pace_s": pace_s, "scheduler": scheduler, "elapsed_s": elapsed,
               "load_avg": (load_before, load_after), "server_cpu_s": server_cpu, "client_cpu_s": client_cpu, "errors": rec.errors,
               "submitted": len(rec.submitted), "submit_per_s": len(rec.submitted) / elapsed, **checked}
    for name, samples in rec.samples.items():
        figures[f"{name}_samples"] = samples
        figures[f"{name}_p50_ms"] = statistics.median(samples) * 1000 if samples else float("nan")
        figures[f"{name}_p99_ms"] = _percentile(samples, 0.99) * 1000 if samples else float("nan")
    figures["ok"] = (not rec.errors and checked["lost"] == 0 and checked["duplicates"] == 0
                     and len(rec.submitted) == clients * jobs
                     and not any(use["over"] for use in checked["nodes"].values())
                     and (checked["ran_on_nodes"] > 0 or not nodes)  # else the sweep had nothing to check
                     and figures["submit_p99_ms"] < TARGET_SUBMIT_P99_S * 1000
                     and figures["list_p99_ms"] < TARGET_LIST_P99_S * 1000)
    return figures


def report(f: dict) -> None:
    print(f"{f['db']}: {f['clients']} clients x {f['jobs_each']} jobs, think time {f['pace_s']:g} s on average "
          f"({f['pace_s'] / 2:g} to {f['pace_s'] * 3 / 2:g} s) between rounds, scheduler {'on' if f['scheduler'] else 'off'}, "
          f"{len(f['nodes'])} nodes, {f['jobs_in_db']} jobs in the database at the end; load average "
          f"{f['load_avg'][0]:.1f} before, {f['load_avg'][1]:.1f} after ({os.cpu_count()} cores)")
    print(f"  machine speed: a reference loop of pure Python took {f['reference_ms']:.0f} ms before the clients started")
    print(f"  {f['submitted']} submitted in {f['elapsed_s']:.1f} s = {f['submit_per_s']:.0f} submits/s; "
          f"lost {f['lost']}, twice {f['duplicates']}, stored but unanswered (client timeout) {f['unexpected']}; "
          f"{f['ran_on_nodes']} ran on the nodes ({f['completed']} completed), each holding its node "
          f"{f['hold_p50_s']:.1f} s from placement to release (median)")
    for node, use in sorted(f["nodes"].items()):
        cpu, memory, gpus = f["capacity"][node]
        print(f"  node {node}: {use['parts']} jobs placed; peak held at once: cpu {use['peak_cpu_milli'] / 1000:g} of "
              f"{cpu / 1000:g}, memory {use['peak_memory_mib']} of {memory} MiB, one GPU {use['peak_gpu_milli'] / 1000:g} "
              f"of 1 ({gpus} GPUs); over capacity {len(use['over'])} times")
        for moment in use["over"][:5]:
            print(f"    over: {moment}")
    requests_made = sum(len(f[f"{name}_samples"]) for name in ("submit", "list", "poll", "health"))
    print(f"  server CPU {f['server_cpu_s']:.1f} s = {1000 * f['server_cpu_s'] / max(requests_made, 1):.1f} ms a request "
          f"(scheduler included), {f['server_cpu_s'] / f['elapsed_s']:.2f} cores on average; the clients "
          f"{1000 * f['client_cpu_s'] / max(requests_made, 1):.1f} ms a request")
    print(f"  {'':8}{'p50 ms':>10}{'p99 ms':>10}")
    for name in ("submit", "list", "poll", "health"):
        print(f"  {name:8}{f[f'{name}_p50_ms']:10.1f}{f[f'{name}_p99_ms']:10.1f}")
    print(f"  list / health: p50 x{f['list_p50_ms'] / f['health_p50_ms']:.1f}, p99 x{f['list_p99_ms'] / f['health_p99_ms']:.1f} "
          f"(health: no database, the floor of this machine and client)")
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
    parser.add_argument("--no-nodes", action="store_true",
                        help="register no node: every job stays queued (no engines are started)")
    args = parser.parse_args(argv)
    status = 0
    for kind in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
        # Without the scheduler nothing is ever placed: no engines to start for it.
        figures = run(kind, args.clients, args.jobs, args.seed, args.deadline, args.pace, not args.no_scheduler,
                      nodes=not (args.no_nodes or args.no_scheduler))
        report(figures)
        status = status or (0 if figures["ok"] else 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
