"""Jobs' read-only inputs kept on their nodes by content, shipped once per node and shared.

A read-only input (/kqi/input, /kqi/parent, /kqi/git) is named by a content hash that
kqi/jobs/sources.py derives from the input's identity (blob hashes, stored output files' hashes,
a repository and commit) before any tar is built. On a node it is the cache volume
`kqi-cache-<site>-<hash prefix>` (labels kqi.site, kqi.cache=<hash>, kqi.bytes), filled once
through a helper container and mounted read-only by every job that needs it. A row per (node, hash)
(NodeCacheEntry) says whether the fill completed: only a "ready" row whose volume is on the node
with the right labels is mounted, so a volume an interrupted fill left is refilled, never used.
When a fill would take the node's volumes over its budget (the node's cache_gb, else the site's
node_cache_gb), the least recently used volumes that no container uses are removed first; when
none can go, the fill goes ahead over budget rather than fail the job.

On a node with `shared_storage` (a share the server and the node both mount at that path), the
server writes the input once as the folder <shared_storage>/kqi-inputs/<hash> (into a hidden
folder first, renamed when complete) and the node binds it read-only: nothing is shipped. kqi
never removes these folders: the share is the site's to prune.

Starts may run in several threads at once (per-node executors). One lock per (site, node, hash)
makes two starts that need the same missing input fill it once: the second waits for the first
and then finds it ready. A start pins what it mounts until its containers exist (Pins.release,
after which the engine refuses to remove a volume a container uses); eviction skips pinned
volumes, and those whose lock another thread holds.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from kqi.backends import registry as backends
from kqi.backends.base import LABEL_BYTES, LABEL_CACHE, LABEL_SITE, CachedInput, NodeDriver, NodeError
from kqi.models import Node, NodeCacheEntry, utcnow

log = logging.getLogger(__name__)
SHARED_FOLDER = "kqi-inputs"  # under a node's shared storage
READY, FILLING = "ready", "filling"
GB = 1024 ** 3
HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class ReadOnlyInput:
    """One read-only input of a job: where it is mounted, the hash of its content, and how to
    build its tar (`build(scratch)` returns the tar's path; called only when a node lacks it, at
    most once per start)."""

    path: str
    content_hash: str
    build: Callable[[Path], Path] = field(repr=False)
    _tar: Path | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        if not HASH.match(self.content_hash):
            raise ValueError(f"not a SHA-256 hex digest: {self.content_hash!r}")

    def tar(self, scratch: Path) -> Path:
        with self._lock:
            if self._tar is None:
                self._tar = self.build(scratch)
            return self._tar


def volume_name(site: str, content_hash: str) -> str:
    return f"kqi-cache-{re.sub(r'[^A-Za-z0-9_.-]', '-', site)[:64]}-{content_hash[:32]}"


def shared_folder(shared_storage: str, content_hash: str) -> Path:
    """Where an input lives on shared storage: built from the admin's path and a hash, nothing else."""
    if not HASH.match(content_hash):
        raise ValueError(f"not a SHA-256 hex digest: {content_hash!r}")
    return Path(shared_storage) / SHARED_FOLDER / content_hash


class _Keys:
    """Process-wide: a lock per key (made on first use, dropped when nobody holds or waits for it)
    and pin counts."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[tuple, list] = {}  # key -> [lock, holders and waiters]
        self._pins: dict[tuple, int] = {}

    def _lock(self, key: tuple) -> threading.Lock:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
            return entry[0]

    def _unref(self, key: tuple) -> None:
        with self._guard:
            entry = self._locks[key]
            entry[1] -= 1
            if not entry[1]:
                del self._locks[key]

    @contextmanager
    def held(self, key: tuple) -> Iterator[None]:
        lock = self._lock(key)
        try:
            with lock:
                yield
        finally:
            self._unref(key)

    @contextmanager
    def held_if_free(self, key: tuple) -> Iterator[bool]:
        """Hold the key's lock if nobody else does (True), without waiting (False)."""
        lock = self._lock(key)
        taken = lock.acquire(blocking=False)
        try:
            yield taken
        finally:
            if taken:
                lock.release()
            self._unref(key)

    def pin(self, key: tuple) -> None:
        with self._guard:
            self._pins[key] = self._pins.get(key, 0) + 1

    def unpin(self, key: tuple) -> None:
        with self._guard:
            left = self._pins[key] - 1
            if left:
                self._pins[key] = left
            else:
                del self._pins[key]

    def pinned(self, key: tuple) -> bool:
        with self._guard:
            return key in self._pins


