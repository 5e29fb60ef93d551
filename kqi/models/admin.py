"""Tables of administration: site settings, the audit log, usage records and job-end notifications."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from kqi.extensions import db
from kqi.models.core import utcnow


class SiteSetting(db.Model):
    """One site-wide setting (proxies, notebook image, default resources, SMTP), JSON-valued."""

    __tablename__ = "site_settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[object] = mapped_column(JSON)


class AuditEvent(db.Model):
    """Who did what. Names are copied, not joined, so the log outlives the users and tenants it names."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_at", "at"), Index("ix_audit_tenant_at", "tenant", "at"))
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    username: Mapped[str] = mapped_column(String(64), default="")
    tenant: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(512), default="")
    status: Mapped[int] = mapped_column(Integer, default=0)  # the HTTP status it ended with
    ip: Mapped[str] = mapped_column(String(64), default="")


class UsageRecord(db.Model):
    """What one ended job used, written in the transaction that ends it."""

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_ended", "ended_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(Integer, unique=True)  # no foreign key: usage outlives deleted jobs
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime] = mapped_column(DateTime)
    cpu_hours: Mapped[float] = mapped_column(Float)
    memory_gb_hours: Mapped[float] = mapped_column(Float)
    gpu_hours: Mapped[float] = mapped_column(Float)


class NotificationPreference(db.Model):
    """Where a user wants to hear that their job ended. The webhook URL is a credential: sealed."""

    __tablename__ = "notification_preferences"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    webhook_sealed: Mapped[str] = mapped_column(Text, default="")
    email: Mapped[str] = mapped_column(String(254), default="")


class Notification(db.Model):
    """A job-end message waiting to be sent (outbox): queued with the job's end, sent by the loop."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_pending", "sent", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))  # webhook | email
    text: Mapped[str] = mapped_column(Text)
    sent: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
