"""The real parts the suite runs against: Docker engines, PostgreSQL, sshd."""

from __future__ import annotations

import io
import tarfile
import uuid

import docker
import pytest

from tests.infra.plugin import BUSYBOX_IMAGE


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _untar_one(chunks) -> dict[str, bytes]:
    tf = tarfile.open(fileobj=io.BytesIO(b"".join(chunks)))
    return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


def test_engines_are_separate_hosts(docker_engines):
    assert len(docker_engines) >= 2
    addresses = {e.address for e in docker_engines}
    assert len(addresses) == len(docker_engines)
    for e in docker_engines:
        assert e.address.startswith("10.213.")
        # the tcp:// URL works too (the engine listens on its namespace address)
        c = docker.DockerClient(base_url=e.tcp_url, timeout=10)
        try:
            assert c.ping()
            info = c.info()
        finally:
            c.close()
        assert info["DockerRootDir"].startswith(e.base_dir)


def test_each_engine_runs_a_container_over_the_engine_api(docker_engines_clean):
    for e in docker_engines_clean:
        client = e.client()
        try:
            c = client.containers.create(
                BUSYBOX_IMAGE,
                ["sh", "-c", "cat /work/in.txt; echo hi; mkdir -p /out; echo done > /out/result.txt; ip -4 addr show eth0"],
            )
            try:
                c.put_archive("/", _tar({"work/in.txt": b"input from the host\n"}))
                c.start()
                assert c.wait(timeout=30)["StatusCode"] == 0
                logs = c.logs().decode()
                assert "input from the host" in logs
                assert "hi" in logs
                assert "172.17." in logs  # default bridge inside the engine's namespace
                stream, _stat = c.get_archive("/out/result.txt")
                assert _untar_one(stream) == {"result.txt": b"done\n"}
            finally:
                c.remove(force=True)
        finally:
            client.close()


def test_default_command_is_sh(docker_engines_clean):
    client = docker_engines_clean[0].client()
    try:
        assert client.images.get(BUSYBOX_IMAGE).attrs["Config"]["Cmd"] == ["sh"]
        out = client.containers.run(BUSYBOX_IMAGE, ["echo", "hi"], remove=True)
        assert out == b"hi\n"
    finally:
        client.close()


def test_engines_are_independent(docker_engines_clean):
    a, b = docker_engines_clean[:2]
    name = f"only-on-a-{uuid.uuid4().hex[:8]}"
    ca, cb = a.client(), b.client()
    try:
        ca.containers.create(BUSYBOX_IMAGE, ["true"], name=name)
        assert name in {c.name for c in ca.containers.list(all=True)}
        assert name not in {c.name for c in cb.containers.list(all=True)}
        with pytest.raises(docker.errors.NotFound):
            cb.containers.get(name)
    finally:
        ca.close()
        cb.close()


def test_published_port_on_engine_address(docker_engines_clean):
    e = docker_engines_clean[0]
    client = e.client()
    try:
        c = client.containers.run(
            BUSYBOX_IMAGE,
            ["sh", "-c", "echo pong > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"],
            detach=True, ports={"8080/tcp": ("0.0.0.0", None)},
        )
        c.reload()
        port = int(c.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
        import time
        import urllib.request

        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://{e.address}:{port}/index.html", timeout=2) as r:
                    assert r.read() == b"pong\n"
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        client.close()


def test_postgres_url_connects(postgres_server):
    import sqlalchemy as sa

    assert postgres_server.url.startswith("postgresql+psycopg://kqi:")
    engine = sa.create_engine(postgres_server.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar() == 1
            assert conn.execute(sa.text("select current_user")).scalar() == "kqi"
    finally:
        engine.dispose()


def test_postgres_create_database(postgres_server):
    import sqlalchemy as sa

    url = postgres_server.create_database("kqi_infra_extra")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (x int)"))
            conn.execute(sa.text("insert into t values (42)"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("select current_database()")).scalar() == "kqi_infra_extra"
            assert conn.execute(sa.text("select x from t")).scalar() == 42
    finally:
        engine.dispose()
    # fresh again: the table is gone
    url = postgres_server.create_database("kqi_infra_extra")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select to_regclass('t')")).scalar() is None
    finally:
        engine.dispose()


def test_sshd_runs_a_command_with_a_pinned_host_key(sshd_server):
    port, key, fingerprint = sshd_server
    assert fingerprint.startswith("SHA256:")
    client = sshd_server.connect()
    try:
        _, out, _ = client.exec_command("echo hello-from-$(id -u)")
        assert out.read() == b"hello-from-0\n"
        assert out.channel.recv_exit_status() == 0
    finally:
        client.close()


def test_sshd_refuses_unknown_host_key(sshd_server):
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException):
        client.connect(
            "127.0.0.1", port=sshd_server.port, username="root",
            key_filename=sshd_server.client_key, allow_agent=False, look_for_keys=False, timeout=10,
        )
    client.close()


def test_sshd_reaches_an_engine(sshd_server, docker_engines):
    sock = docker_engines[0].socket_path
    client = sshd_server.connect()
    try:
        _, out, err = client.exec_command(f"docker -H unix://{sock} version --format '{{{{.Server.Version}}}}'")
        version = out.read().decode().strip()
        assert out.channel.recv_exit_status() == 0, err.read().decode()
        assert version
    finally:
        client.close()
