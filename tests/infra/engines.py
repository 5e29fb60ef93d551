"""Start and stop real Docker engines, each one a separate "host".

Every engine runs in its own network namespace, joined to the host by a veth
pair with a /30 of the dedicated test subnet 10.213.0.0/16:

    slot S, engine i:  host end 10.213.S.(4i+1)   namespace end 10.213.S.(4i+2)

The namespace end is the engine's address (``tcp://10.213.S.(4i+2):2375``);
its own ``docker0`` bridge, iptables and published ports live inside the
namespace. Only these addresses and loopback are ever targets of test traffic.

A "slot" S is claimed by holding an flock on ``/run/kqi-test/slot-S.lock`` for
as long as the engines run, so that concurrent test sessions on one machine do
not collide. A slot whose lock is free but which has leftovers (netns, veth,
processes, mounts, cgroups of a crashed run) is cleaned before it is reused.

Plain functions, no pytest: ``start_engines``, ``stop_engines``,
``build_busybox_image``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import fcntl
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import docker

STATE_DIR = Path("/run/kqi-test")
SUBNET_PREFIX = "10.213"
MAX_SLOTS = 64
MAX_ENGINES = 63
CGROUP_ROOT = Path("/sys/fs/cgroup")
BUSYBOX = "/bin/busybox"


def system_path() -> str:
    """PATH with the sbin directories (dockerd, ip, iptables live there)."""
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if d not in parts:
            parts.append(d)
    return os.pathsep.join(parts)


def _env() -> dict:
    return {**os.environ, "PATH": system_path()}


class EngineError(RuntimeError):
    pass


@dataclasses.dataclass
class Engine:
    name: str
    unix_url: str
    tcp_url: str
    netns: str
    address: str
    pid: int
    base_dir: str

    def client(self, timeout: int = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.unix_url, timeout=timeout)

    @property
    def socket_path(self) -> str:
        return self.unix_url[len("unix://"):]


# --------------------------------------------------------------------------
# naming


def _netns_name(slot: int, i: int) -> str:
    return f"kqi{slot}e{i}"


def _host_veth(slot: int, i: int) -> str:
    return f"kq{slot}h{i}"  # <= 15 chars (IFNAMSIZ)


def _ns_veth(slot: int, i: int) -> str:
    return f"kq{slot}n{i}"


def _cgroup_parent(slot: int, i: int) -> str:
    return f"kqi{slot}e{i}"


def _addresses(slot: int, i: int) -> tuple[str, str]:
    base = 4 * i
    return f"{SUBNET_PREFIX}.{slot}.{base + 1}", f"{SUBNET_PREFIX}.{slot}.{base + 2}"


# --------------------------------------------------------------------------
# small helpers


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, env=_env())
    if check and proc.returncode != 0:
        raise EngineError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_dead(pids, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    pids = list(pids)
    while True:
        for pid in pids:
            try:  # reap if it is our child
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        pids = [p for p in pids if _pid_alive(p)]
        if not pids or time.monotonic() > deadline:
            return not pids
        time.sleep(0.05)


def _mounts_under(path: str) -> list[str]:
    """Mount points at or beneath ``path``, deepest first."""
    path = os.path.realpath(path).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == path or mp.startswith(path + "/"):
                found.append(mp)
    return sorted(set(found), key=lambda m: (-m.count("/"), m))


def umount_all_under(path: str) -> None:
    for _ in range(3):
        mounts = _mounts_under(path)
        if not mounts:
            return
        for mp in mounts:
            if _run("umount", mp, check=False).returncode != 0:
                _run("umount", "-l", mp, check=False)


def remove_tree(path: str) -> None:
    """rm -rf, but never through a mount point that is still there."""
    if not os.path.lexists(path):
        return
    umount_all_under(path)
    if _mounts_under(path):
        raise EngineError(f"mounts remain under {path}; not removing it")
    shutil.rmtree(path, ignore_errors=True)


def _netns_pids(ns: str) -> list[int]:
    proc = _run("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def _cgroup_pids(parent: str) -> list[int]:
    pids: set[int] = set()
    for ctrl in ("pids", "memory", "cpu", "freezer", "systemd", "unified"):
        root = CGROUP_ROOT / ctrl / parent
        if not root.is_dir():
            continue
        for procs in root.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                pass
    # cgroup v2 (unified at the root)
    root = CGROUP_ROOT / parent
    if (CGROUP_ROOT / "cgroup.controllers").exists() and root.is_dir():
        for procs in root.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                pass
    return sorted(pids)


def _remove_cgroups(parent: str) -> None:
    roots = [CGROUP_ROOT / parent] if (CGROUP_ROOT / "cgroup.controllers").exists() else []
    if CGROUP_ROOT.is_dir():
        roots += [c / parent for c in CGROUP_ROOT.iterdir() if c.is_dir() and not c.is_symlink()]
    for root in roots:
        if not root.is_dir():
            continue
        dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in dirs + [root]:
            try:
                d.rmdir()
            except OSError:
                pass


# --------------------------------------------------------------------------
# slots


class _Slot:
    def __init__(self, slot: int, fd: int):
        self.slot = slot
        self.fd = fd

    @property
    def state_path(self) -> Path:
        return STATE_DIR / f"slot-{self.slot}.json"

    def write_state(self, state: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_path)

    def release(self) -> None:
        try:
            self.state_path.unlink()
        except FileNotFoundError:
            pass
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def _try_lock(slot: int) -> int | None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(STATE_DIR / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def _clean_slot(slot: int) -> None:
    """Remove every leftover of ``slot`` (whose lock the caller holds)."""
    state_path = STATE_DIR / f"slot-{slot}.json"
    state = {}
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text())
        except ValueError:
            state = {}
    ns_re = re.compile(rf"^kqi{slot}e(\d+)$")
    indices = set(int(i) for i in state.get("indices", []))
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        m = ns_re.match(line.split()[0]) if line.strip() else None
        if m:
            indices.add(int(m.group(1)))
    veth_re = re.compile(rf"^kq{slot}h(\d+)$")
    for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            m = veth_re.match(parts[1].strip().split("@")[0])
            if m:
                indices.add(int(m.group(1)))
    if CGROUP_ROOT.is_dir():
        cg_re = re.compile(rf"^kqi{slot}e(\d+)$")
        for ctrl in CGROUP_ROOT.iterdir():
            if ctrl.is_dir():
                for d in ctrl.iterdir() if ctrl.is_dir() else []:
                    m = cg_re.match(d.name)
                    if m and d.is_dir():
                        indices.add(int(m.group(1)))
    if not indices and not state:
        return
    for pid in state.get("pids", []):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            ours = any(d.encode() in cmdline for d in state.get("base_dirs", []))
        except OSError:
            ours = False
        if ours:  # a dockerd of that run, not a reused pid
            _kill(pid, signal.SIGKILL)
    for i in sorted(indices):
        _teardown_engine_net(slot, i, kill=True)
    for d in state.get("base_dirs", []):
        try:
            remove_tree(d)
        except EngineError:
            pass
    try:
        state_path.unlink()
    except FileNotFoundError:
        pass


def _teardown_engine_net(slot: int, i: int, kill: bool) -> None:
    ns = _netns_name(slot, i)
    cg = _cgroup_parent(slot, i)
    if kill:
        for _ in range(3):
            pids = set(_cgroup_pids(cg))
            if os.path.exists(f"/var/run/netns/{ns}"):
                pids.update(_netns_pids(ns))
            pids.discard(os.getpid())
            if not pids:
                break
            for pid in pids:
                _kill(pid, signal.SIGKILL)
            _wait_dead(pids, 5)
    _remove_cgroups(cg)
    if os.path.exists(f"/var/run/netns/{ns}"):
        _run("ip", "netns", "del", ns, check=False)
    _run("ip", "link", "del", _host_veth(slot, i), check=False)


def reap_stale() -> None:
    """Clean every slot whose owner is gone (its lock is free)."""
    if not STATE_DIR.is_dir():
        return
    for p in STATE_DIR.glob("slot-*.lock"):
        m = re.match(r"slot-(\d+)\.lock$", p.name)
        if not m:
            continue
        slot = int(m.group(1))
        fd = _try_lock(slot)
        if fd is None:
            continue
        try:
            _clean_slot(slot)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _claim_slot() -> _Slot:
    for slot in range(MAX_SLOTS):
        fd = _try_lock(slot)
        if fd is None:
            continue
        _clean_slot(slot)
        return _Slot(slot, fd)
    raise EngineError(f"all {MAX_SLOTS} engine slots under {STATE_DIR} are in use")


# --------------------------------------------------------------------------
# start / stop


@dataclasses.dataclass
class _Running:
    engine: Engine
    slot: _Slot
    index: int
    proc: subprocess.Popen
    cmd: list = dataclasses.field(default_factory=list)  # to start it again after a test killed it


# Engines started by this process, by pid, with the slot that owns them.
_RUNNING: dict[int, _Running] = {}
_SLOT_ENGINES: dict[int, set[int]] = {}


def _setup_net(slot: int, i: int) -> tuple[str, str]:
    ns, hv, nv = _netns_name(slot, i), _host_veth(slot, i), _ns_veth(slot, i)
    host_addr, ns_addr = _addresses(slot, i)
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", hv, "type", "veth", "peer", "name", nv)
    _run("ip", "link", "set", nv, "netns", ns)
    _run("ip", "addr", "add", f"{host_addr}/30", "dev", hv)
    _run("ip", "link", "set", hv, "up")
    _run("ip", "-n", ns, "addr", "add", f"{ns_addr}/30", "dev", nv)
    _run("ip", "-n", ns, "link", "set", nv, "up")
    _run("ip", "-n", ns, "link", "set", "lo", "up")
    return ns, ns_addr


def missing_requirements() -> list[str]:
    """What is missing for ``start_engines`` on this machine ([] if nothing)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces, dockerd)")
    for exe in ("dockerd", "containerd", "ip", "nsenter", "iptables"):
        if not shutil.which(exe, path=system_path()):
            missing.append(exe)
    if not os.access(BUSYBOX, os.X_OK):
        missing.append(BUSYBOX)
    return missing


