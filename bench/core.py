"""Execution core: six scenarios through a real server on two real engines, each against bare
`docker create` + `start` of the same tiny image on the same engine, measured in the same run.

    python -m bench core [--only N[,M]] [--json] [--reps 5] [--log-gb 5] [--dataset-mb 300]
                         [--parallel 4] [--rss-abort-mb 1024]

A `kqi_app.py serve` process (SQLite, its scheduler and web workers, settings as configured) with
two private engines (tests/infra/engines.py, as the other benches start them) registered over the
API as node A (partition core-a) and node B (partition core-b); every job names its node's
partition. A job's submit -> Running is read from its own record: started_at (the engine's start
returned and the job was marked Running) minus created_at (the submit), both in milliseconds. A
bare sample is create + start of a container with the same image, command and limits from this
process on the same engine; scenarios 1 to 4 take one per repetition beside their kqi samples.

    1  a job submitted right after the halt of a job on the same node whose process ignores SIGTERM
       (sh -c 'trap "" TERM; sleep 1000', so the halt takes stop_grace_s): p50 <= 1.3x bare
    2  a job on node B while node A receives a dataset (a --dataset-mb data item, the first job with
       it on A): only jobs submitted before A's job started count; p50 <= 1.5x bare
    3  a later job with that dataset on node A: p50 <= 1.5x bare
    4  a job on node B while node A's dockerd is stopped (SIGSTOP right before the submit, SIGCONT
       once the job runs, always; A then has to be Ready again), a job running on A: p50 <= 1.5x
    5  40 tiny jobs, 20 a node, from the first submit until the last is Running, against a script
       creating + starting the same 40 containers with --parallel threads per engine (the server's
       node_parallel_ops where it has that setting): <= 1.5x
    6  a job printing --log-gb GiB: growth of the server's resident memory (VmRSS summed over the
       serve process and its web workers, sampled every 0.1 s): <= 50 MB. Past --rss-abort-mb the
       bench kills the server to protect the shared machine, and the scenario is reported missed.

Prints a table (or --json): scenario, kqi seconds (p50 and n), bare seconds, ratio, target,
met/missed. Exits non-zero only when a scenario crashed (a missed target is a figure, not a failure).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import docker
import requests

from bench.procs import kill_server, server_rss_mib
from bench.start_latency import COMMAND, IMAGE, ROOT, bare_start, kqi_process

if TYPE_CHECKING:
    from kqi.config import Settings

PARTITIONS = {"a": "core-a", "b": "core-b"}
ENDED = {"Completed", "Failed", "Killed", "UserCanceled", "Error"}
POLL_S = 0.1  # figures come from the jobs' own timestamps: polling faster only takes CPU from the server
START_TIMEOUT_S = 180
IGNORES_TERM = "trap '' TERM; sleep 1000"
ENDS_ON_TERM = "trap 'exit 0' TERM; sleep 1000 & wait"
BURST_JOBS, BURST_COMMAND, BURST_CPU = 40, "sleep 10", 0.05  # 20 a node: 1 core of each node's 2
LOG_BLOCK_MIB = 64


@dataclasses.dataclass
class Row:
    """One scenario's figures: kqi and bare seconds (ratio of their medians against `target`), or, for
    unit "MB", `value` megabytes against `target`."""

    number: int
    name: str
    target: float
    unit: str = "x"
    kqi_s: list[float] = dataclasses.field(default_factory=list)
    bare_s: list[float] = dataclasses.field(default_factory=list)
    value: float | None = None
    note: str = ""
    error: str = ""

    @property
    def figure(self) -> float | None:
        if self.unit == "MB":
            return self.value
        return ratio(self.kqi_s, self.bare_s)

    @property
    def verdict(self) -> str:
        return "error" if self.error else verdict(self.figure, self.target)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "figure": self.figure, "verdict": self.verdict,
                "kqi_p50_s": median(self.kqi_s), "bare_p50_s": median(self.bare_s)}


def median(samples: list[float]) -> float | None:
    return statistics.median(samples) if samples else None


def ratio(kqi_s: list[float], bare_s: list[float]) -> float | None:
    """kqi's median over bare's; None without samples of both."""
    if not kqi_s or not bare_s or statistics.median(bare_s) <= 0:
        return None
    return statistics.median(kqi_s) / statistics.median(bare_s)


def verdict(figure: float | None, target: float) -> str:
    if figure is None:
        return "no sample"
    return "met" if figure <= target else "missed"


def table(rows: Iterable[Row]) -> list[str]:
    """The report's lines: scenario, kqi seconds (p50, n), bare seconds, ratio, target, verdict."""
    lines = [f"{'scenario':58} {'kqi s (p50, n)':>16} {'bare s':>8} {'ratio':>7} {'target':>9}  verdict"]
    for row in rows:
        name = f"{row.number} {row.name}"[:58]
        if row.unit == "MB":
            kqi = "-" if row.value is None else f"+{row.value:.0f} MB"
            bare, figure, target = "-", "-", f"<= {row.target:g} MB"
        else:
            p50 = median(row.kqi_s)
            kqi = "-" if p50 is None else f"{p50:.3f} ({len(row.kqi_s)})"
            bare = "-" if not row.bare_s else f"{median(row.bare_s):.3f}"
            figure = "-" if row.figure is None else f"{row.figure:.2f}"
            target = f"<= {row.target:g}x"
        lines.append(f"{name:58} {kqi:>16} {bare:>8} {figure:>7} {target:>9}  {row.verdict}")
        for extra in (row.note, row.error and f"error: {row.error}"):
            if extra:
                lines.append(f"    {extra}")
    return lines


