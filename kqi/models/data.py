"""Tables for what a job runs on: data, datasets, git servers and tokens, registries and their
credentials, and what each job was given (its sources, parents, attachments, provenance).

Rules live in kqi/data/items.py, kqi/data/datasets.py, kqi/data/gitsource.py, kqi/data/registries.py, kqi/jobs/sources.py.
File contents are not here: they are blobs in the instance folder, named by their SHA-256.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, backref, mapped_column, relationship

from kqi.extensions import db
from kqi.models.core import Job, Tenant, User, utcnow


class Data(db.Model):
    """An uploaded record: one or more files with a name, memo and tags."""

    __tablename__ = "data"
    __table_args__ = (Index("ix_data_tenant", "tenant_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(256))
    memo: Mapped[str] = mapped_column(Text, default="")
    # ",a,b,": the commas around every tag let one LIKE find a whole tag on any database
    tags: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    tenant: Mapped[Tenant] = relationship()
    user: Mapped[User] = relationship()
    files: Mapped[list[DataFile]] = relationship(back_populates="data", order_by="DataFile.id",
                                                   cascade="all, delete-orphan")


class DataFile(db.Model):
    __tablename__ = "data_files"
    __table_args__ = (UniqueConstraint("data_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    data_id: Mapped[int] = mapped_column(ForeignKey("data.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    data: Mapped[Data] = relationship(back_populates="files")


class Dataset(db.Model):
    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_tenant", "tenant_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(256))
    memo: Mapped[str] = mapped_column(Text, default="")
    flat: Mapped[bool] = mapped_column(Boolean, default=False)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)  # set when a job first uses it
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    user: Mapped[User] = relationship()
    entries: Mapped[list[DatasetEntry]] = relationship(back_populates="dataset", order_by="DatasetEntry.id",
                                                         cascade="all, delete-orphan")


class DatasetEntry(db.Model):
    """One data record placed in one area of a dataset ('' in a flat dataset)."""

    __tablename__ = "dataset_entries"
    __table_args__ = (UniqueConstraint("dataset_id", "area", "data_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    area: Mapped[str] = mapped_column(String(16))
    data_id: Mapped[int] = mapped_column(ForeignKey("data.id"), index=True)  # deleting used data is refused
    dataset: Mapped[Dataset] = relationship(back_populates="entries")
    data: Mapped[Data] = relationship()


class GitServer(db.Model):
    __tablename__ = "git_servers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(String(512))  # repositories under this URL use its tokens
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class GitToken(db.Model):
    __tablename__ = "git_tokens"
    __table_args__ = (UniqueConstraint("user_id", "git_server_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    git_server_id: Mapped[int] = mapped_column(ForeignKey("git_servers.id", ondelete="CASCADE"))
    username: Mapped[str] = mapped_column(String(128), default="")
    sealed_token: Mapped[str] = mapped_column(Text)  # kqi.crypto box
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    server: Mapped[GitServer] = relationship()


class Registry(db.Model):
    __tablename__ = "registries"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    host: Mapped[str] = mapped_column(String(255), unique=True)  # host[:port], as in image references
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class RegistryCredential(db.Model):
    __tablename__ = "registry_credentials"
    __table_args__ = (UniqueConstraint("user_id", "registry_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    registry_id: Mapped[int] = mapped_column(ForeignKey("registries.id", ondelete="CASCADE"))
    username: Mapped[str] = mapped_column(String(128))
    sealed_password: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    image_registry: Mapped[Registry] = relationship()


class JobSource(db.Model):
    """What a job was given at submit (pinned), and what it actually ran on (provenance, at start)."""

    __tablename__ = "job_sources"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"), nullable=True, index=True)
    dataset_hash: Mapped[str] = mapped_column(String(64), default="")
    # One data item at /kqi/input/{id}/ instead of a dataset (a preprocessing run's input, kqi/kinds/preprocessing.py).
    data_id: Mapped[int | None] = mapped_column(ForeignKey("data.id"), nullable=True, index=True)
    git_repository: Mapped[str] = mapped_column(String(1024), default="")
    git_branch: Mapped[str] = mapped_column(String(255), default="")
    git_commit: Mapped[str] = mapped_column(String(40), default="")
    pull: Mapped[bool] = mapped_column(Boolean, default=False)  # pull the image even if the node has it
    provenance: Mapped[dict] = mapped_column(JSON, default=dict)
    job: Mapped[Job] = relationship(backref=backref("source", uselist=False, cascade="all, delete-orphan"))
    dataset: Mapped[Dataset | None] = relationship()
    data: Mapped[Data | None] = relationship()


class JobParent(db.Model):
    __tablename__ = "job_parents"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


# Read-only, so a list page can load every job's parents in one query (selectinload); the rows are
# written directly as JobParent.
Job.parent_links = relationship(JobParent, foreign_keys=[JobParent.job_id], order_by=JobParent.position, viewonly=True)


class JobAttachment(db.Model):
    """A file attached to a run before or during it: /kqi/attach/<name>."""

    __tablename__ = "job_attachments"
    __table_args__ = (UniqueConstraint("job_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
