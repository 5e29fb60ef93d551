"""Long-running service containers: JupyterLab notebooks and TensorBoard.

A service is a job of its own kind (`notebook`, `tensorboard`), queued and placed by the scheduler
like any job, whose container serves HTTP on a port the engine publishes on its node (a free host
port it picks; kqi reads it back after the start). What both kinds share lives here:

- where they may run: only on nodes whose flag allows the kind (`Node.allow_notebooks`,
  `allow_tensorboard`). The planner sees the flag as a node feature named after the kind, which
  the kind's jobs need (kqi/scheduler/placement.py); when no node has it, the kind's noun words the
  wait ("no node allows notebooks").
- the container: the site's command template split into argv ({port} and {token} replaced in the
  elements, never through a shell), the published port, and files shipped in before it starts (a
  notebook rerun's earlier /kqi/output, a TensorBoard's run outputs).
- the link: http://<node address>:<host port>/..., only while the job runs.
- the loop's hook (`enforce`, every tick): notebooks past their lifetime and idle TensorBoards are
  halted with kqi's reason (they end Killed, reason 'lifetime ended' / 'idle ...').
"""
from __future__ import annotations

import tarfile
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kqi import validation as v
from kqi.backends.base import ContainerSpec, NodeDriver, NodeError
from kqi.crypto import SecretBox
from kqi.jobs import sources as job_sources
from kqi.jobs.files import JobFiles
from kqi.jobs.kinds import JobKind, kind_of
from kqi.models import Job, JobStatus, Node, utcnow
from kqi.models.services import ServiceRun

OUTPUT_ARCHIVE_PREFIX = "kqi/output/"  # a rerun's earlier outputs, unpacked at "/"
PARENT_DIR = "/kqi/parent"  # where a TensorBoard finds the run it shows (read-only, as parents are)
LIFETIME_ENDED = "lifetime ended"
MAX_IDLE_CHECK_EVERY_S = 30.0


class InteractiveKind(JobKind):
    """A kind whose container serves HTTP on a published port (notebook, TensorBoard): it runs the
    site's argv instead of `sh -c`, only on nodes whose flag allows it and whose backend publishes
    ports, with a row beside the job."""

    needs = ("published_ports",)

    def __init__(self, name: str, noun: str, node_flag: str):
        self.name, self.noun, self.node_flag = name, noun, node_flag

    def ship(self, session, instance, job, shipment):
        ship(session, instance, job, shipment)

    def adapt(self, session, box, job, spec):
        return adapt(session, box, job, spec)

    def on_started(self, session, driver, job):
        started(session, driver, job)


def is_interactive(kind: str) -> bool:
    return isinstance(kind_of(kind), InteractiveKind)


# -- settings: command templates

def argv(template: str, port: int, token: str) -> tuple[str, ...]:
    """The container's argv: each element of the template with the placeholders replaced."""
    return tuple(element.replace("{port}", str(port)).replace("{token}", token)
                 for element in v.command_template(template, "command"))


# -- the row beside the job

def record(session: Session, job: Job, port: int, **values: Any) -> ServiceRun:
    row = ServiceRun(job_id=job.id, container_port=port, **values)
    session.add(row)
    session.flush()
    return row


def row_of(session: Session, job: Job) -> ServiceRun | None:
    return session.get(ServiceRun, job.id) if is_interactive(job.kind) else None


def token(box: SecretBox, row: ServiceRun) -> str:
    return box.unseal(row.token_sealed) if row.token_sealed else ""


def node_host(node: Node) -> str:
    """How users reach a node: its address, else the host of its URL (a unix:// node: this machine)."""
    return node.address or urlsplit(node.url).hostname or "localhost"


def base_url(job: Job, row: ServiceRun | None) -> str | None:
    """http://<node>:<published port> while the service runs, else None."""
    if row is None or row.host_port is None or job.status != JobStatus.RUNNING or not job.parts:
        return None
    host = node_host(job.parts[0].node)
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{row.host_port}"


# -- starting: hooks called by kqi/jobs/runner.py