def moment(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def start_delay(job: dict) -> float:
    """Submit -> Running from the job's own record (milliseconds in the API)."""
    return (moment(job["started_at"]) - moment(job["created_at"])).total_seconds()


def started_before(jobs: Iterable[dict], deadline_iso: str) -> list[float]:
    """The start delays of the jobs submitted before `deadline_iso` (scenario 2: while node A was still
    receiving, i.e. before its job started)."""
    deadline = moment(deadline_iso)
    return [start_delay(job) for job in jobs if moment(job["created_at"]) < deadline]


def log_command(mib: int) -> str:
    """A shell command printing exactly `mib` MiB in 8 KiB lines, fast: busybox's head and yes manage
    about 100 MB/s, so one 64 MiB block is built in the container and cat'ed (GB/s). Long lines keep
    the engine's JSON log near the size printed (a line of 'y' would be a 60-byte record)."""
    blocks, rest = divmod(mib, LOG_BLOCK_MIB)
    return ("s=$(head -c 8191 /dev/zero | tr '\\0' y); yes \"$s\" | head -c 1048576 > /tmp/m; "
            f"for i in $(seq {LOG_BLOCK_MIB}); do cat /tmp/m; done > /tmp/b; "
            f"for i in $(seq {blocks}); do cat /tmp/b; done; for i in $(seq {rest}); do cat /tmp/m; done")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Api:
    """The admin's keep-alive session with the server."""

    def __init__(self, base: str, token: str):
        self.base = base
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs) -> Any:
        answer = self.http.request(method, self.base + path, timeout=kwargs.pop("timeout", 60), **kwargs)
        if answer.status_code >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {answer.status_code} {answer.text[:300]}")
        return answer.json() if answer.content else None

    def submit(self, name: str, node: str, command: str = COMMAND, **fields) -> int:
        body = {"name": name, "image": IMAGE, "command": command, "cpu": 0.1, "memory_gb": 0.0625,
                "partition": PARTITIONS[node], **fields}
        return self.call("POST", "/api/v1/training/run", json=body)["id"]

    def job(self, job_id: int) -> dict:
        return self.call("GET", f"/api/v1/training/{job_id}")

    def wait(self, job_id: int, done: Callable[[dict], bool], timeout: float, interval: float = POLL_S) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if done(job):
                return job
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} ({job['name']}) still {job['status']} after {timeout:.0f} s")
            time.sleep(interval)

    def started(self, job_id: int, timeout: float = START_TIMEOUT_S) -> dict:
        job = self.wait(job_id, lambda j: j["started_at"] is not None or j["status"] in ENDED, timeout)
        if job["started_at"] is None:
            raise RuntimeError(f"job {job_id} ({job['name']}) ended {job['status']} without starting: {job['reason']}")
        return job

    def ended(self, job_ids: Iterable[int], timeout: float) -> None:
        for job_id in job_ids:
            self.wait(job_id, lambda j: j["status"] in ENDED, timeout, interval=0.2)

    def node_state(self, name: str) -> str:
        return next(n["state"] for n in self.call("GET", "/api/v1/admin/nodes")["items"] if n["name"] == name)


