"""The node registration form and API document are drawn from the backends' credentials schemas:
a backend's fields appear, and the schema's messages come back next to the form."""
from __future__ import annotations

import re

from kqi.models import Role
from tests.backends.test_registry import plain  # noqa: F401  (the fixture)
from tests.test_admin_pages import browser


def _fields(html: str) -> list[str]:
    return re.findall(r'<(?:textarea|input) name="([a-z_]+)"', html)


def test_the_form_lists_each_backends_credentials_and_shows_the_schemas_message(sqlite_app):
    admin = browser(sqlite_app, role=Role.ADMIN, admin=True)
    html = admin.get("/nodes").get_data(as_text=True)
    assert _fields(html)[-5:] == ["tls_ca", "tls_cert", "tls_key", "ssh_private_key", "ssh_host_key_fingerprint"]
    assert "TLS (tcp://): CA, Client certificate, Client key" in html
    assert "SSH (ssh://): Private key, Host key fingerprint" in html

    answer = admin.post("/nodes", data={"csrf_token": admin.csrf, "name": "n1", "url": "ssh://kqi@10.0.0.5",
                                        "ssh_host_key_fingerprint": "SHA256:" + "a" * 43})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 422 and "an ssh:// node needs ssh_private_key" in page
    assert 'value="SHA256:' in page  # the fingerprint is no secret: kept in the form


def test_a_credential_of_another_backend_is_refused(plain, sqlite_app):  # noqa: F811  (plain first: its settings)
    admin = browser(sqlite_app, role=Role.ADMIN, admin=True)
    answer = admin.post("/nodes", data={"csrf_token": admin.csrf, "name": "n1", "url": "plain:///x",
                                        "tls_ca": "-----BEGIN CERTIFICATE-----\n"})
    assert answer.status_code == 422 and "tls_ca is not for plain nodes" in answer.get_data(as_text=True)


def _node_documents(app) -> tuple[dict, dict]:
    paths = app.test_client().get("/api/v1/openapi.json").get_json()["paths"]
    register = paths["/admin/nodes"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    node = paths["/admin/nodes/{node_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    return register, node


def test_the_api_document_lists_the_credential_fields_and_transports(sqlite_app):
    register, node = _node_documents(sqlite_app)
    assert {"tls_ca", "tls_cert", "tls_key", "ssh_private_key", "ssh_host_key_fingerprint"} <= set(register["properties"])
    assert register["properties"]["ssh_host_key_fingerprint"]["pattern"] == "^SHA256:[A-Za-z0-9+/]{43}$"
    assert node["properties"]["transport"]["enum"] == ["unix", "tcp", "tls", "ssh"]


def test_the_api_document_is_built_with_the_backends_registered_by_then(plain, sqlite_app):  # noqa: F811
    register, node = _node_documents(sqlite_app)
    assert node["properties"]["transport"]["enum"] == ["unix", "tcp", "tls", "ssh", "plain"]
    assert "plain://" in register["properties"]["url"]["description"]
