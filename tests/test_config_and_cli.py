"""Configuration layering, and the server command `make run` uses, as a real process."""
from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import kqi
from kqi import config
from kqi.backends import registry as backends
from tests.conftest import make_app

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_file_then_environment(tmp_path):
    file = tmp_path / "kqi.toml"
    file.write_text('port = 6000\nhost = "0.0.0.0"\nscheduler_interval_s = 5.0\n')
    settings = config.load({"KQI_CONFIG": str(file), "KQI_PORT": "7000", "KQI_SCHEDULER_ENABLED": "false"})
    assert settings.port == 7000 and settings.host == "0.0.0.0"
    assert settings.scheduler_interval_s == 5.0 and settings.scheduler_enabled is False
    assert config.load({}).port == 5000 or Path("config.toml").exists()
    assert config.load({"KQI_CONFIG": str(file)}, overrides={"port": 8000}).port == 8000  # overrides win


@pytest.mark.parametrize("content, environ, message", [
    ("nope = 1\n", {}, "unknown setting"),
    ("", {"KQI_PORT": "many"}, "^KQI_PORT must be a number, not 'many'$"),
    ("", {"KQI_SCHEDULER_ENABLED": "perhaps"}, "^KQI_SCHEDULER_ENABLED must be true or false, not 'perhaps'$"),
    ("", {"KQI_STOP_GRACE_S": "2.5"}, "^KQI_STOP_GRACE_S must be a number, not '2.5'$"),  # a whole number
    ('port = "many"\n', {}, "kqi.toml: port must be a whole number, not 'many'$"),
    ("git_allow_local = 1\n", {}, "kqi.toml: git_allow_local must be true or false, not 1$"),
    ("host = 8\n", {}, "kqi.toml: host must be text, not 8$"),
])
def test_bad_configuration_is_a_clear_error(tmp_path, content, environ, message):
    file = tmp_path / "kqi.toml"
    file.write_text(content)
    with pytest.raises(config.ConfigError, match=message):
        config.load({"KQI_CONFIG": str(file), **environ})


def test_settings_are_typed_and_frozen(tmp_path):
    file = tmp_path / "kqi.toml"
    file.write_text("heartbeat_timeout_s = 3\n")  # a whole number where a float is expected is that float
    settings = config.load({"KQI_CONFIG": str(file), "KQI_MAX_UPLOAD_GB": "0.5", "KQI_GIT_ALLOW_LOCAL": "off"})
    assert settings.heartbeat_timeout_s == 3.0 and isinstance(settings.heartbeat_timeout_s, float)
    assert settings.max_upload_gb == 0.5 and settings.max_upload_bytes == 2**29 and settings.git_allow_local is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1
    with pytest.raises(config.ConfigError, match="overrides: unknown setting"):
        config.load({"KQI_CONFIG": str(file)}, overrides={"prot": 1})
    with pytest.raises(config.ConfigError, match="overrides: port must be a whole number"):
        config.load({"KQI_CONFIG": str(file)}, overrides={"port": "5000"})
    shown = repr(config.Settings(secret_key="s3cret-key", encryption_key="k3y", database_url="postgresql://u:pw@h/d"))
    assert "s3cret-key" not in shown and "k3y" not in shown and "pw@" not in shown


def test_each_app_gets_its_own_completed_settings_and_box(tmp_path):
    """No module-global state: two apps in one process keep their own instance, site and key."""
    first, second = (make_app(tmp_path / name) for name in ("one", "two"))
    try:
        one, two = kqi.settings_of(first), kqi.settings_of(second)
        assert one.instance == str((tmp_path / "one" / "instance").resolve()) and one.instance_path.is_dir()
        assert one.site_id != two.site_id and one.database_url == f"sqlite:///{one.instance_path / 'kqi.db'}"
        assert one.encryption_key == (one.instance_path / "encryption_key").read_text().strip()
        sealed = kqi.box_of(first).seal("token")
        assert kqi.box_of(first).unseal(sealed) == "token"
        with pytest.raises(ValueError, match="encryption key"):
            kqi.box_of(second).unseal(sealed)
    finally:
        for app in (first, second):
            kqi.shutdown(app)


def test_missing_named_config_file_is_an_error(tmp_path):
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load({"KQI_CONFIG": str(tmp_path / "absent.toml")})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_command_migrates_creates_admin_and_serves(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KQI_")}
    env.update({"KQI_INSTANCE": str(tmp_path / "inst"), "KQI_PORT": str(port)})
    server = subprocess.Popen([sys.executable, "kqi_app.py", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while not any("serving on" in line for line in lines):
            assert time.monotonic() < deadline and server.poll() is None, "".join(lines)
            lines.append(server.stdout.readline())
        output = "".join(lines)
        password = re.search(r"user 'admin', password '([^']+)'", output).group(1)
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
        login = requests.post(f"{base}/api/v1/account/login", json={"username": "admin", "password": password}, timeout=5)
        assert login.status_code == 200 and login.json()["tenant"]["name"] == "default"
        assert (tmp_path / "inst" / "kqi.db").exists()
        assert password not in (tmp_path / "inst" / "kqi.db").read_bytes().decode("latin-1")
    finally:
        server.terminate()
        server.wait(timeout=30)
    # A second start keeps the admin and prints no new password.
    second = subprocess.run([sys.executable, "kqi_app.py", "create-admin"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert second.returncode == 0 and "password" not in second.stdout


def test_secrets_are_sealed_with_the_instance_key(sqlite_app):
    from kqi import crypto

    box = kqi.box_of(sqlite_app)
    sealed = box.seal("ghp_token-value")
    assert "ghp_token-value" not in sealed and box.unseal(sealed) == "ghp_token-value"
    other = crypto.SecretBox(crypto.new_key())
    with pytest.raises(ValueError, match="encryption key"):
        other.unseal(sealed)
    key_file = sqlite_app.instance_path + "/encryption_key"
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"


def test_example_config_documents_every_setting_with_its_default():
    example = ROOT / "config.example.toml"
    backend_keys = backends.config_defaults()
    settings = config.load({"KQI_CONFIG": str(example)}, backend_defaults=backend_keys)
    text = example.read_text()
    for key, default in {**config.DEFAULTS, **backend_keys}.items():  # the backends' own keys too
        assert re.search(rf"^{key} = ", text, re.M), f"config.example.toml does not document {key}"
        assert (settings.backend[key] if key in backend_keys else getattr(settings, key)) == default, key
