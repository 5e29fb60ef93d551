"""The `kqi` command against a live server (waitress in a thread, scheduler running): login and token
file, every training verb on a real engine, data and datasets with uploads and downloads, --json,
and the exit codes scripts rely on."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from kqi import shutdown as stop_app
from kqi.extensions import db
from kqi.models import Role
from kqi_cli import client as exits
from kqi_cli.main import cli
from tests.browser import LiveServer
from tests.conftest import Factory, make_app

IMAGE = "kqi-test/busybox:1"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    app = make_app(tmp_path_factory.mktemp("cli"), "", scheduler_enabled=True, scheduler_interval_s=0.5,
                   login_max_failures=3)
    factory = Factory(app)
    server = LiveServer(app).start()
    app.extensions["kqi_scheduler"].start()
    yield SimpleNamespace(app=app, url=server.url, factory=factory)
    stop_app(app)
    server.stop()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def kqi(tmp_path, live):
    """Run `kqi ARGS` in-process with its own config folder; returns (exit code, stdout, stderr)."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "KQI_SERVER": "", "KQI_TOKEN": "", "KQI_PASSWORD": ""}

    def run(*args, input=None):
        result = CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    run.config = tmp_path / "config" / "kqi" / "config.json"
    return run


def logged_in(kqi, live, tenant="default", role=Role.USER, admin=False):
    username, password = live.factory.user(tenant, role, admin=admin)
    code, out, err = kqi("account", "login", "--server", live.url, "-u", username, "-p", password)
    assert code == 0, err
    return username


def test_login_keeps_the_token_private_and_switches_tenant(kqi, live):
    username, password = live.factory.user("cli-a")
    code, out, _ = kqi("account", "login", "--server", live.url, "--username", username, input=f"{password}\n")
    assert code == 0 and f"as {username}, tenant cli-a" in out
    assert stat.S_IMODE(kqi.config.stat().st_mode) == 0o600 and stat.S_IMODE(kqi.config.parent.stat().st_mode) == 0o700
    saved = json.loads(kqi.config.read_text())
    assert saved["server"] == live.url and saved["token"].startswith("kqi_") and password not in kqi.config.read_text()

    code, out, _ = kqi("--json", "account", "get")
    assert code == 0 and json.loads(out)["tenant"]["name"] == "cli-a"
    from kqi.accounts import auth as accounts
    from kqi.models import User

    with live.app.app_context():
        user = db.session.query(User).filter_by(username=username).one()
        accounts.add_membership(db.session, user, accounts.get_or_create_tenant(db.session, "cli-b"), Role.MANAGER)
        db.session.commit()
    assert kqi("account", "switch-tenant", "cli-b")[0] == 0
    code, out, _ = kqi("account", "get")
    assert code == 0 and "cli-b" in out and "manager" in out
    code, _, err = kqi("account", "switch-tenant", "cli-nope")
    assert code == exits.FORBIDDEN and "not a member" in err


def test_exit_codes_scripts_rely_on(kqi, live):
    assert kqi("training", "list")[0] == exits.UNAUTHORIZED  # not logged in
    username, password = live.factory.user()
    code, _, err = kqi("account", "login", "-s", live.url, "-u", username, "-p", "wrong-password")
    assert code == exits.UNAUTHORIZED and "wrong username or password" in err
    for _ in range(2):
        kqi("account", "login", "-s", live.url, "-u", username, "-p", "wrong-password")
    code, _, err = kqi("account", "login", "-s", live.url, "-u", username, "-p", password)
    assert code == exits.RATE_LIMITED and "too many failed logins" in err

    logged_in(kqi, live)
    assert kqi("training", "get", "999999")[0] == exits.NOT_FOUND
    code, _, err = kqi("training", "create", "-n", "Bad Name", "-i", IMAGE, "-c", "true", "--cpu", "1", "--memory-gb", "1")
    assert code == exits.INVALID and "(field: name)" in err
    assert kqi("node", "list")[0] == exits.FORBIDDEN
    assert kqi("training", "create", "-n", "x")[0] == exits.USAGE
    code, _, err = kqi("training", "create", "-n", "x", "-i", IMAGE, "-c", "true", "--cpu", "1", "--memory-gb", "1",
                       "--env", "no-equals")
    assert code == exits.USAGE
    saved = json.loads(kqi.config.read_text())
    kqi.config.write_text(json.dumps(dict(saved, server="http://127.0.0.1:9")))
    assert kqi("training", "list")[0] == exits.UNAVAILABLE


