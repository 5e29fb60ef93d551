"""Code from git without engines: pinning, submodule rules, and the token kept out of mirrors."""
from __future__ import annotations

import os
import subprocess

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import kqi
from kqi.accounts.auth import principal_in
from kqi.data import gitsource
from kqi.errors import ServiceError
from kqi.extensions import db
from kqi.models import User
from tests.conftest import Factory

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@e"}


def git(*args, cwd):
    return subprocess.run(["git", "-c", "protocol.file.allow=always", *args], cwd=cwd, check=True,
                          capture_output=True, text=True, env=ENV).stdout.strip()


def repo_with_submodule(root, submodule_url):
    lib, model = root / "lib", root / "model"
    for folder in (lib, model):
        folder.mkdir(parents=True)
        git("init", "-q", "-b", "main", cwd=folder)
    (lib / "x.py").write_text("x = 1\n")
    git("add", ".", cwd=lib)
    git("commit", "-q", "-m", "lib", cwd=lib)
    git("submodule", "add", "-q", str(lib), "lib", cwd=model)
    git("config", "-f", ".gitmodules", "submodule.lib.url", submodule_url, cwd=model)
    git("commit", "-q", "-am", "lib", cwd=model)
    return model


def test_a_submodule_may_not_read_the_servers_own_storage(sqlite_app, tmp_path):
    api = Factory(sqlite_app).api()
    body = {"name": "j", "image": "busybox", "command": "true", "cpu": 0.1, "memory_gb": 0.1}
    sneaky = repo_with_submodule(tmp_path / "a", f"file://{sqlite_app.instance_path}/git/other.git")
    response = api.post("/api/v1/training/run", json={**body, "git": {"repository": str(sneaky)}})
    assert response.status_code == 400 and "server's own storage" in response.get_json()["error"]["message"]
    ext = repo_with_submodule(tmp_path / "b", "ext::sh -c touch% /tmp/pwned")
    response = api.post("/api/v1/training/run", json={**body, "git": {"repository": f"file://{ext}"}})
    assert response.status_code == 400 and not os.path.exists("/tmp/pwned")
    assert api.get("/api/v1/training").get_json()["total"] == 0


def test_the_default_branch_head_is_pinned_and_a_later_push_does_not_move_it(sqlite_app, tmp_path):
    api = Factory(sqlite_app).api()
    model = repo_with_submodule(tmp_path, "../lib")
    first = git("rev-parse", "HEAD", cwd=model)
    body = {"name": "j", "image": "busybox", "command": "true", "cpu": 0.1, "memory_gb": 0.1}
    job = api.post("/api/v1/training/run", json={**body, "git": {"repository": str(model)}}).get_json()
    assert job["git"] == {"repository": str(model), "branch": None, "commit": first}
    (model / "y.py").write_text("y = 2\n")
    git("add", ".", cwd=model)
    git("commit", "-q", "-m", "later", cwd=model)
    assert api.get(f"/api/v1/training/{job['id']}").get_json()["git"]["commit"] == first
    later = api.post("/api/v1/training/run", json={**body, "git": {"repository": str(model)}}).get_json()
    assert later["git"]["commit"] == git("rev-parse", "HEAD", cwd=model) != first


def test_the_domain_takes_git_allow_local_from_the_settings_it_is_handed(sqlite_app, tmp_path):
    """gitsource reads no app and no global: outside any app context, the settings passed decide."""
    model = repo_with_submodule(tmp_path, "../lib")
    username, _ = Factory(sqlite_app).user()
    settings, box = kqi.settings_of(sqlite_app), kqi.box_of(sqlite_app)
    assert settings.git_allow_local  # the app's own default
    with sqlite_app.app_context():
        engine = db.engine
    with Session(engine) as session:
        principal = principal_in(session, session.scalar(select(User).where(User.username == username)), None)
        with pytest.raises(ServiceError, match=r"local repositories are disabled on this server \(git_allow_local\)"):
            gitsource.resolve(session, settings.replace(git_allow_local=False), box, principal, {"repository": str(model)})
        pinned = gitsource.resolve(session, settings, box, principal, {"repository": str(model)})
    assert pinned["commit"] == git("rev-parse", "HEAD", cwd=model)