_KEYS = _Keys()


class Pins:
    """What one start mounts, kept from eviction until `release` (once its containers exist)."""

    def __init__(self):
        self._keys: list[tuple] = []

    def add(self, key: tuple) -> None:
        _KEYS.pin(key)
        self._keys.append(key)

    def release(self) -> None:
        while self._keys:
            _KEYS.unpin(self._keys.pop())


def place(session: Session, node: Node, driver: NodeDriver, inputs: list[ReadOnlyInput], *, scratch: Path,
          pins: Pins, site: str, budget_gb: float) -> tuple[CachedInput, ...]:
    """Make each input available on the node (filling or writing what it lacks) and return the
    mounts for its container. Raises NodeError when the node or the shared storage fails."""
    if inputs and not backends.capabilities_of(node.url).volumes:  # before anything is built or shipped
        raise NodeError(f"this node's backend ({backends.backend_for(node.url).name}) cannot mount read-only input "
                        "volumes", infrastructure=False)
    if node.shared_storage:
        return tuple(CachedInput(item.path, host_path=str(_on_shared_storage(node.shared_storage, item, scratch)))
                     for item in inputs)
    budget = round((node.cache_gb if node.cache_gb is not None else budget_gb) * GB)
    cache = _NodeCache(session.get_bind(), node.id, driver, site, budget)
    return tuple(CachedInput(item.path, volume=cache.ensure(item, scratch, pins)) for item in inputs)