def test_installed_command_runs_with_env_credentials(live, tmp_path):
    """The console script from `pip install -e .`, with KQI_SERVER/KQI_TOKEN instead of a config file."""
    kqi_bin = Path(sys.executable).with_name("kqi")
    if not kqi_bin.exists():
        pytest.fail(f"{kqi_bin} is missing: `pip install -e .` (make test does it)")
    api = live.factory.api("cli-bin")
    env = {**os.environ, "KQI_SERVER": live.url, "KQI_TOKEN": api.token, "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run([str(kqi_bin), "--json", "training", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"] == 0
    missing = subprocess.run([str(kqi_bin), "training", "get", "424242"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == exits.NOT_FOUND and "job not found" in missing.stderr


def test_data_and_datasets_upload_and_download(kqi, live, tmp_path):
    logged_in(kqi, live, "cli-data")
    first, second = tmp_path / "train.csv", tmp_path / "extra.bin"
    first.write_text("a,b\n1,2\n")
    second.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    code, out, err = kqi("data", "create", "-n", "mnist", "--tag", "images", str(first))
    assert code == 0, err
    data_id = int(out)
    assert "uploading" in err  # the progress bar, on stderr
    code, out, _ = kqi("--json", "data", "upload-files", str(data_id), str(second))
    assert code == 0 and {f["name"] for f in json.loads(out)["files"]} == {"train.csv", "extra.bin"}
    code, out, _ = kqi("data", "list", "--tag", "images")
    assert code == 0 and "mnist" in out

    code, _, err = kqi("data", "download-files", str(data_id), "-d", str(tmp_path / "got"))
    assert code == 0, err
    assert (tmp_path / "got" / "extra.bin").read_bytes() == second.read_bytes()
    assert (tmp_path / "got" / "train.csv").read_text() == "a,b\n1,2\n"

    code, out, err = kqi("dataset", "create", "-n", "digits", "--training", str(data_id))
    assert code == 0, err
    dataset_id = int(out)
    code, _, err = kqi("dataset", "download-files", str(dataset_id), "-d", str(tmp_path / "ds"))
    assert code == 0, err
    assert (tmp_path / "ds" / "training" / str(data_id) / "extra.bin").read_bytes() == second.read_bytes()
    assert kqi("dataset", "delete", str(dataset_id))[0] == 0
    assert kqi("data", "delete", str(data_id))[0] == 0
    assert kqi("data", "get", str(data_id))[0] == exits.NOT_FOUND


@pytest.mark.engines
def test_training_verbs_on_a_real_engine(kqi, live, tmp_path, docker_engines_clean):
    admin = live.factory.api(admin=True, role=Role.ADMIN)
    engine = docker_engines_clean[0]
    assert admin.post("/api/v1/admin/nodes", json={"name": "cli-node", "url": engine.unix_url}).status_code == 201
    logged_in(kqi, live)
    command = "echo start; sleep 1; mkdir -p /kqi/output/sub; echo 42 > /kqi/output/sub/answer.txt; echo end"
    code, out, err = kqi("training", "create", "-n", "cli-job", "-i", IMAGE, "-c", command, "--cpu", "0.2",
                         "--memory-gb", "0.0625", "-e", "GREETING=hi")
    assert code == 0, err
    job_id = int(out)
    code, out, err = kqi("training", "log", str(job_id), "--follow", "--interval", "0.3")
    assert code == 0, err
    assert out.splitlines() == ["start", "end"]  # each line once, though polled many times
    code, out, _ = kqi("--json", "training", "get", str(job_id))
    assert json.loads(out)["status"] == "Completed" and json.loads(out)["env"] == {"GREETING": "hi"}
    code, out, _ = kqi("training", "list-files", str(job_id))
    assert code == 0 and "sub/answer.txt" in out
    code, _, err = kqi("training", "download-files", str(job_id), "-d", str(tmp_path / "out"))
    assert code == 0, err
    assert (tmp_path / "out" / "sub" / "answer.txt").read_text() == "42\n"
    assert kqi("training", "download-files", str(job_id), "nope.txt")[0] == exits.NOT_FOUND

    code, out, _ = kqi("training", "create", "-n", "cli-fails", "-i", IMAGE, "-c", "echo oops; exit 3", "--cpu", "0.2",
                       "--memory-gb", "0.0625")
    code, out, err = kqi("training", "log", out.strip(), "-f", "--interval", "0.3")
    assert code == exits.JOB_FAILED and "oops" in out and "Failed" in err

    code, out, _ = kqi("training", "create", "-n", "cli-long", "-i", IMAGE, "-c", "sleep 60", "--cpu", "0.2",
                       "--memory-gb", "0.0625")
    long_id = out.strip()
    assert kqi("training", "delete", long_id)[0] == exits.INVALID  # not ended yet
    code, out, _ = kqi("training", "halt", long_id)
    assert code == 0
    code, out, _ = kqi("training", "log", long_id, "-f", "--interval", "0.3")
    assert code == exits.JOB_FAILED
    assert kqi("training", "delete", long_id)[0] == 0
    assert kqi("training", "get", long_id)[0] == exits.NOT_FOUND
    code, out, _ = kqi("--json", "training", "list", "--per-page", "1")
    listing = json.loads(out)
    assert listing["total"] == 2 and len(listing["items"]) == 1
