"""Tables of the dashboard: samples of the cluster's load, taken by the scheduler loop, for the
chart of GPU utilisation and queue length over time."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer
from sqlalchemy.orm import Mapped, mapped_column

from kqi.extensions import db
from kqi.models.core import utcnow


class ClusterSample(db.Model):
    """The whole cluster at one moment. Raw counts, not percentages, so a chart can be redrawn
    with any scale; kept for a configurable retention (kqi/cluster/samples.py prunes)."""

    __tablename__ = "cluster_samples"
    __table_args__ = (Index("ix_cluster_samples_at", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    gpu_total: Mapped[int] = mapped_column(Integer)  # GPUs of every registered node
    gpu_allocated_milli: Mapped[int] = mapped_column(Integer)  # held by active jobs, 1000 per whole GPU
    queued: Mapped[int] = mapped_column(Integer)  # jobs waiting, every tenant
    running: Mapped[int] = mapped_column(Integer)  # jobs starting or running, every tenant