class _NodeCache:
    """The cache volumes of one node, as one start sees them. The rows are read and written in
    short sessions of their own: a completed fill stays recorded whatever becomes of the start."""

    def __init__(self, bind, node_id: int, driver: NodeDriver, site: str, budget: int):
        self.bind, self.node_id, self.driver, self.site, self.budget = bind, node_id, driver, site, budget

    def _key(self, content_hash: str) -> tuple:
        return (self.site, self.node_id, content_hash)

    def _row(self, session: Session, content_hash: str) -> NodeCacheEntry | None:
        return session.scalar(select(NodeCacheEntry).where(NodeCacheEntry.node_id == self.node_id,
                                                           NodeCacheEntry.content_hash == content_hash))

    def _intact(self, content_hash: str) -> bool:
        labels = self.driver.cache_volume(volume_name(self.site, content_hash))
        return labels is not None and labels.get(LABEL_CACHE) == content_hash and labels.get(LABEL_SITE) == self.site

    def ensure(self, item: ReadOnlyInput, scratch: Path, pins: Pins) -> str:
        """The name of the node's complete volume for the input, filled now if it has none."""
        name, key = volume_name(self.site, item.content_hash), self._key(item.content_hash)
        with _KEYS.held(key):  # a second start for the same input waits here, then finds it ready
            pins.add(key)  # under the key's lock: eviction cannot slip between this check and the mount
            with Session(self.bind) as session:
                row = self._row(session, item.content_hash)
                if row is not None and row.state == READY and self._intact(item.content_hash):
                    row.last_used_at = utcnow()
                    session.commit()
                    return name
                tar = item.tar(scratch)
                size = tar.stat().st_size
                self._make_room(session, size, keep=item.content_hash)
                if row is None:
                    row = NodeCacheEntry(node_id=self.node_id, content_hash=item.content_hash)
                    session.add(row)
                row.state, row.bytes, row.last_used_at = FILLING, size, utcnow()
                session.commit()  # before the volume exists: a crash from here on leaves a row that is not ready
            self.driver.fill_cache_volume(name, {LABEL_SITE: self.site, LABEL_CACHE: item.content_hash,
                                                 LABEL_BYTES: str(size)}, tar)
            with Session(self.bind) as session:
                row = self._row(session, item.content_hash)
                if row is None:  # the node was removed meanwhile: its rows went with it
                    raise NodeError("the node was removed while an input was shipped to it")
                row.state, row.last_used_at = READY, utcnow()
                session.commit()
            log.info("node %s: filled cache volume %s (%d bytes)", self.node_id, name, size)
            return name

    def _make_room(self, session: Session, incoming: int, keep: str) -> None:
        """Evict least recently used volumes until `incoming` more bytes fit the budget. Only a
        volume no container uses (the engine refuses the others), no start has pinned and no other
        thread is filling goes; volumes of this site without a row (left by a crash) go first."""
        with _KEYS.held(("evict", self.site, self.node_id)):
            rows = list(session.scalars(select(NodeCacheEntry).where(NodeCacheEntry.node_id == self.node_id,
                                                                     NodeCacheEntry.content_hash != keep)
                                        .order_by(NodeCacheEntry.last_used_at, NodeCacheEntry.id)))
            used = sum(row.bytes for row in rows)
            if used + incoming <= self.budget:
                return
            known = {volume_name(self.site, row.content_hash) for row in rows} | {volume_name(self.site, keep)}
            for name, labels in self.driver.cache_volumes(self.site).items():
                if name not in known and HASH.match(labels.get(LABEL_CACHE, "")):
                    self._evict(labels[LABEL_CACHE])
            for row in rows:
                if used + incoming <= self.budget:
                    break
                if self._evict(row.content_hash):
                    used -= row.bytes
                    session.execute(delete(NodeCacheEntry).where(NodeCacheEntry.id == row.id))
            session.flush()
            if used + incoming > self.budget:
                log.warning("node %s: cache over budget (%d + %d bytes > %d): the rest is in use",
                            self.node_id, used, incoming, self.budget)

    def _evict(self, content_hash: str) -> bool:
        key = self._key(content_hash)
        with _KEYS.held_if_free(key) as free:
            if not free or _KEYS.pinned(key):
                return False
            return self.driver.remove_cache_volume(volume_name(self.site, content_hash))


def _on_shared_storage(root: str, item: ReadOnlyInput, scratch: Path) -> Path:
    """The input's complete folder on shared storage, written now when it is not there yet."""
    target = shared_folder(root, item.content_hash)
    with _KEYS.held(("shared", os.path.realpath(target.parent), item.content_hash)):
        if target.is_dir() and not target.is_symlink():
            return target
        if not os.path.isdir(root):  # never made up here: an unmounted share would fill the server's own disk
            raise NodeError(f"shared storage {root} is not a folder on the kqi server (is the share mounted?)")
        try:
            target.parent.mkdir(exist_ok=True)
            for stale in target.parent.glob(f".{item.content_hash}.partial-*"):  # an interrupted write
                shutil.rmtree(stale, ignore_errors=True)
            partial = Path(tempfile.mkdtemp(prefix=f".{item.content_hash}.partial-", dir=target.parent))
            try:
                _extract(item.tar(scratch), partial)
                partial.rename(target)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
        except (OSError, tarfile.TarError) as exc:
            raise NodeError(f"shared storage {root}: cannot write an input there: {exc}") from exc
    return target


def _only_plain(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """Files, folders and symbolic links, never written through a link or outside `dest`
    (tarfile's "tar" filter); anything else (devices, hard links) is left out."""
    if not (member.isreg() or member.isdir() or member.issym()):
        return None
    return tarfile.tar_filter(member, dest)


def _extract(tar: Path, folder: Path) -> None:
    with tarfile.open(tar) as archive:
        archive.extractall(folder, filter=_only_plain)
    for current, _folders, files in os.walk(folder):  # readable by a container's user, whatever its uid
        os.chmod(current, 0o755)
        for name in files:
            path = os.path.join(current, name)
            if not os.path.islink(path):
                os.chmod(path, os.lstat(path).st_mode & 0o777 | 0o444)
