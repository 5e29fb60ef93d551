"""Shared fixtures: an app on a migrated database (SQLite, or PostgreSQL for `db_url` tests), row
factories, an authenticated API client, and the real Docker engines of the test cluster."""
from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass

import pytest
from flask_migrate import upgrade

import kqi
from kqi import create_app
from kqi.accounts import auth as accounts
from kqi.extensions import db
from kqi.models import Role

pytest_plugins = ["tests.infra.plugin"]


def pytest_configure(config):
    from tests.infra.plugin import FIXTURE_NEEDS

    FIXTURE_NEEDS["db_url"] = "postgres_server"  # start PostgreSQL up front, beside the engines


_db_names = itertools.count()


def make_app(tmp_path, database_url: str = "", **overrides):
    settings = {"instance": str(tmp_path / "instance"), "database_url": database_url,
                "scheduler_enabled": False, "site_id": "t" + secrets.token_hex(3), "secret_key": "test",
                "stop_grace_s": 1}
    settings.update(overrides)
    app = create_app(settings)
    app.config["TESTING"] = True
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory, revision="head")
    return app


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh database of each kind: the model and API tests run against both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kqi.db'}"
    server = request.getfixturevalue("postgres_server")
    return server.create_database(f"t{next(_db_names)}_{secrets.token_hex(3)}")


@pytest.fixture
def app(tmp_path, db_url):
    app = make_app(tmp_path, db_url)
    yield app
    kqi.shutdown(app)
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def sqlite_app(tmp_path):
    app = make_app(tmp_path)
    yield app
    kqi.shutdown(app)


@dataclass
class ApiClient:
    """A test client that sends a bearer token."""

    client: object
    token: str

    def _headers(self, headers):
        return {"Authorization": f"Bearer {self.token}", **(headers or {})}

    def get(self, url, **kw):
        return self.client.get(url, headers=self._headers(kw.pop("headers", None)), **kw)

    def post(self, url, **kw):
        return self.client.post(url, headers=self._headers(kw.pop("headers", None)), **kw)

    def put(self, url, **kw):
        return self.client.put(url, headers=self._headers(kw.pop("headers", None)), **kw)

    def delete(self, url, **kw):
        return self.client.delete(url, headers=self._headers(kw.pop("headers", None)), **kw)

    def open(self, url, method, **kw):
        return self.client.open(url, method=method, headers=self._headers(kw.pop("headers", None)), **kw)


class Factory:
    """Rows for tests: tenants, users with a role, API clients logged in as them."""

    _names = itertools.count(1)  # shared, so several factories on one app never clash

    def __init__(self, app):
        self.app = app

    def user(self, tenant: str = "default", role: Role = Role.USER, *, admin: bool = False,
             password: str = "password-123"):
        name = f"user{next(self._names)}"
        with self.app.app_context():
            user = accounts.create_user(db.session, name, password, is_admin=admin)
            accounts.add_membership(db.session, user, accounts.get_or_create_tenant(db.session, tenant), role)
            db.session.commit()
        return name, password

    def api(self, tenant: str = "default", role: Role = Role.USER, *, admin: bool = False) -> ApiClient:
        username, password = self.user(tenant, role, admin=admin)
        client = self.app.test_client()
        response = client.post("/api/v1/account/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.get_json()
        return ApiClient(client, response.get_json()["token"])


@pytest.fixture
def factory(app):
    return Factory(app)


def ticked(scheduler, timeout: float = 120):
    """A tick of a scheduler ticked by hand, then the node actions it handed out done (a start, a
    job's end with the removal of its containers): for tests that poll the loop step by step."""
    def tick():
        scheduler.tick()
        assert scheduler.executors.drain(timeout), f"node actions still running: {scheduler.executors.in_flight()}"

    return tick


def wait_for(predicate, timeout: float = 60, interval: float = 0.2, tick=None):
    """Poll until predicate() is truthy (calling tick() between polls); return its value."""
    deadline = time.monotonic() + timeout
    while True:
        if tick is not None:
            tick()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
