"""The job-kind registry: what each kind of job adds to the common job.

Every job is queued, placed, started, watched and collected the same way (kqi/jobs/runner.py,
kqi/scheduler/). A kind adds only what is its own, by overriding the hooks of `JobKind`:
- `node_flag` and `needs`: the placement constraint, a node attribute that must be true for the
  kind to run there (notebooks need `Node.allow_notebooks`) and the capabilities its node's backend
  must have (kqi/backends/registry.py `Capabilities`: notebooks need `published_ports`); the planner
  sees both as one node feature named after the kind (kqi/scheduler/placement.py), and `noun`
  words the wait when no node allows it;
- `writable_git`: /kqi/git is the container's own writable copy rather than the node's shared one;
- `ship` and `adapt`: extra files for the container, and the container spec itself (argv, ports);
- `on_started`: after its containers started (read back a published port);
- `on_collected`: after its outputs were collected, before the job's end is written (turn output
  folders into data); it may change the final status and reason;
- `enforce`: each tick, the kind's own rules over its running jobs (lifetimes, idleness).

The kinds themselves live in kqi/kinds/, one module each, and `register` themselves there; the
runner, the snapshot and the loop only iterate this registry. Adding a kind touches its own module
and the list in kqi/kinds/__init__.py, nothing else.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from kqi.backends.base import ContainerSpec, NodeDriver
from kqi.backends.registry import Capabilities, capabilities_of
from kqi.config import Settings
from kqi.crypto import SecretBox
from kqi.models import Job, JobStatus, Node

if TYPE_CHECKING:
    from kqi.jobs.sources import Shipment


class JobKind:
    """One kind of job. The defaults are a plain batch job: run the command, collect, end."""

    name: str = ""
    noun: str = ""  # how a person names jobs of this kind in a sentence ("notebooks")
    node_flag: str | None = None  # a Node attribute that must be true to run this kind there
    needs: tuple[str, ...] = ()  # capabilities the node's backend must have (fields of Capabilities)
    # /kqi/git unpacked into each container, writable, instead of the node's shared read-only copy
    # (kqi/jobs/node_cache.py): for kinds whose users edit the code in place (notebooks)
    writable_git: bool = False

    @property
    def constrained(self) -> bool:
        """Whether some nodes may not run this kind."""
        return self.node_flag is not None or bool(self.needs)

    def allowed_on(self, node: Node) -> bool:
        if self.node_flag is not None and not getattr(node, self.node_flag):
            return False
        capabilities = capabilities_of(node.url)
        return all(getattr(capabilities, capability) for capability in self.needs)

    def ship(self, session: Session, instance: Path, job: Job, shipment: Shipment) -> None:
        """Add this kind's own files to the job's shipment."""

    def adapt(self, session: Session, box: SecretBox, job: Job, spec: ContainerSpec) -> ContainerSpec:
        """The container spec as this kind runs it (`box` unseals what the kind keeps sealed)."""
        return spec

    def on_started(self, session: Session, driver: NodeDriver, job: Job) -> None:
        """Called once every part started; may raise NodeError to fail the start."""

    def on_collected(self, session: Session, settings: Settings, job: Job, status: JobStatus,
                     reason: str) -> tuple[JobStatus, str]:
        return status, reason

    def enforce(self, session: Session, driver: Callable[[Node], NodeDriver], settings: Settings,
                now: datetime) -> list[int]:
        """The kind's rules over its running jobs, every tick; the ids of the jobs it halted."""
        return []


_REGISTRY: dict[str, JobKind] = {}
PLAIN = JobKind()


def register(kind: JobKind) -> JobKind:
    if not kind.name or kind.name in _REGISTRY:
        raise ValueError(f"job kind {kind.name!r} is unnamed or registered twice")
    unknown = sorted(set(kind.needs) - {f.name for f in fields(Capabilities)})
    if unknown:
        raise ValueError(f"job kind {kind.name!r} needs capabilities no backend declares: {unknown}")
    _REGISTRY[kind.name] = kind
    return kind


def kind_of(name: str) -> JobKind:
    """The registered kind, or the plain batch kind for a name nothing registered."""
    return _REGISTRY.get(name, PLAIN)


def all_kinds() -> Iterator[JobKind]:
    return iter(sorted(_REGISTRY.values(), key=lambda kind: kind.name))


def names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def constrained() -> list[JobKind]:
    """The kinds some nodes may not run (a node flag, a backend capability)."""
    return [kind for kind in all_kinds() if kind.constrained]