@dataclasses.dataclass
class Site:
    """The server, its two nodes and what the scenarios share (the dataset, and whether node A has
    received it yet)."""

    api: Api
    engines: dict[str, Any]  # "a", "b" -> tests.infra.engines.Engine
    clients: dict[str, docker.DockerClient]
    args: argparse.Namespace
    stop_grace_s: float
    dataset_id: int | None = None
    dataset_on_a: bool = False
    names: Iterator[int] = dataclasses.field(default_factory=itertools.count)

    def name(self, prefix: str) -> str:
        return f"{prefix}-{next(self.names)}"

    def bare(self, node: str) -> float:
        container, seconds = bare_start(self.clients[node], f"core-bare-{os.getpid()}-{next(self.names)}")
        container.remove(force=True)
        return seconds

    def measure(self, node: str, prefix: str, **fields) -> tuple[int, float]:
        """Submit a job on `node` and wait until it runs: (its id, submit -> Running in seconds)."""
        job_id = self.api.submit(self.name(prefix), node, **fields)
        return job_id, start_delay(self.api.started(job_id))

    def ended(self, job_ids: Iterable[int]) -> None:
        self.api.ended(job_ids, timeout=START_TIMEOUT_S + self.stop_grace_s)

    def dataset(self) -> int:
        """A flat dataset of one data item holding --dataset-mb MiB of random bytes, uploaded once."""
        if self.dataset_id is None:
            size = self.args.dataset_mb * 2**20
            began = time.perf_counter()
            item = self.api.call("POST", "/api/v1/data", data={"name": "core-dataset"},
                                 files={"files": ("README", b"bench core: one large random file\n")})
            self.api.call("PUT", f"/api/v1/data/{item['id']}/files", params={"name": "random.bin"}, data=RandomBody(size),
                          headers={"Content-Type": "application/octet-stream"}, timeout=600)
            self.dataset_id = self.api.call("POST", "/api/v1/datasets", json={"name": "core-dataset", "flat": True,
                                                                              "data_ids": [item["id"]]})["id"]
            say(f"  uploaded {self.args.dataset_mb} MiB in {time.perf_counter() - began:.1f} s")
        return self.dataset_id

    def wait_ready(self, node: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while (state := self.api.node_state(PARTITIONS[node])) != "Ready":
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {PARTITIONS[node]} still {state} after {timeout:.0f} s")
            time.sleep(0.2)


class RandomBody:
    """A streamed upload body of `size` random bytes (requests sends its length, then reads it)."""

    def __init__(self, size: int):
        self.left = size

    def __len__(self) -> int:
        return self.left

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return os.urandom(size)


def after_halt(site: Site) -> Row:
    row = Row(1, "right after a halt on node A (its job ignores SIGTERM)", 1.3,
              note=f"stop_grace_s {site.stop_grace_s:g}: the halted job ends only after it")
    for i in range(site.args.reps):
        row.bare_s.append(site.bare("a"))
        held = site.api.submit(site.name("s1-held"), "a", IGNORES_TERM)
        site.api.started(held)
        site.api.call("POST", f"/api/v1/training/{held}/halt")
        job_id, seconds = site.measure("a", "s1-next")
        row.kqi_s.append(seconds)
        say(f"  1: rep {i + 1}: {seconds:.3f} s")
        site.ended([held, job_id])
    return row


def while_receiving(site: Site) -> Row:
    row = Row(2, f"on node B while node A receives {site.args.dataset_mb} MiB", 1.5)
    row.bare_s = [site.bare("b") for _ in range(site.args.reps)]
    dataset = site.dataset()
    first = site.api.submit(site.name("s2-first"), "a", dataset_id=dataset)
    site.api.wait(first, lambda j: j["status"] != "Queued", START_TIMEOUT_S, interval=0.02)  # placed: A receives
    beside, receiving = [], True
    while receiving and len(beside) < site.args.reps:
        job_id = site.api.submit(site.name("s2-beside"), "b")
        beside.append(site.api.started(job_id))
        receiving = site.api.job(first)["status"] == "Starting"
    first_job = site.api.started(first)
    site.dataset_on_a = True
    row.kqi_s = started_before(beside, first_job["started_at"])
    received_s = start_delay(first_job)
    row.note = (f"node A's job took {received_s:.1f} s from submit to Running; {len(beside)} jobs on B were "
                f"submitted while it was Starting, {len(row.kqi_s)} before it started")
    say(f"  2: {row.note}")
    site.ended([first, *(job["id"] for job in beside)])
    return row


def second_with_dataset(site: Site) -> Row:
    row = Row(3, f"a later job with that {site.args.dataset_mb} MiB dataset on node A", 1.5)
    dataset = site.dataset()
    if not site.dataset_on_a:  # run alone (--only 3): node A receives it once first, untimed
        first = site.api.submit(site.name("s3-first"), "a", dataset_id=dataset)
        site.api.started(first)
        site.ended([first])
        site.dataset_on_a = True
    for i in range(site.args.reps):
        row.bare_s.append(site.bare("a"))
        job_id, seconds = site.measure("a", "s3-again", dataset_id=dataset)
        row.kqi_s.append(seconds)
        say(f"  3: rep {i + 1}: {seconds:.3f} s")
        site.ended([job_id])
    return row


def beside_frozen(site: Site) -> Row:
    row = Row(4, "on node B while node A's dockerd is stopped (SIGSTOP)", 1.5)
    busy = site.api.submit(site.name("s4-busy"), "a", ENDS_ON_TERM)
    site.api.started(busy)
    dockerd = site.engines["a"].pid
    for i in range(site.args.reps):
        row.bare_s.append(site.bare("b"))
        site.wait_ready("a")
        os.kill(dockerd, signal.SIGSTOP)
        try:
            job_id, seconds = site.measure("b", "s4-beside")
        finally:
            os.kill(dockerd, signal.SIGCONT)
        row.kqi_s.append(seconds)
        say(f"  4: rep {i + 1}: {seconds:.3f} s")
        site.ended([job_id])
    site.wait_ready("a")
    if site.api.job(busy)["status"] not in ENDED:  # node A may have been lost meanwhile (a slow rep)
        site.api.call("POST", f"/api/v1/training/{busy}/halt")
    site.ended([busy])
    return row


def _bare_burst(site: Site, parallel: int) -> float:
    """Seconds for a script to create + start BURST_JOBS containers, half on each engine, with
    `parallel` threads per engine; the containers are removed afterwards, untimed."""
    pools = {node: ThreadPoolExecutor(max_workers=parallel) for node in site.clients}
    try:
        began = time.perf_counter()
        futures = []
        for i in range(BURST_JOBS):
            node = "ab"[i % 2]
            name = f"core-burst-{os.getpid()}-{next(site.names)}"
            futures.append((node, pools[node].submit(bare_start, site.clients[node], name, BURST_COMMAND, BURST_CPU)))
        started = [(node, future.result()[0]) for node, future in futures]
        took = time.perf_counter() - began
        for future in [pools[node].submit(container.remove, force=True) for node, container in started]:
            future.result()
        return took
    finally:
        for pool in pools.values():
            pool.shutdown()


def burst(site: Site) -> Row:
    parallel = site.args.parallel
    row = Row(5, f"{BURST_JOBS} tiny jobs over 2 nodes: first submit to all Running", 1.5,
              note=f"baseline: a script, {parallel} threads per engine")
    row.bare_s = [_bare_burst(site, parallel)]
    began = time.perf_counter()
    ids = {site.api.submit(site.name("s5-burst"), "ab"[i % 2], BURST_COMMAND, cpu=BURST_CPU) for i in range(BURST_JOBS)}
    submitted_s = time.perf_counter() - began
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        jobs = [job for job in site.api.call("GET", "/api/v1/training", params={"per_page": 100})["items"] if job["id"] in ids]
        failed = [job for job in jobs if job["started_at"] is None and job["status"] in ENDED]
        if failed:
            raise RuntimeError(f"job {failed[0]['id']} ended {failed[0]['status']} without starting: {failed[0]['reason']}")
        if len(jobs) == len(ids) and all(job["started_at"] for job in jobs):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sum(1 for job in jobs if job['started_at'])} of {len(ids)} started after "
                               f"{START_TIMEOUT_S} s")
        time.sleep(0.2)
    first = min(moment(job["created_at"]) for job in jobs)
    row.kqi_s = [(max(moment(job["started_at"]) for job in jobs) - first).total_seconds()]
    row.note += f"; the {BURST_JOBS} submits took {submitted_s:.2f} s"
    say(f"  5: kqi {row.kqi_s[0]:.2f} s, script {row.bare_s[0]:.2f} s")
    site.ended(ids)
    return row


