"""pytest plugin: real Docker engines, PostgreSQL and sshd for the test suite.

Enable with ``pytest_plugins = ["tests.infra.plugin"]`` in tests/conftest.py
(or ``-p tests.infra.plugin``). Session-scoped fixtures:

* ``docker_engines`` -> ``list[Engine]`` (``KQI_TEST_ENGINES``, default 2),
  each a dockerd in its own network namespace, ``kqi-test/busybox:1``
  (default command ``sh``) imported into every one.
* ``postgres_server`` -> ``PostgresServer`` (``.url``, ``.create_database(name)``).
* ``sshd_server`` -> ``SshServer`` (``.port``, ``.client_key``,
  ``.host_key_fingerprint``, ``.host_public_key``, ``.connect()``).

Function-scoped helper: ``docker_engines_clean`` (the same engines; removes
the containers and volumes a test created when it ends).

Whatever the collected tests need is started once, in parallel, as soon as
collection is done, and stopped (by pid) at the end of the session. A part
that cannot be started for lack of something on the machine (binary, root)
skips the tests that need it, or fails them when ``CI=true``; run
``scripts/test-deps.sh`` to install the parts. ``KQI_TEST_KEEP=1`` keeps the
base directory (/tmp/kqi-t-XXXXXXXX: logs, data) after the session.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import glob
import os
import signal
import tempfile
import threading
import time

import pytest

from tests.infra import engines as _engines
from tests.infra import postgres as _postgres
from tests.infra import sshd as _sshd

BUSYBOX_IMAGE = "kqi-test/busybox:1"
BASE_PREFIX = "kqi-t-"
BASE_PARENT = "/tmp"


def engine_count() -> int:
    try:
        n = int(os.environ.get("KQI_TEST_ENGINES", "2"))
    except ValueError:
        n = 2
    return max(1, min(n, _engines.MAX_ENGINES))


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_part(message: str):
    """A part a test needs is not on this machine: fail under CI=true (nothing may pass by being
    skipped there), skip elsewhere. Every test fixture that can lack a part calls this."""
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


class Unavailable(Exception):
    """A part cannot be started on this machine (missing binary, not root)."""


# --------------------------------------------------------------------------
# base directory (short, private to this session, reaped after a crash)


def _reap_stale_bases() -> None:
    _engines.reap_stale()
    for d in glob.glob(os.path.join(BASE_PARENT, BASE_PREFIX + "*")):
        lock = os.path.join(d, ".lock")
        if not os.path.isfile(lock):
            continue
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its session is alive
            _sshd.reap(os.path.join(d, "ssh"))
            _postgres.reap(os.path.join(d, "pg", "data"))
            try:
                _engines.remove_tree(d)
            except Exception:
                pass
        finally:
            os.close(fd)


class _Base:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.path: str | None = None
        self._fd: int | None = None

    def get(self) -> str:
        with self._lock:
            if self.path is None:
                try:
                    _reap_stale_bases()
                except Exception:
                    pass
                path = tempfile.mkdtemp(prefix=BASE_PREFIX, dir=BASE_PARENT)
                os.chmod(path, 0o711)
                fd = os.open(os.path.join(path, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                self.path, self._fd = path, fd
            return self.path

    def remove(self) -> None:
        with self._lock:
            if self.path is None:
                return
            if os.environ.get("KQI_TEST_KEEP", "") not in ("", "0"):
                print(f"\nkqi test infra: kept {self.path}")
            else:
                try:
                    _engines.remove_tree(self.path)
                except Exception as e:  # leave it to the next session's reaper
                    print(f"\nkqi test infra: could not remove {self.path}: {e}")
            if self._fd is not None:
                os.close(self._fd)
            self.path, self._fd = None, None


# --------------------------------------------------------------------------
# the parts, started in the background and stopped at the end


def _start_engines(base: str):
    missing = _engines.missing_requirements()
    if missing:
        raise Unavailable("Docker engines: missing " + ", ".join(missing))
    engines = _engines.start_engines(engine_count(), os.path.join(base))
    try:
        _engines.build_busybox_image(engines, BUSYBOX_IMAGE)
    except BaseException:
        _engines.stop_engines(engines)
        raise
    return engines


def _start_postgres(base: str):
    missing = _postgres.missing_requirements()
    if missing:
        raise Unavailable("PostgreSQL: missing " + ", ".join(missing))
    return _postgres.start_postgres(base)


def _start_sshd(base: str):
    missing = _sshd.missing_requirements()
    if missing:
        raise Unavailable("sshd: missing " + ", ".join(missing))
    return _sshd.start_sshd(base)


_PARTS = {
    "docker_engines": (_start_engines, _engines.stop_engines),
    "postgres_server": (_start_postgres, _postgres.stop_postgres),
    "sshd_server": (_start_sshd, _sshd.stop_sshd),
}

# Fixtures that pull in a part: what the collected tests use is started in
# parallel right after collection. A fixture that gets a part dynamically
# (request.getfixturevalue) can be added from a conftest, e.g.
#     from tests.infra.plugin import FIXTURE_NEEDS
#     FIXTURE_NEEDS["db_url"] = "postgres_server"
# (without it the part still starts, only later: when first requested).
FIXTURE_NEEDS = _NEEDS = {
    "docker_engines": "docker_engines",
    "docker_engines_clean": "docker_engines",
    "busybox_image": "docker_engines",
    "postgres_server": "postgres_server",
    "sshd_server": "sshd_server",
}


class _Infra:
    def __init__(self) -> None:
        self.base = _Base()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(_PARTS), thread_name_prefix="kqi-infra")
        self._futures: dict[str, concurrent.futures.Future] = {}
        self._stopped: set[str] = set()
        self._lock = threading.Lock()
        self.timings: dict[str, float] = {}
        self._sigterm_set = False

    def _install_sigterm(self) -> None:
        """Make SIGTERM (e.g. from ``timeout``) end the session like Ctrl-C, so
        that the engines, PostgreSQL and sshd are still stopped."""
        if self._sigterm_set or threading.current_thread() is not threading.main_thread():
            return
        self._sigterm_set = True
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            def on_sigterm(signum, frame):
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                raise KeyboardInterrupt("SIGTERM")

            signal.signal(signal.SIGTERM, on_sigterm)

    def prestart(self, names) -> None:
        for name in names:
            self._future(name)

    def _future(self, name: str) -> concurrent.futures.Future:
        with self._lock:
            fut = self._futures.get(name)
            if fut is None:
                self._install_sigterm()
                start = _PARTS[name][0]

                def run(start=start, name=name):
                    t0 = time.monotonic()
                    try:
                        return start(self.base.get())
                    finally:
                        self.timings[name] = time.monotonic() - t0

                fut = self._futures[name] = self._pool.submit(run)
            return fut

    def get(self, name: str):
        try:
            return self._future(name).result()
        except Unavailable as e:
            missing_part(f"{e} (run scripts/test-deps.sh as root)")

    def stop(self, name: str) -> None:
        with self._lock:
            fut = self._futures.get(name)
            if fut is None or name in self._stopped:
                return
            self._stopped.add(name)
        try:
            value = fut.result()
        except BaseException:
            return
        _PARTS[name][1](value)

    def stop_all(self) -> None:
        errors = []
        names = list(self._futures)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(names))) as ex:
            for name, f in [(n, ex.submit(self.stop, n)) for n in names]:
                try:
                    f.result()
                except Exception as e:
                    errors.append(f"{name}: {e}")
        self._pool.shutdown(wait=True)
        self.base.remove()
        if errors:
            raise RuntimeError("kqi test infra: stop failed: " + "; ".join(errors))


_INFRA_KEY = pytest.StashKey[_Infra]()


def _infra(config) -> _Infra:
    infra = config.stash.get(_INFRA_KEY, None)
    if infra is None:
        infra = config.stash[_INFRA_KEY] = _Infra()
    return infra


def pytest_collection_finish(session):
    """Start everything the selected tests need, all at once."""
    if session.config.option.collectonly:
        return
    needed = []
    for item in session.items:
        for f in getattr(item, "fixturenames", ()):
            part = _NEEDS.get(f)
            if part and part not in needed:
                needed.append(part)
    if needed:
        _infra(session.config).prestart(needed)


def pytest_sessionfinish(session):
    infra = session.config.stash.get(_INFRA_KEY, None)
    if infra is not None:
        infra.stop_all()


def pytest_terminal_summary(terminalreporter, config):
    infra = config.stash.get(_INFRA_KEY, None)
    if infra is not None and infra.timings and config.option.verbose >= 1:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(infra.timings.items()))
        terminalreporter.write_line(f"kqi test infra start-up (parallel): {parts}")


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def docker_engines(request):
    """list[Engine]: real dockerd "hosts", busybox image imported in each."""
    infra = _infra(request.config)
    engines = infra.get("docker_engines")
    yield engines
    infra.stop("docker_engines")


@pytest.fixture
def docker_engines_clean(docker_engines):
    """The session's engines; containers and volumes a test leaves are removed."""
    import docker

    def ids(e):
        c = docker.APIClient(base_url=e.unix_url, timeout=30)
        try:
            return (
                {x["Id"] for x in c.containers(all=True)},
                {v["Name"] for v in (c.volumes().get("Volumes") or [])},
            )
        finally:
            c.close()

    before = [ids(e) for e in docker_engines]
    yield docker_engines
    for e, (cs, vs) in zip(docker_engines, before):
        c = docker.APIClient(base_url=e.unix_url, timeout=30)
        try:
            for x in c.containers(all=True):
                if x["Id"] not in cs:
                    try:
                        c.remove_container(x["Id"], force=True, v=True)
                    except Exception:
                        pass
            for v in c.volumes().get("Volumes") or []:
                if v["Name"] not in vs:
                    try:
                        c.remove_volume(v["Name"], force=True)
                    except Exception:
                        pass
        finally:
            c.close()


@pytest.fixture(scope="session")
def busybox_image(docker_engines) -> str:
    """The tag of the busybox image present on every engine."""
    return BUSYBOX_IMAGE


@pytest.fixture(scope="session")
def postgres_server(request):
    """PostgresServer: ``.url`` (db kqi), ``.create_database(name) -> url``."""
    infra = _infra(request.config)
    server = infra.get("postgres_server")
    yield server
    infra.stop("postgres_server")


@pytest.fixture(scope="session")
def sshd_server(request):
    """SshServer on 127.0.0.1: ``.port``, ``.client_key``, ``.host_key_fingerprint``."""
    infra = _infra(request.config)
    server = infra.get("sshd_server")
    yield server
    infra.stop("sshd_server")
