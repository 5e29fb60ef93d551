"""Code from git: servers (admin), tokens (per user), and the repository a job runs, pinned.

The server keeps one bare mirror per repository URL under instance/git/ (GitPython). Every fetch
runs with the submitting user's own token, handed to that one git process as an http.extraHeader
through GIT_CONFIG_* environment variables: the token is never in a URL, a remote, a config file
on disk, a log line or a container. Fetching at submit is also the access check, so a user never
reads a private repository through a mirror someone else's token filled.

The tree at the pinned commit (submodules included, each from its own mirror) becomes a tar that
the job runner unpacks at /kqi/git; it is cached per (repository, commit).
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import posixpath
import re
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from git import GitCommandError, Repo
from sqlalchemy import select
from sqlalchemy.orm import Session

from kqi import validation as v
from kqi.accounts.auth import Principal
from kqi.config import Settings
from kqi.crypto import SecretBox
from kqi.errors import Conflict, NotFound, ServiceError
from kqi.models.data import GitServer, GitToken

KINDS = ("github", "gitlab", "gitea", "generic")
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")
COMMIT = re.compile(r"^[0-9a-fA-F]{4,40}$")
MAX_SUBMODULE_DEPTH = 5


# -- servers (admin) and tokens (users)

def _server_url(body: dict[str, Any]) -> str:
    url = v.text(body, "url", required=True, max_len=512).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServiceError("url must be an http(s) URL, e.g. https://git.example.com", field="url")
    if parts.username or parts.password:
        raise ServiceError("url must not contain credentials (users add their own tokens)", field="url")
    return url


def register_server(session: Session, body: Any) -> GitServer:
    body = v.require_object(body)
    v.reject_unknown(body, ("name", "url", "kind"))
    name = v.text(body, "name", required=True, max_len=64, pattern=SERVER_NAME,
                  rule="letters, digits, '.', '_' and '-'")
    kind = v.text(body, "kind", default="generic", max_len=16)
    if kind not in KINDS:
        raise ServiceError(f"kind must be one of {', '.join(KINDS)}", field="kind")
    if session.scalar(select(GitServer.id).where(GitServer.name == name)):
        raise Conflict(f"git server {name} already exists", field="name")
    server = GitServer(name=name, url=_server_url(body), kind=kind)
    session.add(server)
    session.flush()
    return server


def servers(session: Session) -> list[GitServer]:
    return list(session.scalars(select(GitServer).order_by(GitServer.name)))


def delete_server(session: Session, server_id: int) -> None:
    server = session.get(GitServer, server_id)
    if server is None:
        raise NotFound("git server")
    session.delete(server)
    session.flush()


def server_dict(server: GitServer) -> dict[str, Any]:
    return {"id": server.id, "name": server.name, "url": server.url, "kind": server.kind}


def set_token(session: Session, box: SecretBox, principal: Principal, body: Any) -> GitToken:
    """Store (or replace) the caller's token for one server, sealed."""
    body = v.require_object(body)
    v.reject_unknown(body, ("git_server_id", "token", "username"))
    server_id = v.number(body, "git_server_id", required=True, minimum=1, maximum=2**31, integer=True)
    server = session.get(GitServer, server_id)
    if server is None:
        raise ServiceError(f"git server {server_id} not found", field="git_server_id")
    token = v.text(body, "token", required=True, max_len=4096)
    if any(c in token for c in "\r\n"):
        raise ServiceError("token must be one line", field="token")
    username = v.text(body, "username", max_len=128, default="oauth2")
    row = session.scalar(select(GitToken).where(GitToken.user_id == principal.user.id, GitToken.git_server_id == server.id))
    if row is None:
        row = GitToken(user_id=principal.user.id, git_server_id=server.id)
        session.add(row)
    row.username = username
    row.sealed_token = box.seal(token)
    session.flush()
    return row


def tokens(session: Session, principal: Principal) -> list[GitToken]:
    return list(session.scalars(select(GitToken).where(GitToken.user_id == principal.user.id).order_by(GitToken.id)))


def delete_token(session: Session, principal: Principal, server_id: int) -> None:
    row = session.scalar(select(GitToken).where(GitToken.user_id == principal.user.id, GitToken.git_server_id == server_id))
    if row is None:
        raise NotFound("git token")
    session.delete(row)
    session.flush()


def token_dict(row: GitToken) -> dict[str, Any]:
    """Never the token itself."""
    return {"git_server_id": row.git_server_id, "server": row.server.name, "username": row.username,
            "created_at": row.created_at.isoformat(timespec="seconds") + "Z"}


# -- repository URLs and credentials