class RssWatch(threading.Thread):
    """Samples the server's resident memory every 0.1 s, keeping the peak; past `abort_mib` over
    `before` it kills the server, so that a server holding a whole log in memory cannot take a shared
    machine down with it."""

    def __init__(self, before: float, abort_mib: float):
        super().__init__(daemon=True)
        self.before, self.abort_mib, self.peak = before, abort_mib, before
        self.halt, self.aborted = threading.Event(), threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak = max(self.peak, server_rss_mib())
            if self.peak - self.before > self.abort_mib:
                kill_server()
                self.aborted.set()
                return
            self.halt.wait(0.1)


def _raise_log_limit(api: Api, gib: float) -> str:
    """Where the server caps stored logs (a max_log_gb site setting), let it keep the whole log."""
    current = api.call("GET", "/api/v1/admin/settings")
    if "max_log_gb" not in current:
        return "no max_log_gb site setting"
    wanted = max(current["max_log_gb"], math.ceil(gib) + 1)
    api.call("PUT", "/api/v1/admin/settings", json={"max_log_gb": wanted})
    return f"max_log_gb {wanted:g}"


def big_log(site: Site) -> Row:
    gib = site.args.log_gb
    row = Row(6, f"a job printing {gib:g} GiB: server memory growth", 50, unit="MB")
    limit = _raise_log_limit(site.api, gib)
    samples = []
    for _ in range(5):
        samples.append(server_rss_mib())
        time.sleep(0.2)
    watch = RssWatch(statistics.median(samples), site.args.rss_abort_mb)
    watch.start()
    began = time.monotonic()
    job = None
    try:
        job_id = site.api.submit(site.name("s6-log"), "a", log_command(round(gib * 1024)), cpu=1, memory_gb=0.25)
        deadline = began + START_TIMEOUT_S + 60 * gib
        while not watch.aborted.is_set() and time.monotonic() < deadline:
            try:
                job = site.api.job(job_id)
            except (requests.ConnectionError, RuntimeError):
                if watch.aborted.wait(1):
                    break
                raise
            if job["status"] in ENDED:
                break
            time.sleep(0.5)
        if not watch.aborted.is_set():
            watch.halt.wait(2)  # what the server frees late does not lower the peak; what it grows late counts
    finally:
        watch.halt.set()
        watch.join()
    row.value = watch.peak - watch.before
    took = time.monotonic() - began
    if watch.aborted.is_set():
        row.note = (f"the server grew past {site.args.rss_abort_mb:g} MB after {took:.0f} s and was killed "
                    f"(to protect the machine); {limit}")
    elif job is None or job["status"] not in ENDED:
        raise RuntimeError(f"the job printing {gib:g} GiB had not ended after {took:.0f} s")
    else:
        row.note = (f"{watch.before:.0f} MB before, peak {watch.peak:.0f} MB; the job ended {job['status']} "
                    f"{took:.0f} s after its submit; {limit}")
    say(f"  6: {row.note}")
    return row


