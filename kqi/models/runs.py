"""Tables of the run history: each job's status timeline, its tags, and who starred it.

Rules live in kqi/jobs/history.py. Rows go with their job (ON DELETE CASCADE)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kqi.extensions import db
from kqi.models.core import Job, utcnow


class JobEvent(db.Model):
    """One status change of a job: written by jobs.transition (and 'submitted' by jobs.submit)."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job", "job_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")


class JobTag(db.Model):
    """A free label on a job. The tenant is copied in so the tag filter needs no join to jobs."""

    __tablename__ = "job_tags"
    __table_args__ = (Index("ix_job_tags_tenant_tag", "tenant_id", "tag", "job_id"),)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))


class JobFavorite(db.Model):
    """A user's star on a job."""

    __tablename__ = "job_favorites"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True, index=True)


# Read by as_dict and the list rows; a list page loads every job's tags in one query (selectinload).
Job.tag_rows = relationship(JobTag, order_by=JobTag.tag, cascade="all, delete-orphan", passive_deletes=True)
