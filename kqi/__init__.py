"""kqi: an on-premises machine-learning job platform for small GPU clusters."""
from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import Pool

from kqi import config as kqi_config
from kqi import crypto
from kqi.backends import registry as backends
from kqi.config import Settings
from kqi.extensions import csrf, db, login_manager, migrate

ROOT = Path(__file__).resolve().parent.parent


def _instance_secret(instance: Path, name: str, make) -> str:
    """A value generated once and kept in the instance folder (readable by its owner only)."""
    path = instance / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def complete(settings: Settings) -> Settings:
    """The settings as the app uses them: the instance folder made and absolute, the database URL
    and the secrets and site id that were left empty filled in (generated once into the folder)."""
    instance = Path(settings.instance).resolve()
    instance.mkdir(parents=True, exist_ok=True)
    return settings.replace(
        instance=str(instance),
        database_url=settings.database_url or f"sqlite:///{instance / 'kqi.db'}",
        secret_key=settings.secret_key or _instance_secret(instance, "secret_key", lambda: secrets.token_urlsafe(48)),
        encryption_key=settings.encryption_key or _instance_secret(instance, "encryption_key", crypto.new_key),
        site_id=settings.site_id or _instance_secret(instance, "site_id", lambda: secrets.token_hex(4)),
    )


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    settings = complete(kqi_config.load(overrides=overrides, backend_defaults=backends.config_defaults()))
    app = Flask(
        "kqi",
        root_path=str(ROOT),
        instance_path=settings.instance,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    app.config["SECRET_KEY"] = settings.secret_key
    app.config["SQLALCHEMY_DATABASE_URI"] = settings.database_url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = _engine_options(settings.database_url, settings.web_threads)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_mb * 1024 * 1024
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["WTF_CSRF_TIME_LIMIT"] = None  # tied to the session instead of a clock

    from kqi.accounts import ratelimit
    from kqi.admin import audit

    # Built once here; the views hand them to the domain (kqi/views/__init__.py), which never reads the app.
    box = crypto.SecretBox(settings.encryption_key)
    app.extensions[kqi_config.EXTENSION] = settings
    app.extensions[crypto.EXTENSION] = box
    app.extensions[audit.EXTENSION] = audit.AuditBuffer(app.app_context)
    app.extensions[ratelimit.EXTENSION] = ratelimit.LoginLimiter(settings.login_max_failures, settings.login_window_s)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)

    import kqi.kinds  # noqa: F401  (registers every job kind)
    from kqi.views import register_views

    register_views(app)

    from kqi.scheduler.loop import SchedulerService

    app.extensions["kqi_scheduler"] = SchedulerService(settings, box, app.app_context)
    return app


def settings_of(app: Flask) -> Settings:
    return app.extensions[kqi_config.EXTENSION]


def box_of(app: Flask) -> crypto.SecretBox:
    return app.extensions[crypto.EXTENSION]


def _engine_options(url: str, web_threads: int) -> dict[str, Any]:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        return {}  # one shared in-memory connection: no pool to size
    # A connection kept open for every web thread and the threads beside them (scheduler loop, audit
    # writer, notifier): with the default 5, the other threads opened and closed one per request.
    # A PostgreSQL server can restart under us: _ping_if_idle checks a connection that sat unused.
    # Last in, first out: the connections in use stay few and warm, the others idle (and get checked).
    return {"pool_size": web_threads + 4, "max_overflow": 8, "pool_use_lifo": True}


# A PostgreSQL connection idle this long is checked (SELECT 1) before a request uses it: the server
# may have restarted meanwhile. One in steady use is not: the check is a round trip, an eighth of a
# short request's, and if the server goes away under load the first failing statement makes the
# pool drop every connection, so only the requests in flight then see the error.
PING_AFTER_IDLE_S = 10.0


@event.listens_for(Pool, "connect")
def _fresh(_dbapi_connection, record):
    record.info["idle_since"] = time.monotonic()


@event.listens_for(Pool, "checkin")
def _idle_from_now(_dbapi_connection, record):
    if record is not None:
        record.info["idle_since"] = time.monotonic()


@event.listens_for(Pool, "checkout")
def _ping_if_idle(dbapi_connection, record, _proxy):
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        return  # a file cannot go away under us
    if time.monotonic() - record.info.get("idle_since", float("-inf")) < PING_AFTER_IDLE_S:
        return
    try:
        ping(dbapi_connection)
    except Exception as error:  # noqa: BLE001 - any failure: the pool discards it and connects afresh
        raise exc.DisconnectionError(str(error)) from error


def ping(dbapi_connection) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SELECT 1")
    cursor.close()
    dbapi_connection.rollback()  # no transaction left open: a read may switch the connection to autocommit


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):
    # WAL lets the web threads read while the scheduler writes; busy_timeout waits instead of failing.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        # With WAL, NORMAL syncs at checkpoints rather than at every commit: still never corrupt, and
        # commits stop waiting on the disk (a power cut may lose the last moments, not the database).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def shutdown(app: Flask) -> None:
    """Stop what runs beside the web server: the scheduler loop, then the audit log's last rows."""
    from kqi.admin import audit

    app.extensions["kqi_scheduler"].shutdown()
    app.extensions[audit.EXTENSION].close()
