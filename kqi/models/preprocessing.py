"""Tables for preprocessing: definitions, their runs (the history), and the data each run made.

Rules live in kqi/kinds/preprocessing.py. A run is a Job of kind "preprocessing"; its history entry is
keyed by that job's id, and the input data item travels as the job's single-data source
(JobSource.data_id), so it is shipped and recorded like any other source.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kqi.extensions import db
from kqi.models.core import Job, Tenant, User, utcnow
from kqi.models.data import Data


class Preprocessing(db.Model):
    """A definition: what to run on a data item. Only the name is required; a run needs image and command."""

    __tablename__ = "preprocessings"
    __table_args__ = (UniqueConstraint("tenant_id", "name"), Index("ix_preprocessings_tenant", "tenant_id", "id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(30))
    image: Mapped[str] = mapped_column(String(512), default="")
    command: Mapped[str] = mapped_column(Text, default="")
    # The code, pinned to a commit when the definition is saved, so every run of it runs the same code.
    git_repository: Mapped[str] = mapped_column(String(1024), default="")
    git_branch: Mapped[str] = mapped_column(String(255), default="")
    git_commit: Mapped[str] = mapped_column(String(40), default="")
    # Default resources of a run (None: the run must give them).
    cpu_milli: Mapped[int | None] = mapped_column(Integer, nullable=True)
    memory_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpu_milli: Mapped[int | None] = mapped_column(Integer, nullable=True)
    partition: Mapped[str] = mapped_column(String(64), default="")
    memo: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Written by every run request: the row write also serialises two requests running the same definition.
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    tenant: Mapped[Tenant] = relationship()
    user: Mapped[User] = relationship()

    @property
    def default_resources(self) -> dict[str, int | None]:
        """The defaults keyed as Resources' fields ({"cpu_milli": ..., ...}; None: none)."""
        return {"cpu_milli": self.cpu_milli, "memory_mib": self.memory_mib, "gpu_milli": self.gpu_milli}


class PreprocessingRun(db.Model):
    """One history entry: a definition run on one data item, as the job `job_id`."""

    __tablename__ = "preprocessing_runs"
    __table_args__ = (Index("ix_preprocessing_runs_definition_data", "preprocessing_id", "data_id"),)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    # A definition with history is not deleted, nor an input data item (kqi/data/items.py refuses it).
    preprocessing_id: Mapped[int] = mapped_column(ForeignKey("preprocessings.id"))
    data_id: Mapped[int] = mapped_column(ForeignKey("data.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    job: Mapped[Job] = relationship()
    preprocessing: Mapped[Preprocessing] = relationship()
    data: Mapped[Data] = relationship()
    outputs: Mapped[list[PreprocessingOutput]] = relationship(back_populates="run", order_by="PreprocessingOutput.data_id",
                                                                cascade="all, delete-orphan")


class PreprocessingOutput(db.Model):
    """A data item a run made from one /kqi/output/{name}/ folder: its lineage."""

    __tablename__ = "preprocessing_outputs"
    data_id: Mapped[int] = mapped_column(ForeignKey("data.id", ondelete="CASCADE"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("preprocessing_runs.job_id", ondelete="CASCADE"), index=True)
    run: Mapped[PreprocessingRun] = relationship(back_populates="outputs")
    data: Mapped[Data] = relationship()