def ship(session: Session, instance: Path, job: Job, shipment) -> None:
    """Add a service's own files to its shipment (job_sources.Shipment): a notebook rerun gets its
    previous run's stored /kqi/output back; a TensorBoard gets its run's stored outputs read-only."""
    row = row_of(session, job)
    if row is None:
        return
    if row.previous_id is not None:
        target = shipment.scratch / "previous-output.tar"
        with tarfile.open(target, "w") as archive:
            JobFiles(instance, row.previous_id).add_output_to(archive, OUTPUT_ARCHIVE_PREFIX, writable=True)
        shipment.archives.append(target)
    if row.run_id is not None:
        shipment.inputs.append(job_sources.outputs_input(instance, PARENT_DIR, [row.run_id]))


def adapt(session: Session, box: SecretBox, job: Job, spec: ContainerSpec) -> ContainerSpec:
    """A service's container: its argv instead of `sh -c`, its port published, started in /kqi."""
    row = row_of(session, job)
    if row is None:
        return spec
    return replace(spec, argv=argv(job.command, row.container_port, token(box, row)), ports=(row.container_port,),
                   workdir="/kqi")


def started(session: Session, driver: NodeDriver, job: Job) -> None:
    """Read back the host port the engine chose (raises NodeError when it published none)."""
    row = row_of(session, job)
    if row is None:
        return
    part = job.parts[0]
    row.host_port = driver.published_port(part.container_id, row.container_port)
    if row.host_port is None:
        raise NodeError(f"the node published no port for {job.kind} port {row.container_port}", infrastructure=False)
    row.active_at = row.checked_at = utcnow()


# -- the loop's hook

def halt_by_kqi(session: Session, job_id: int, reason: str) -> bool:
    """Ask the loop to stop a running service; it ends Killed with `reason`."""
    result = session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING,
                                               Job.halt_requested.is_(False))
                             .values(halt_requested=True, halt_reason=reason)
                             .execution_options(synchronize_session=False))
    return result.rowcount == 1


def running(session: Session, kind: str) -> list[tuple[Job, ServiceRun]]:
    rows = session.execute(select(Job, ServiceRun).join(ServiceRun, ServiceRun.job_id == Job.id)
                           .where(Job.kind == kind, Job.status == JobStatus.RUNNING, Job.halt_requested.is_(False))
                           .order_by(Job.id))
    return [(job, row) for job, row in rows]


def expire_lifetimes(session: Session, now: datetime) -> list[int]:
    halted = []
    for job, row in running(session, "notebook"):
        ended = row.lifetime_s is not None and job.started_at and job.started_at + timedelta(seconds=row.lifetime_s) <= now
        if ended and halt_by_kqi(session, job.id, LIFETIME_ENDED):
            halted.append(job.id)
    return halted


def stop_idle(session: Session, driver: Callable[[Node], NodeDriver], idle_s: float, now: datetime) -> list[int]:
    """Halt TensorBoards whose container received no bytes for `idle_s`. The engine's rx counter
    is read at most every `check_every_s`; a browser tab with TensorBoard open polls it, so an open
    tab counts as use."""
    check_every_s = min(MAX_IDLE_CHECK_EVERY_S, idle_s / 3)
    halted = []
    for job, row in running(session, "tensorboard"):
        if row.checked_at is not None and (now - row.checked_at).total_seconds() < check_every_s:
            continue
        part = job.parts[0]
        try:
            received = driver(part.node).rx_bytes(part.container_id)
        except NodeError:
            continue  # the node is away: the heartbeat deals with it
        row.checked_at = now
        if received != row.rx_bytes:
            row.rx_bytes, row.active_at = received, now
        elif (row.active_at is not None and (now - row.active_at).total_seconds() >= idle_s
              and halt_by_kqi(session, job.id, f"idle: no requests for {idle_s:g} s")):
            halted.append(job.id)
    return halted


def seconds_left(job: Job, row: ServiceRun | None, now: datetime | None = None) -> int | None:
    """A running notebook's remaining lifetime in seconds (None: unlimited or not running)."""
    if row is None or row.lifetime_s is None or job.started_at is None or job.status.finished:
        return None
    end = job.started_at + timedelta(seconds=row.lifetime_s)
    return max(0, int((end - (now or utcnow())).total_seconds()))
