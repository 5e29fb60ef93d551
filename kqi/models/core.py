"""The core tables every domain uses: tenants, users, memberships, tokens, nodes, jobs, their parts
and GPU allocations. Rules about them live in the domain packages, never here."""
from __future__ import annotations

import enum
from datetime import UTC, datetime

from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kqi.extensions import db
from kqi.resources import MILLI, Resources


def utcnow() -> datetime:
    """Naive UTC: SQLite drops time zones, so every stored time is UTC without one."""
    return datetime.now(UTC).replace(tzinfo=None)


class Role(str, enum.Enum):
    ADMIN = "admin"  # system administrator, in every tenant it belongs to
    MANAGER = "manager"  # tenant manager
    USER = "user"


class JobStatus(str, enum.Enum):
    QUEUED = "Queued"
    STARTING = "Starting"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    KILLED = "Killed"
    USER_CANCELED = "UserCanceled"
    ERROR = "Error"

    @property
    def active(self) -> bool:
        return self in (JobStatus.STARTING, JobStatus.RUNNING)

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.STARTING, JobStatus.RUNNING)


class Tenant(db.Model):
    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    # Resources the tenant's jobs may hold at once; None: unlimited. Over it, jobs wait.
    quota_cpu_milli: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_memory_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_gpu_milli: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Notebook lifetime policy: the lifetime a notebook gets unless asked otherwise, and the most it may ask.
    notebook_default_hours: Mapped[int | None] = mapped_column(Integer, nullable=True)
    notebook_max_hours: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    @property
    def quota(self) -> dict[str, int | None]:
        """The quota keyed as Resources' fields ({"cpu_milli": ..., ...}; None: unlimited)."""
        return {"cpu_milli": self.quota_cpu_milli, "memory_mib": self.quota_memory_mib,
                "gpu_milli": self.quota_gpu_milli}


class User(UserMixin, db.Model):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    memberships: Mapped[list[Membership]] = relationship(back_populates="user", cascade="all, delete-orphan")

    @property
    def is_active(self) -> bool:  # flask-login refuses disabled users
        return not self.disabled


class Membership(db.Model):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "tenant_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    user: Mapped[User] = relationship(back_populates="memberships")
    tenant: Mapped[Tenant] = relationship()


