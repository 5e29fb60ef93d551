"""Long-running service containers (notebooks, TensorBoard): one row beside the job that runs each."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from kqi.extensions import db


class ServiceRun(db.Model):
    """What a service job needs besides its job row: the port it serves on (in the container and as
    published on its node), a notebook's access token (sealed) and lifetime, the earlier run whose
    /kqi/output a notebook rerun restores, and the training run a TensorBoard reads, with the
    traffic seen last (idle detection)."""

    __tablename__ = "service_runs"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    container_port: Mapped[int] = mapped_column(Integer)
    host_port: Mapped[int | None] = mapped_column(Integer, nullable=True)  # read back from the engine after start
    token_sealed: Mapped[str] = mapped_column(Text, default="", server_default="")
    lifetime_s: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: until stopped
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, index=True)
    rx_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    active_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    checked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