SCENARIOS: dict[int, Callable[[Site], Row]] = {1: after_halt, 2: while_receiving, 3: second_with_dataset,
                                               4: beside_frozen, 5: burst, 6: big_log}


def server_settings(parallel: int) -> tuple[dict[str, str], Settings]:
    """The KQI_* settings to start the server with (node_parallel_ops only where the server has that
    setting), and the server's whole configuration under them."""
    from kqi import config

    env = {"KQI_NODE_PARALLEL_OPS": str(parallel)} if "node_parallel_ops" in config.DEFAULTS else {}
    return env, config.load(environ=env)


def commit() -> str:
    found = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.nodes import _engines

    env, configured = server_settings(args.parallel)
    figures: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit(), "cpus": os.cpu_count(),
        "load_avg_before": os.getloadavg()[0], "server_settings": env,
        "stop_grace_s": configured.stop_grace_s, "node_parallel_ops": getattr(configured, "node_parallel_ops", None),
        "node_cache_gb": getattr(configured, "node_cache_gb", None),
        "reps": args.reps, "rows": []}
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:  # unwound in reverse: the server, then the engines
        say("starting 2 engines and a server")
        engines = dict(zip("ab", stack.enter_context(_engines(2)), strict=True))
        base, token, _instance = stack.enter_context(kqi_process(env))
        api = Api(base, token)
        clients = {node: stack.enter_context(contextlib.closing(docker.DockerClient(base_url=engine.unix_url)))
                   for node, engine in engines.items()}
        for node, engine in engines.items():
            api.call("POST", "/api/v1/admin/nodes", json={"name": PARTITIONS[node], "url": engine.unix_url,
                                                          "partition": PARTITIONS[node], "address": engine.address})
        site = Site(api, engines, clients, args, configured.stop_grace_s)
        warm = [site.measure(node, "warm")[0] for node in engines]  # first containers and requests: not counted
        for node in engines:
            site.bare(node)
        site.ended(warm)
        for number in sorted(args.only):
            say(f"scenario {number}")
            try:
                rows.append(SCENARIOS[number](site))
            except Exception as exc:  # reported, and the exit status says so; the next scenario still runs
                rows.append(Row(number, SCENARIOS[number].__name__, 0, error=f"{type(exc).__name__}: {exc}"))
                say(f"  {number}: {rows[-1].error}")
    figures["load_avg_after"] = os.getloadavg()[0]
    figures["rows"] = rows
    return figures


