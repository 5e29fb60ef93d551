"""Tables of the node layer: the GPUs of each node, the record of node state changes, the inputs
kept on each node, and the scheduler lease (which of several server processes schedules)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kqi.extensions import db
from kqi.models.core import utcnow


class NodeGpu(db.Model):
    """One GPU of a node: discovered with nvidia-smi over SSH, or declared by the admin.

    `busy` marks a GPU used by processes kqi did not start (seen by nvidia-smi): never scheduled."""

    __tablename__ = "gpus"
    __table_args__ = (UniqueConstraint("node_id", "gpu_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    gpu_index: Mapped[int] = mapped_column(Integer)
    uuid: Mapped[str] = mapped_column(String(128), default="")
    model: Mapped[str] = mapped_column(String(128), default="")
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    busy: Mapped[bool] = mapped_column(Boolean, default=False)


class NodeEvent(db.Model):
    """A node's state change (or an admin action on it), newest shown first on its page."""

    __tablename__ = "node_events"
    __table_args__ = (Index("ix_node_events_node_at", "node_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    old_state: Mapped[str] = mapped_column(String(20), default="")
    new_state: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text, default="")


class Lease(db.Model):
    """A named lease: `holder` acts while `expires_at` (database time, UTC) is in the future."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128), default="")
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class NodeCacheEntry(db.Model):
    """A read-only input kept on a node as a cache volume named by its content hash
    (kqi/jobs/node_cache.py). `state` is "filling" until the fill succeeded, then "ready": only a
    ready entry is ever mounted, so a fill cut short by a crash is never taken for a complete one.
    Least recently used entries are evicted when the node's cache goes over its budget."""

    __tablename__ = "node_cache_entries"
    __table_args__ = (UniqueConstraint("node_id", "content_hash"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    content_hash: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(16), default="filling")
    last_used_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
