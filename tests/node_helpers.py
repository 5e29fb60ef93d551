"""What the node tests share: an app whose admin registers nodes over the API, and certificates."""
from __future__ import annotations

import datetime
import io
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time

import docker
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kqi.models import Role
from tests.conftest import Factory, ticked, wait_for

IMAGE = "kqi-test/busybox:1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NodeSite:
    """An app (scheduler ticked by hand), an admin API client and a user API client."""

    def __init__(self, app):
        self.app = app
        factory = Factory(app)
        self.admin = factory.api(admin=True, role=Role.ADMIN)
        self.api = factory.api()

    @property
    def scheduler(self):
        return self.app.extensions["kqi_scheduler"]

    def register(self, expect=201, **body):
        response = self.admin.post("/api/v1/admin/nodes", json=body)
        assert response.status_code == expect, response.get_json()
        return response.get_json()

    def node(self, node_id):
        return self.admin.get(f"/api/v1/admin/nodes/{node_id}").get_json()

    def put_node(self, node_id, **body):
        return self.admin.client.put(f"/api/v1/admin/nodes/{node_id}", json=body,
                                     headers={"Authorization": f"Bearer {self.admin.token}"})

    def events(self, node_id):
        return self.admin.get(f"/api/v1/admin/nodes/{node_id}/events").get_json()["items"]

    def submit(self, **fields):
        body = {"name": "job", "image": IMAGE, "command": "true", "cpu": 0.1, "memory_gb": 0.05, **fields}
        response = self.api.post("/api/v1/training/run", json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def job(self, job_id):
        return self.api.get(f"/api/v1/training/{job_id}").get_json()

    def dataset(self, files: dict[str, bytes], name="ds") -> dict:
        """A dataset of one data item with these files, in its training area (plus `data_id`)."""
        data = self.api.post("/api/v1/data", data={"name": name, "files": [(io.BytesIO(b), n) for n, b in files.items()]},
                             content_type="multipart/form-data").get_json()
        dataset = self.api.post("/api/v1/datasets", json={"name": name, "entries": {"training": [data["id"]]}})
        assert dataset.status_code == 201, dataset.get_json()
        return {**dataset.get_json(), "data_id": data["id"]}

    def log(self, job_id):
        return self.api.get(f"/api/v1/training/{job_id}/log").get_data(as_text=True)

    def wait_status(self, job_id, *statuses, timeout=60):
        return wait_for(lambda: self.job(job_id)["status"] in statuses and self.job(job_id), timeout=timeout,
                        tick=ticked(self.scheduler))

    def wait_node_state(self, node_id, state, timeout=60):
        return wait_for(lambda: self.node(node_id)["state"] == state and self.node(node_id), timeout=timeout,
                        tick=ticked(self.scheduler), interval=0.5)


def site_containers(engines, site, job_id=None):
    label = [f"kqi.site={site}"] + ([f"kqi.job={job_id}"] if job_id else [])
    found = []
    for engine in engines:
        client = docker.DockerClient(base_url=engine.unix_url, timeout=10)
        try:
            found += client.containers.list(all=True, filters={"label": label})
        finally:
            client.close()
    return found


# -- certificates for a TLS engine (a throwaway CA made by the test)

def _pem_key(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert(subject: str, key, issuer_name, issuer_key, *, ca=False, server_ip=None, client=False):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server_ip:
        builder = (builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(server_ip))]),
                                         critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    if client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class TestCA:
    """A CA that signs one server certificate (for an IP address) and client certificates."""

    __test__ = False

    def __init__(self, name: str = "kqi test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = _cert(name, self.key, self.name, self.key, ca=True)
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def server_files(self, folder: str, address: str) -> tuple[str, str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert("dockerd", key, self.name, self.key, server_ip=address)
        paths = [os.path.join(folder, n) for n in ("ca.pem", "server-cert.pem", "server-key.pem")]
        for path, text in zip(paths, (self.pem, cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))):
            with open(path, "w") as fh:
                fh.write(text)
        return tuple(paths)

    def client(self) -> tuple[str, str]:
        """(certificate PEM, key PEM) of a new client."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert("kqi", key, self.name, self.key, client=True)
        return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)


# -- real server processes (the fault tests and bench/nodes.py)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python kqi_app.py serve` in its own process, on the test's instance and database."""

    def __init__(self, tmp_path, site_id: str, database_url: str = "", **settings):
        self.port = _free_port()
        env = {**os.environ, "KQI_INSTANCE": str(tmp_path / "instance"), "KQI_SITE_ID": site_id, "KQI_SECRET_KEY": "test",
               "KQI_PORT": str(self.port), "KQI_DATABASE_URL": database_url, "KQI_SCHEDULER_INTERVAL_S": "0.5",
               "KQI_STOP_GRACE_S": "1", **{f"KQI_{k.upper()}": str(v) for k, v in settings.items()}}
        env.pop("KQI_CONFIG", None)
        self.log = open(tmp_path / f"serve-{self.port}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "kqi_app.py", "serve"], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_for(self._up, timeout=30)
        except BaseException:
            self.kill()
            raise

    def _up(self):
        assert self.proc.poll() is None, open(self.log.name).read()[-3000:]
        try:  # before the web workers have loaded, a connection waits in the socket's backlog
            return requests.get(f"{self.url}/api/v1/openapi.json", timeout=10).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=20)
        self.log.close()


class Http:
    def __init__(self, token: str):
        self.headers = {"Authorization": f"Bearer {token}"}

    def submit(self, server, **fields):
        body = {"name": "job", "image": IMAGE, "cpu": 0.1, "memory_gb": 0.05, **fields}
        response = requests.post(f"{server.url}/api/v1/training/run", json=body, headers=self.headers, timeout=10)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def job(self, server, job_id):
        return requests.get(f"{server.url}/api/v1/training/{job_id}", headers=self.headers, timeout=10).json()

    def wait(self, server, job_ids, *statuses, timeout=60):
        wait_for(lambda: all(self.job(server, i)["status"] in statuses for i in job_ids), timeout=timeout, interval=0.3)
        return [self.job(server, i) for i in job_ids]


def container_starts(engines, site: str, since: float) -> dict[int, int]:
    """How many times each of the site's job containers was started, from the engines' own events."""
    counts: dict[int, int] = {}
    for engine in engines:
        client = docker.APIClient(base_url=engine.unix_url, timeout=10)
        try:
            for event in client.events(since=int(since), until=int(time.time()) + 1, decode=True,
                                       filters={"event": "start", "label": f"kqi.site={site}"}):
                job_id = int(event["Actor"]["Attributes"]["kqi.job"])
                counts[job_id] = counts.get(job_id, 0) + 1
        finally:
            client.close()
    return counts