def report(figures: dict[str, Any]) -> None:
    print(f"bench core at {figures['commit']}, {figures['date']}: {figures['cpus']} cores, load average "
          f"{figures['load_avg_before']:.1f} before, {figures['load_avg_after']:.1f} after; stop_grace_s "
          f"{figures['stop_grace_s']:g}, node_parallel_ops {figures['node_parallel_ops'] or 'not a setting here'}, "
          f"node_cache_gb {figures['node_cache_gb'] or 'not a setting here'}; "
          f"{figures['reps']} repetitions")
    for line in table(figures["rows"]):
        print(line)


def scenario_numbers(text: str) -> set[int]:
    try:
        numbers = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected scenario numbers like 1,3, not {text!r}") from None
    if not numbers or not numbers <= set(SCENARIOS):
        raise argparse.ArgumentTypeError(f"scenarios are 1 to {len(SCENARIOS)}, not {text!r}")
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=scenario_numbers, default=set(SCENARIOS), help="scenarios to run, e.g. 1,3")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of scenarios 1 to 4")
    parser.add_argument("--log-gb", type=float, default=5.0, help="GiB the job of scenario 6 prints")
    parser.add_argument("--dataset-mb", type=int, default=300, help="MiB of the dataset of scenarios 2 and 3")
    parser.add_argument("--parallel", type=int, default=4,
                        help="threads per engine of scenario 5's script (and the server's node_parallel_ops)")
    parser.add_argument("--rss-abort-mb", type=float, default=1024,
                        help="scenario 6 kills the server once it has grown this much")
    args = parser.parse_args(argv)
    figures = run(args)
    if args.json:
        print(json.dumps({**figures, "rows": [row.as_dict() for row in figures["rows"]]}, indent=1))
    else:
        report(figures)
    return 1 if any(row.error for row in figures["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