def _ping(url: str) -> bool:
    try:
        c = docker.DockerClient(base_url=url, timeout=2)
        try:
            return bool(c.ping())
        finally:
            c.close()
    except Exception:
        return False


def _log_tail(path: str, n: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def start_engines(count: int, base_dir: str, timeout: float = 60.0, tls=None) -> list[Engine]:
    """Start ``count`` engines in parallel and wait until all answer.

    ``tls``: optional ``tls(address) -> (ca, cert, key)`` file paths; the engine's TCP
    socket then requires TLS with client certificates (``--tlsverify``) on port 2376.

    ``base_dir`` should be short (unix socket paths must stay < 108 bytes).
    Each engine gets ``base_dir/eI/`` for its socket, data, exec root and log.
    """
    if not 1 <= count <= MAX_ENGINES:
        raise ValueError(f"count must be 1..{MAX_ENGINES}")
    missing = missing_requirements()
    if missing:
        raise EngineError("cannot start Docker engines, missing: " + ", ".join(missing))
    reap_stale()
    slot = _claim_slot()
    base_dir = os.path.realpath(base_dir)
    started: list[_Running] = []
    state = {"owner": os.getpid(), "indices": list(range(count)), "pids": [], "base_dirs": []}
    try:
        for i in range(count):
            d = os.path.join(base_dir, f"e{i}")
            if os.path.lexists(d):
                remove_tree(d)
            os.makedirs(d, mode=0o711)
            state["base_dirs"].append(d)
            slot.write_state(state)
            sock = os.path.join(d, "docker.sock")
            if len(sock) >= 100:
                raise EngineError(f"socket path too long: {sock}")
            ns, addr = _setup_net(slot.slot, i)
            log = open(os.path.join(d, "dockerd.log"), "wb")
            cmd = [
                "nsenter", f"--net=/var/run/netns/{ns}",
                "dockerd",
                "--data-root", os.path.join(d, "data"),
                "--exec-root", os.path.join(d, "x"),
                "--pidfile", os.path.join(d, "pid"),
                "--host", f"unix://{sock}",
                *(["--host", f"tcp://{addr}:2375", "--tls=false"]  # else dockerd sleeps ~15 s to warn about plain tcp
                  if tls is None else
                  ["--host", f"tcp://{addr}:2376", "--tlsverify", *(f"--tls{name}={path}" for name, path
                                                                     in zip(("cacert", "cert", "key"), tls(addr)))]),
                "--cgroup-parent", "/" + _cgroup_parent(slot.slot, i),
                "--shutdown-timeout", "2",
                "--userland-proxy=false",
            ]
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, env=_env(),
            )
            log.close()
            state["pids"].append(proc.pid)
            slot.write_state(state)
            eng = Engine(
                name=f"node{i}", unix_url=f"unix://{sock}", tcp_url=f"tcp://{addr}:{2375 if tls is None else 2376}",
                netns=ns, address=addr, pid=proc.pid, base_dir=d,
            )
            started.append(_Running(eng, slot, i, proc, cmd))

        deadline = time.monotonic() + timeout
        pending = list(started)
        while pending:
            for r in list(pending):
                if r.proc.poll() is not None:
                    raise EngineError(
                        f"dockerd for {r.engine.name} exited with {r.proc.returncode}:\n"
                        + _log_tail(os.path.join(r.engine.base_dir, "dockerd.log"))
                    )
                if _ping(r.engine.unix_url):
                    pending.remove(r)
            if not pending:
                break
            if time.monotonic() > deadline:
                r = pending[0]
                raise EngineError(
                    f"dockerd for {r.engine.name} did not answer within {timeout:.0f} s:\n"
                    + _log_tail(os.path.join(r.engine.base_dir, "dockerd.log"))
                )
            time.sleep(0.1)
    except BaseException:
        _stop_running(started)
        for i in range(count):
            _teardown_engine_net(slot.slot, i, kill=True)
        slot.release()
        raise
    for r in started:
        _RUNNING[r.engine.pid] = r
    _SLOT_ENGINES[slot.slot] = {r.engine.pid for r in started}
    return [r.engine for r in started]


