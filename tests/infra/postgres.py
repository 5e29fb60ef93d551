"""A private PostgreSQL cluster for tests (plain functions, no pytest).

``start_postgres(base_dir)`` runs initdb as the ``postgres`` OS user into
``base_dir/pg`` and starts it with ``pg_ctl`` on a free 127.0.0.1 port (unix
socket in ``base_dir/pg/s``). It creates the role ``kqi`` (random password,
CREATEDB) and database ``kqi`` and returns a ``PostgresServer`` whose ``url``
is ``postgresql+psycopg://kqi:PASSWORD@127.0.0.1:PORT/kqi``.
``create_database(name)`` makes another fresh database owned by ``kqi`` and
returns its URL. ``stop()`` runs ``pg_ctl stop -m fast`` (and kills the
postmaster by pid if that fails).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time

PG_USER = "postgres"
DB_USER = "kqi"
DB_NAME = "kqi"


class PostgresError(RuntimeError):
    pass


def find_bindir() -> str | None:
    """Newest /usr/lib/postgresql/N/bin that has initdb, or None."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(p: str) -> tuple:
        v = p.split("/")[4]
        return tuple(int(x) for x in re.findall(r"\d+", v))

    found.sort(key=version)
    return os.path.dirname(found[-1]) if found else None


def missing_requirements() -> list[str]:
    missing = []
    if find_bindir() is None:
        missing.append("PostgreSQL server (/usr/lib/postgresql/*/bin/initdb)")
    if os.geteuid() != 0:
        missing.append("root (to run initdb as the postgres user)")
    if _runuser() is None:
        missing.append("runuser (util-linux)")
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        missing.append(f"OS user {PG_USER!r}")
    return missing


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _valid_name(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"bad database name {name!r} (use [a-z_][a-z0-9_]*)")
    return name


@dataclasses.dataclass
class PostgresServer:
    port: int
    password: str
    data_dir: str
    socket_dir: str
    bindir: str
    pid: int
    url: str
    host: str = "127.0.0.1"
    user: str = DB_USER
    database: str = DB_NAME

    def url_for(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def admin_connect(self, dbname: str = "postgres"):
        """A psycopg connection as the superuser, over the unix socket."""
        import psycopg

        return psycopg.connect(
            host=self.socket_dir, port=self.port, user=PG_USER, dbname=dbname, autocommit=True
        )

    def create_database(self, name: str, drop_existing: bool = True) -> str:
        """Create a fresh, empty database owned by ``kqi``; return its URL."""
        name = _valid_name(name)
        with self.admin_connect() as conn:
            if drop_existing:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{self.user}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        name = _valid_name(name)
        with self.admin_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        stop_postgres(self)


def _runuser() -> str | None:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    return shutil.which("runuser", path=path)


def _as_postgres(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_runuser() or "runuser", "-u", PG_USER, "--", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, cwd="/", **kw,
    )


def _postmaster_pid(data_dir: str) -> int | None:
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


def reap(data_dir: str) -> None:
    """Stop a cluster left running in ``data_dir`` by a crashed run."""
    pid = _postmaster_pid(data_dir)
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if data_dir.encode() not in f.read():
                return  # not running any more (the pid may belong to something else now)
    except OSError:
        return
    bindir = find_bindir()
    if bindir:
        _as_postgres([f"{bindir}/pg_ctl", "-D", data_dir, "-m", "immediate", "-w", "-t", "10", "stop"])
    _kill_and_wait(pid)


def _kill_and_wait(pid: int, timeout: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGQUIT)  # postmaster: immediate shutdown
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_postgres(base_dir: str, timeout: float = 60.0) -> PostgresServer:
    missing = missing_requirements()
    if missing:
        raise PostgresError("cannot start PostgreSQL, missing: " + ", ".join(missing))
    bindir = find_bindir()
    pw = pwd.getpwnam(PG_USER)
    root = os.path.join(os.path.realpath(base_dir), "pg")
    data_dir = os.path.join(root, "data")
    sock_dir = os.path.join(root, "s")
    # postgres must be able to traverse down to its directory
    os.chmod(base_dir, os.stat(base_dir).st_mode | 0o111)
    if os.path.exists(root):
        reap(data_dir)
        shutil.rmtree(root)
    os.makedirs(sock_dir, mode=0o700)
    for d in (root, sock_dir):
        os.chown(d, pw.pw_uid, pw.pw_gid)
    os.chmod(root, 0o700)

    pwfile = os.path.join(root, "pw")
    password = secrets.token_hex(16)
    with open(pwfile, "w") as f:
        f.write(secrets.token_hex(16) + "\n")  # superuser: only used over the socket (trust)
    os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    os.chmod(pwfile, 0o600)

    r = _as_postgres([
        f"{bindir}/initdb", "-D", data_dir, "-U", PG_USER, "--pwfile", pwfile,
        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
        "--locale=C", "--no-sync",
    ])
    if r.returncode != 0:
        raise PostgresError(f"initdb failed:\n{r.stdout}")
    os.unlink(pwfile)

    log = os.path.join(root, "log")
    last = ""
    for _attempt in range(5):
        port = free_port()
        opts = (
            f"-p {port} -k {sock_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200 -c shared_buffers=32MB"
        )
        r = _as_postgres([
            f"{bindir}/pg_ctl", "-D", data_dir, "-l", log, "-o", opts,
            "-w", "-t", str(int(timeout)), "start",
        ])
        if r.returncode == 0:
            break
        try:
            with open(log) as f:
                last = f.read()[-3000:]
        except OSError:
            last = r.stdout
        if "could not bind" not in last and "already in use" not in last:
            raise PostgresError(f"pg_ctl start failed:\n{r.stdout}\n{last}")
    else:
        raise PostgresError(f"pg_ctl start failed (port in use?):\n{last}")

    pid = _postmaster_pid(data_dir)
    server = PostgresServer(
        port=port, password=password, data_dir=data_dir, socket_dir=sock_dir,
        bindir=bindir, pid=pid or -1, url="",
    )
    server.url = server.url_for(DB_NAME)
    try:
        with server.admin_connect() as conn:
            conn.execute(f"CREATE ROLE \"{DB_USER}\" LOGIN CREATEDB PASSWORD '{password}'")
            conn.execute(f'CREATE DATABASE "{DB_NAME}" OWNER "{DB_USER}"')
    except BaseException:
        stop_postgres(server)
        raise
    return server


def stop_postgres(server: PostgresServer, remove_data: bool = True) -> None:
    r = _as_postgres([f"{server.bindir}/pg_ctl", "-D", server.data_dir, "-m", "fast", "-w", "-t", "20", "stop"])
    if r.returncode != 0 and server.pid > 0:
        _kill_and_wait(server.pid)
    if remove_data:
        shutil.rmtree(os.path.dirname(server.data_dir), ignore_errors=True)