def repository_url(value: Any, instance: Path, allow_local: bool) -> str:
    """A repository URL as stored and shown (MODEL_REPOSITORY): http(s), file:// or a local path."""
    if not isinstance(value, str) or not value.strip():
        raise ServiceError("git.repository is required", field="git")
    url = value.strip()
    if len(url) > 1024 or any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise ServiceError("git.repository is too long or contains control characters", field="git")
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ServiceError("git.repository: an http(s) URL needs a host", field="git")
        if parts.username or parts.password or "@" in parts.netloc:
            raise ServiceError("git.repository must not contain credentials: add a token for its server to your "
                               "account instead", field="git")
        return url
    local = parts.path if parts.scheme == "file" else url
    if parts.scheme not in ("file", "") or not local.startswith("/"):
        raise ServiceError("git.repository must be an http(s) URL, a file:// URL or an absolute path", field="git")
    if not allow_local:
        raise ServiceError("local repositories are disabled on this server (git_allow_local)", field="git")
    resolved = Path(os.path.realpath(local))
    if resolved.is_relative_to(Path(os.path.realpath(instance))):
        raise ServiceError("git.repository may not point into the server's own storage", field="git")
    return url


def _server_for(session: Session, url: str) -> GitServer | None:
    best = None
    for server in servers(session):
        if (url == server.url or url.startswith(server.url + "/")) and (best is None or len(server.url) > len(best.url)):
            best = server
    return best


def auth_env(session: Session, box: SecretBox, user_id: int, url: str) -> dict[str, str]:
    """The environment of one git process for `url`: never prompt; the user's token, if any, as a header."""
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_COUNT": "0"}
    if urlsplit(url).scheme not in ("http", "https"):
        return env
    server = _server_for(session, url)
    row = server and session.scalar(select(GitToken).where(GitToken.user_id == user_id, GitToken.git_server_id == server.id))
    if row is not None:
        basic = base64.b64encode(f"{row.username}:{box.unseal(row.sealed_token)}".encode()).decode()
        env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                    "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
    return env


def _clean_error(exc: GitCommandError) -> str:
    lines = [line.strip() for line in str(exc.stderr or "").splitlines() if line.strip()]
    lines = [re.sub(r"^stderr: ", "", line).strip("'") for line in lines]
    return "; ".join(line for line in lines if line)[:500] or f"git exited with {exc.status}"


# -- mirrors