def _kill_containers(url: str) -> None:
    """SIGKILL running containers first: dockerd's own shutdown gives each
    one its stop timeout (10 s by default) before it uses the force."""
    try:
        c = docker.APIClient(base_url=url, timeout=5)
    except Exception:
        return
    try:
        for ct in c.containers(filters={"status": "running"}):
            try:
                c.kill(ct["Id"])
            except Exception:
                pass
    except Exception:
        pass
    finally:
        c.close()


def _stop_running(runs: list[_Running], timeout: float = 20.0) -> None:
    live = [r for r in runs if r.proc.poll() is None]
    if live:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(live)) as ex:
            list(ex.map(lambda r: _kill_containers(r.engine.unix_url), live))
    for r in runs:
        if r.proc.poll() is None:
            _kill(r.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for r in runs:
        try:
            r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill(r.proc.pid, signal.SIGKILL)
            r.proc.wait(timeout=10)
    # dockerd does not wait for its containerd, nor containerd for its shims:
    # let them go by themselves first (SIGTERM), and only then use the force.
    deadline = time.monotonic() + 5
    pending = {r.index: r for r in runs}
    signalled = set()
    while pending and time.monotonic() < deadline:
        for i, r in list(pending.items()):
            ns = _netns_name(r.slot.slot, i)
            pids = set(_cgroup_pids(_cgroup_parent(r.slot.slot, i)))
            if os.path.exists(f"/var/run/netns/{ns}"):
                pids.update(_netns_pids(ns))
            pids.discard(os.getpid())
            if not pids:
                del pending[i]
            for pid in pids - signalled:
                _kill(pid, signal.SIGTERM)
                signalled.add(pid)
        time.sleep(0.05)
    for r in runs:
        # whatever is still left (containerd, shims, container processes)
        _teardown_engine_net(r.slot.slot, r.index, kill=True)
        umount_all_under(r.engine.base_dir)


def kill_engine(engine: Engine) -> None:
    """SIGKILL an engine's dockerd (a node lost mid-job). Its containers' processes live on until
    ``restart_engine`` brings dockerd back, which then cleans them up as after a crash."""
    r = _RUNNING[engine.pid]
    _kill(r.proc.pid, signal.SIGKILL)
    r.proc.wait(timeout=10)


def restart_engine(engine: Engine, timeout: float = 60.0) -> None:
    """Start a killed engine again with its data (same sockets, same address); wait until it answers."""
    r = _RUNNING.pop(engine.pid)
    with open(os.path.join(engine.base_dir, "dockerd.log"), "ab") as log:
        r.proc = subprocess.Popen(r.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True, close_fds=True, env=_env())
    owned = _SLOT_ENGINES.get(r.slot.slot)
    if owned is not None:
        owned.discard(engine.pid)
        owned.add(r.proc.pid)
    engine.pid = r.proc.pid
    _RUNNING[engine.pid] = r
    deadline = time.monotonic() + timeout
    while not _ping(engine.unix_url):
        if r.proc.poll() is not None or time.monotonic() > deadline:
            raise EngineError(f"dockerd for {engine.name} did not come back:\n"
                              + _log_tail(os.path.join(engine.base_dir, "dockerd.log")))
        time.sleep(0.1)


def stop_engines(engines: list[Engine], remove_data: bool = True) -> None:
    """Stop engines started by ``start_engines`` in this process (by pid)."""
    runs = [_RUNNING.pop(e.pid) for e in engines if e.pid in _RUNNING]
    _stop_running(runs)
    errors = []
    for r in runs:
        if remove_data:
            try:
                remove_tree(r.engine.base_dir)
            except EngineError as e:
                errors.append(str(e))
        owned = _SLOT_ENGINES.get(r.slot.slot)
        if owned is not None:
            owned.discard(r.engine.pid)
            if not owned:
                del _SLOT_ENGINES[r.slot.slot]
                r.slot.release()
    if errors:
        raise EngineError("; ".join(errors))


# --------------------------------------------------------------------------
# images


def busybox_rootfs_tar() -> bytes:
    """A tar of a minimal rootfs: static busybox with a link per applet."""
    out = subprocess.run([BUSYBOX, "--list-full"], stdout=subprocess.PIPE, text=True)
    full = [p.strip().lstrip("/") for p in out.stdout.split() if p.strip()]
    if out.returncode != 0 or not full:
        plain = subprocess.run([BUSYBOX, "--list"], stdout=subprocess.PIPE, text=True, check=True)
        full = ["bin/" + p for p in plain.stdout.split()]
    buf = io.BytesIO()
    now = int(time.time())

    def add_dir(tf: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, now
        tf.addfile(ti)

    def add_file(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(data), mode, now
        tf.addfile(ti, io.BytesIO(data))

    def add_link(tf: tarfile.TarFile, name: str, target: str) -> None:
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.SYMTYPE, target, 0o777, now
        tf.addfile(ti)

    with tarfile.open(fileobj=buf, mode="w") as tf:
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home",
                  "var", "proc", "sys", "dev", "run", "mnt", "opt", "srv", "workspace"):
            add_dir(tf, d)
        add_dir(tf, "tmp", 0o1777)
        add_dir(tf, "var/tmp", 0o1777)
        with open(BUSYBOX, "rb") as f:
            add_file(tf, "bin/busybox", f.read(), 0o755)
        add_file(tf, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                 b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add_file(tf, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        seen = {"bin/busybox"}
        names = set()
        for path in full:
            names.add(path.rsplit("/", 1)[-1])
            if path not in seen:
                seen.add(path)
                add_link(tf, path, "/bin/busybox")
        for name in sorted(names):  # every applet also in /bin (and env in /usr/bin)
            for path in (f"bin/{name}", f"usr/bin/{name}" if name == "env" else None):
                if path and path not in seen:
                    seen.add(path)
                    add_link(tf, path, "/bin/busybox")
    return buf.getvalue()


def build_busybox_image(engines: list[Engine], tag: str = "kqi-test/busybox:1") -> str:
    """Import the busybox rootfs as ``tag`` into every engine (in parallel).

    The image's default command is ``["sh"]``. Returns the tag.
    """
    data = busybox_rootfs_tar()
    repo, _, version = tag.rpartition(":")
    if not repo or "/" in version:
        repo, version = tag, "latest"

    def one(e: Engine) -> None:
        c = docker.APIClient(base_url=e.unix_url, timeout=60)
        try:
            c.import_image_from_data(
                data, repository=repo, tag=version,
                changes=['CMD ["sh"]', "WORKDIR /", "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            )
            c.inspect_image(tag)
        finally:
            c.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(engines))) as ex:
        list(ex.map(one, engines))
    return tag
