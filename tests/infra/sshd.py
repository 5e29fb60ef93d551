"""A real sshd on 127.0.0.1 for tests (plain functions, no pytest).

``start_sshd(base_dir)`` generates an ed25519 host key and an ed25519 client
key under ``base_dir/ssh``, authorizes the client key for root, and runs
``/usr/sbin/sshd -D`` (no system config: ``-f /dev/null``) on a free loopback
port. It returns an ``SshServer`` (port, client_key, host_key_fingerprint as
``ssh-keygen -lf`` prints it, host_public_key for known_hosts pinning, pid).
``stop_sshd`` kills it by pid.

Sessions get ``PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`` (or ``session_path``).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import time

SSHD = "/usr/sbin/sshd"
SESSION_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SshdError(RuntimeError):
    pass


@dataclasses.dataclass
class SshServer:
    host: str
    port: int
    user: str
    client_key: str  # path of the client's private key (ed25519, no passphrase)
    host_key_fingerprint: str  # "SHA256:..."
    host_public_key: str  # "ssh-ed25519 AAAA..." (for a known_hosts line)
    pid: int
    base_dir: str
    proc: subprocess.Popen | None = dataclasses.field(default=None, repr=False, compare=False)

    def __iter__(self):  # port, key, fingerprint = server
        return iter((self.port, self.client_key, self.host_key_fingerprint))

    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_public_key}"

    def connect(self, timeout: float = 10):
        """A connected paramiko SSHClient that pins this server's host key."""
        import paramiko

        client = paramiko.SSHClient()
        keytype, b64 = self.host_public_key.split()[:2]
        client.get_host_keys().add(
            f"[{self.host}]:{self.port}", keytype, paramiko.PKey.from_type_string(keytype, base64.b64decode(b64)),
        )
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            self.host, port=self.port, username=self.user,
            pkey=paramiko.Ed25519Key.from_private_key_file(self.client_key),
            timeout=timeout, allow_agent=False, look_for_keys=False,
        )
        return client

    def stop(self) -> None:
        stop_sshd(self)


def missing_requirements() -> list[str]:
    missing = []
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    if not shutil.which("ssh-keygen"):
        missing.append("ssh-keygen")
    if os.geteuid() != 0:
        missing.append("root (sshd that logs in as root)")
    return missing


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: str, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )


def reap(ssh_dir: str) -> None:
    """Kill an sshd left running from ``ssh_dir`` by a crashed run."""
    try:
        with open(os.path.join(ssh_dir, "sshd.pid")) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if ssh_dir.encode() not in f.read():
                return  # pid reused by something else
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass


def start_sshd(base_dir: str, timeout: float = 15.0, session_path: str = SESSION_PATH) -> SshServer:
    missing = missing_requirements()
    if missing:
        raise SshdError("cannot start sshd, missing: " + ", ".join(missing))
    d = os.path.join(os.path.realpath(base_dir), "ssh")
    if os.path.exists(d):
        reap(d)
        shutil.rmtree(d)
    os.makedirs(d, mode=0o700)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
    host_key = os.path.join(d, "host_ed25519")
    client_key = os.path.join(d, "client_ed25519")
    _keygen(host_key, "kqi-test-host")
    _keygen(client_key, "kqi-test-client")
    auth = os.path.join(d, "authorized_keys")
    shutil.copyfile(client_key + ".pub", auth)
    os.chmod(auth, 0o600)
    fp = subprocess.run(
        ["ssh-keygen", "-lf", host_key + ".pub"], check=True, stdout=subprocess.PIPE, text=True
    ).stdout.split()[1]
    with open(host_key + ".pub") as f:
        host_pub = " ".join(f.read().split()[:2])

    pidfile = os.path.join(d, "sshd.pid")
    last = ""
    for _attempt in range(5):
        port = _free_port()
        log = os.path.join(d, "sshd.log")
        cmd = [
            SSHD, "-D", "-e", "-f", "/dev/null",
            "-p", str(port),
            "-h", host_key,
            "-o", "ListenAddress=127.0.0.1",
            "-o", f"PidFile={pidfile}",
            "-o", f"AuthorizedKeysFile={auth}",
            "-o", "StrictModes=no",
            "-o", "PermitRootLogin=prohibit-password",
            "-o", "PasswordAuthentication=no",
            "-o", "KbdInteractiveAuthentication=no",
            "-o", "UsePAM=no",
            "-o", "UseDNS=no",
            "-o", "Subsystem=sftp internal-sftp",
            "-o", f"SetEnv=PATH={session_path}",
            "-o", "MaxStartups=100",
            "-o", "MaxSessions=100",
            "-o", "LogLevel=ERROR",
        ]
        with open(log, "wb") as logf:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(64).startswith(b"SSH-"):
                        return SshServer(
                            host="127.0.0.1", port=port, user="root", client_key=client_key,
                            host_key_fingerprint=fp, host_public_key=host_pub,
                            pid=proc.pid, base_dir=d, proc=proc,
                        )
            except OSError:
                time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        with open(log, errors="replace") as f:
            last = f.read()[-2000:]
        if "Address already in use" not in last:
            break
    raise SshdError(f"sshd did not start:\n{last}")


def stop_sshd(server: SshServer, remove_data: bool = True) -> None:
    try:
        os.kill(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    if server.proc is not None:
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    if remove_data:
        shutil.rmtree(server.base_dir, ignore_errors=True)