class Mirrors:
    """instance/git/<hash of URL>.git, one bare mirror per repository, one writer at a time."""

    def __init__(self, instance: Path):
        self.root = Path(instance) / "git"
        self.cache = Path(instance) / "cache" / "git"

    def path(self, url: str) -> Path:
        return self.root / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".git")

    @contextmanager
    def locked(self, url: str) -> Iterator[Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(url)
        with open(str(path) + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield path

    def update(self, url: str, env: dict[str, str]) -> Repo:
        """Clone or fetch the mirror with the caller's credentials; ServiceError when it cannot."""
        with self.locked(url) as path:
            try:
                if (path / "HEAD").exists():
                    repo = Repo(path)
                    repo.git.fetch("--prune", "origin", env=env)
                    return repo
                with tempfile.TemporaryDirectory(dir=self.root, prefix="clone-") as tmp:
                    Repo.clone_from(url, Path(tmp) / "m.git", mirror=True, env=env)
                    os.replace(Path(tmp) / "m.git", path)
                return Repo(path)
            except GitCommandError as exc:
                hint = " (is it private? add a token for its server in your account)" if urlsplit(url).scheme in ("http", "https") else ""
                raise ServiceError(f"cannot read git repository {url}: {_clean_error(exc)}{hint}", field="git") from None


def resolve(session: Session, settings: Settings, box: SecretBox, principal: Principal, body: Any) -> dict[str, str]:
    """{"repository", "branch", "commit"} with the commit resolved to a full SHA (pinned), fetched
    with the principal's token (unsealed with `box`). A commit wins over a branch; neither means
    the default branch's head."""
    if not isinstance(body, dict):
        raise ServiceError("git must be an object: {\"repository\": URL, \"branch\"?: ..., \"commit\"?: ...}", field="git")
    v.reject_unknown(body, ("repository", "branch", "commit"))
    url = repository_url(body.get("repository"), settings.instance_path, settings.git_allow_local)
    branch = v.text(body, "branch", max_len=255, pattern=REF, rule="not a valid branch name")
    commit = v.text(body, "commit", max_len=40, pattern=COMMIT, rule="a commit is 4 to 40 hexadecimal digits")
    if branch and (".." in branch or branch.endswith((".lock", "/"))):
        raise ServiceError("git.branch is not a valid branch name", field="git")
    repo = Mirrors(settings.instance_path).update(url, auth_env(session, box, principal.user.id, url))
    if commit:
        rev, what = f"{commit}^{{commit}}", f"commit {commit}"
    elif branch:
        rev, what = f"refs/heads/{branch}^{{commit}}", f"branch {branch}"
    else:
        rev, what = "HEAD^{commit}", "the default branch"
    try:
        sha = repo.git.rev_parse("--verify", "--quiet", rev)
    except GitCommandError:
        raise ServiceError(f"{what} not found in {url}", field="git") from None
    pinned = {"repository": url, "branch": branch, "commit": sha}
    tree_tar(session, settings, box, principal.user.id, url, sha)  # submodules must resolve now, not at start
    return pinned


# -- the tree at a commit, as a tar for /kqi/git

def _submodules(repo: Repo, commit: str) -> list[tuple[str, str, str]]:
    """(path, url as written in .gitmodules, pinned sha) of every submodule at `commit`."""
    links = {}
    for line in repo.git.ls_tree("-r", "-z", commit).split("\0"):
        meta, _, path = line.partition("\t")
        if meta.startswith("160000 "):
            links[path] = meta.split()[2]
    if not links:
        return []
    config = repo.git.config("--blob", f"{commit}:.gitmodules", "--list")
    paths, urls = {}, {}
    for line in config.splitlines():
        key, _, value = line.partition("=")
        name, _, field = key.removeprefix("submodule.").rpartition(".")
        (paths if field == "path" else urls if field == "url" else {})[name] = value
    found = []
    for name, path in paths.items():
        if path in links and name in urls:
            found.append((path, urls[name], links[path]))
    return found


def _join_url(base: str, relative: str) -> str:
    """A submodule URL written relative to its superproject (../lib.git)."""
    if not relative.startswith(("./", "../")):
        return relative
    parts = urlsplit(base)
    if parts.scheme in ("http", "https", "file"):
        joined = posixpath.normpath(posixpath.join(parts.path.rstrip("/"), relative))
        return parts._replace(path=joined).geturl()
    return posixpath.normpath(posixpath.join(base.rstrip("/"), relative))


def _has_commit(path: Path, commit: str) -> bool:
    if not (path / "HEAD").exists():
        return False
    try:
        Repo(path).git.cat_file("-e", f"{commit}^{{commit}}")
        return True
    except GitCommandError:
        return False


def _add_tree(session: Session, settings: Settings, box: SecretBox, user_id: int, url: str, commit: str, prefix: str,
              out: tarfile.TarFile, depth: int) -> None:
    mirrors = Mirrors(settings.instance_path)
    if not _has_commit(mirrors.path(url), commit):
        mirrors.update(url, auth_env(session, box, user_id, url))
        if not _has_commit(mirrors.path(url), commit):
            raise ServiceError(f"commit {commit} not found in {url}", field="git")
    repo = Repo(mirrors.path(url))
    with tempfile.TemporaryFile() as raw:
        repo.archive(raw, commit, format="tar")
        raw.seek(0)
        with tarfile.open(fileobj=raw, mode="r:") as archive:
            for member in archive:
                member.name = posixpath.join(prefix, member.name)
                if member.issym() or member.islnk() or member.isdir():
                    out.addfile(member)
                elif member.isfile():
                    out.addfile(member, archive.extractfile(member))
    if depth >= MAX_SUBMODULE_DEPTH:
        return
    for path, sub_url, sub_commit in _submodules(repo, commit):
        # the same rules as a job's own repository: no other schemes, no reading the server's storage
        target = repository_url(_join_url(url, sub_url), settings.instance_path, settings.git_allow_local)
        _add_tree(session, settings, box, user_id, target, sub_commit, posixpath.join(prefix, path), out, depth + 1)


def tree_tar(session: Session, settings: Settings, box: SecretBox, user_id: int, url: str, commit: str,
             prefix: str = "kqi/git") -> Path:
    """The cached tar of the repository at `commit` (members under `prefix`/: kqi/git/ to unpack at
    "/", none for a volume mounted at /kqi/git), built when missing."""
    mirrors = Mirrors(settings.instance_path)
    named = f"{url}@{commit}" if prefix == "kqi/git" else f"{url}@{commit}:{prefix}"  # kqi/git: as named before
    target = mirrors.cache / f"{hashlib.sha256(named.encode()).hexdigest()[:40]}.tar"
    if target.exists():
        return target
    mirrors.cache.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=mirrors.cache, suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w") as out:
            _add_tree(session, settings, box, user_id, url, commit, prefix, out, 0)
        os.replace(partial, target)
    except GitCommandError as exc:  # e.g. a gitlink without .gitmodules
        raise ServiceError(f"cannot take the tree of {url} at {commit}: {_clean_error(exc)}", field="git") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target