class ApiToken(db.Model):
    """A bearer token for one user in one tenant. Only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    user: Mapped[User] = relationship()
    tenant: Mapped[Tenant] = relationship()


class Node(db.Model):
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(String(512))
    partition: Mapped[str] = mapped_column(String(64), default="")
    cpu_milli: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    engine_version: Mapped[str] = mapped_column(String(64), default="")
    # How containers on other nodes reach this one (gang jobs' MASTER_ADDR).
    address: Mapped[str] = mapped_column(String(255), default="")
    nvidia_runtime: Mapped[bool] = mapped_column(Boolean, default=False)
    schedulable: Mapped[bool] = mapped_column(Boolean, default=True)  # kept equal to state == Ready
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # The node layer (kqi/cluster/health.py): the state shown, the one the admin chose, how it answers.
    state: Mapped[str] = mapped_column(String(20), default="Ready")
    admin_state: Mapped[str] = mapped_column(String(16), default="Ready")  # Ready, Draining, Disabled
    credentials_sealed: Mapped[str] = mapped_column(Text, default="")  # TLS / SSH keys, sealed JSON
    ssh_host_key_fingerprint: Mapped[str] = mapped_column(String(128), default="")
    host_key_confirmed: Mapped[bool] = mapped_column(Boolean, default=True)
    tenants: Mapped[list | None] = mapped_column(JSON, nullable=True)  # None: public
    allow_notebooks: Mapped[bool] = mapped_column(Boolean, default=True)
    allow_tensorboard: Mapped[bool] = mapped_column(Boolean, default=True)
    gpu_source: Mapped[str] = mapped_column(String(16), default="declared")  # or "nvidia-smi"
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    down_since: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Read-only inputs (kqi/jobs/node_cache.py): a folder the server and this node both see (an NFS
    # share), where they are kept and bound from instead of shipped; the node's cache volumes' budget
    # (None: the site's node_cache_gb).
    shared_storage: Mapped[str] = mapped_column(String(255), default="")
    cache_gb: Mapped[float | None] = mapped_column(Float, nullable=True)

    @property
    def capacity(self) -> Resources:
        """What the node has: its CPU and memory as the engine reported them, and its GPUs."""
        return Resources(self.cpu_milli, self.memory_mib, (self.gpu_count or 0) * MILLI)


class Job(db.Model):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_tenant_created", "tenant_id", "id"),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_tenant_kind", "tenant_id", "kind", "id"),  # a kind's list (kqi/jobs/history.py filters)
        Index("ix_jobs_tenant_user", "tenant_id", "user_id", "id"),
        # Never reuse a deleted job's id (usage records, notices, job folders keep naming it); migration 0011.
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16), default="training")
    name: Mapped[str] = mapped_column(String(64))
    image: Mapped[str] = mapped_column(String(512))
    command: Mapped[str] = mapped_column(Text)
    cpu_milli: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    gpu_milli: Mapped[int] = mapped_column(Integer, default=0)  # per part
    nodes: Mapped[int] = mapped_column(Integer, default=1)  # gang size: parts on distinct nodes
    env: Mapped[dict] = mapped_column(JSON, default=dict)
    memo: Mapped[str] = mapped_column(Text, default="")
    time_limit_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    partition: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, native_enum=False, length=16), default=JobStatus.QUEUED)
    reason: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    halt_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when kqi itself halts a job (a notebook's lifetime ended, an idle TensorBoard): it ends
    # Killed with this reason; a user's halt leaves it empty (UserCanceled, "halted by user").
    halt_reason: Mapped[str] = mapped_column(String(200), default="", server_default="")
    requeue_on_node_loss: Mapped[bool] = mapped_column(Boolean, default=False)  # else Killed, "node lost"
    # Infrastructure failures of the job's current node operation (start, or stop and collection) in
    # a row, and when it is tried again; at kqi/jobs/runner.py MAX_TRIES the job ends as Error.
    failed_tries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    retry_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    queue_position: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pending_reasons: Mapped[list] = mapped_column(JSON, default=list)  # in words (kqi/scheduler/reasons.py)
    pending_reason_codes: Mapped[list] = mapped_column(JSON, default=list, server_default="[]")  # as data: code, params
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)  # /kqi/output/value.txt (kqi/jobs/history.py)
    tenant: Mapped[Tenant] = relationship()
    user: Mapped[User] = relationship()
    parts: Mapped[list[JobPart]] = relationship(back_populates="job", order_by="JobPart.rank",
                                                  cascade="all, delete-orphan")

    @property
    def resources(self) -> Resources:
        """What each part holds (a gang job holds this on each of its `nodes`)."""
        return Resources(self.cpu_milli, self.memory_mib, self.gpu_milli)

    @property
    def node(self) -> Node | None:
        """Where the job runs (the gang master's node for a gang job)."""
        return self.parts[0].node if self.parts else None

    @property
    def gpu_indices(self) -> list[int]:
        return list(self.parts[0].gpu_indices) if self.parts else []


class JobPart(db.Model):
    """Where one part of a started job runs: one container. A job has one part, a gang job one
    per node, rank 0 being the master."""

    __tablename__ = "job_parts"
    __table_args__ = (UniqueConstraint("job_id", "rank"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    gpu_indices: Mapped[list] = mapped_column(JSON, default=list)
    container_id: Mapped[str] = mapped_column(String(80), default="")
    job: Mapped[Job] = relationship(back_populates="parts")
    node: Mapped[Node] = relationship()


class GpuAllocation(db.Model):
    """A GPU index held by an active job. Rows are deleted when the job releases its resources.

    The partial unique index makes double-booking a whole GPU impossible even if two writers raced;
    shares (milli < 1000) of one index are checked by the scheduler when it applies a plan.
    """

    __tablename__ = "gpu_allocations"
    __table_args__ = (
        Index(
            "uq_gpu_whole",
            "node_id",
            "gpu_index",
            unique=True,
            sqlite_where=text("milli = 1000"),
            postgresql_where=text("milli = 1000"),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    gpu_index: Mapped[int] = mapped_column(Integer)
    milli: Mapped[int] = mapped_column(Integer)
