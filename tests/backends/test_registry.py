"""The backend registry: dispatch by URL scheme, what a registration may declare, the Docker
backend's capabilities and credentials schema (with the messages node registration shows), and
what a backend lacking a capability refuses."""
from __future__ import annotations

import re

import pytest

from kqi.backends import registry as backends
from kqi.backends.base import CachedInput, ContainerSpec, Credentials, NodeError
from kqi.backends.docker.backend import DOCKER
from kqi.backends.docker.engine import DockerEngineDriver
from kqi.jobs.kinds import kind_of
from kqi.kinds import notebook  # noqa: F401  (registers the notebook kind)
from kqi.models import Node
from kqi.resources import Resources
from kqi.scheduler import placement
from kqi.scheduler.model import NODE_FEATURE_MISSING, Reason

PEM_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot really a key\n-----END OPENSSH PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\n"


class Plain(backends.Backend):
    """A backend that can do none of the optional things (what a batch system's might declare)."""

    name = "plain"
    schemes = ("plain",)
    transports = ("plain",)
    capabilities = backends.Capabilities()
    config = {"plain_timeout_s": 7}

    def validate_url(self, url):
        return None if url.startswith("plain:///") else "plain:// url needs a path"

    def timeout_s(self, settings):
        return settings["plain_timeout_s"]

    def driver(self, url, timeout_s, credentials):
        raise NodeError("plain nodes are never reached in these tests")


@pytest.fixture
def plain():
    backend = backends.register(Plain())
    yield backend
    backends.unregister(backend.name)


def test_unknown_scheme_names_every_scheme_and_has_no_backend():
    assert backends.validate_url("http://x:1") == "url must start with unix:// or tcp:// or ssh://"
    assert backends.validate_url("") == "url must start with unix:// or tcp:// or ssh://"
    with pytest.raises(NodeError, match="no backend serves this node") as raised:
        backends.driver_for("gopher://x")
    assert raised.value.infrastructure is False
    assert backends.capabilities_of("gopher://x") == backends.Capabilities()


def test_the_docker_backend_owns_its_schemes_and_declares_what_it_can_do():
    for url in ("unix:///var/run/docker.sock", "tcp://10.0.0.5:2376", "ssh://kqi@10.0.0.5"):
        assert backends.backend_for(url) is DOCKER
    assert isinstance(backends.driver_for("unix:///var/run/docker.sock"), DockerEngineDriver)
    assert DOCKER.capabilities == backends.Capabilities(places_itself=False, multi_node=True, published_ports=True,
                                                        exec=True, volumes=True)
    assert backends.all_transports() == ("unix", "tcp", "tls", "ssh")
    assert DOCKER.transport("tcp://h:1", has_credentials=True) == "tls"
    assert DOCKER.transport("tcp://h:1", has_credentials=False) == "tcp"
    assert DOCKER.pins_host_key("ssh://kqi@h") and not DOCKER.pins_host_key("tcp://h:1")
    assert backends.config_defaults()["docker_timeout_s"] == 30
    assert backends.timeout_s({"docker_timeout_s": 12}, "tcp://h:1") == 12
    assert [f.name for f in backends.credential_fields()] == [
        "tls_ca", "tls_cert", "tls_key", "ssh_private_key", "ssh_host_key_fingerprint"]
    assert backends.secret_fields() == ("tls_ca", "tls_cert", "tls_key", "ssh_private_key")


@pytest.mark.parametrize("creds, scheme, field, message", [
    (Credentials(tls_ca=CERT), "unix", "tls_ca", "tls_ca, tls_cert and tls_key are for tcp:// nodes"),
    (Credentials(tls_ca=CERT), "tcp", "tls_cert", "TLS needs tls_ca, tls_cert and tls_key together; tls_cert is missing"),
    (Credentials(tls_ca=CERT, tls_cert=CERT), "tcp", "tls_key",
     "TLS needs tls_ca, tls_cert and tls_key together; tls_key is missing"),
    (Credentials(), "ssh", "ssh_private_key", "an ssh:// node needs ssh_private_key"),
    (Credentials(ssh_host_key_fingerprint="SHA256:" + "a" * 43), "ssh", "ssh_private_key",
     "an ssh:// node needs ssh_private_key"),
    (Credentials(ssh_private_key=PEM_KEY), "tcp", "ssh_private_key",
     "ssh_private_key and ssh_host_key_fingerprint are for ssh:// nodes"),
    (Credentials(ssh_private_key=PEM_KEY), "ssh", "ssh_private_key",
     "ssh_private_key is not an unencrypted Ed25519, ECDSA or RSA private key (PEM / OpenSSH)"),
    (Credentials(tls_ca=CERT, tls_cert=CERT, tls_key=CERT), "tcp", "tls_cert", None),  # the material, checked last
    (Credentials(tls_ca=CERT + "é", tls_cert=CERT, tls_key=CERT + "\udc80"), "tcp", "tls_cert", None),  # not ASCII
])
def test_docker_credentials_schema_says_what_is_wrong_and_where(creds, scheme, field, message):
    with pytest.raises(backends.CredentialsError) as raised:
        DOCKER.credentials.check(creds, scheme)
    assert raised.value.field == field
    if message is not None:
        assert str(raised.value) == message


def test_docker_credentials_schema_accepts_what_each_scheme_needs():
    DOCKER.credentials.check(Credentials(), "unix")
    DOCKER.credentials.check(Credentials(), "tcp")


def test_credential_fields_check_their_own_format():
    fields = {f.name: f for f in DOCKER.credentials.fields}
    assert fields["tls_ca"].problem("hello") == "tls_ca must be PEM text (-----BEGIN ...-----)"
    assert fields["tls_ca"].problem(CERT) is None
    assert fields["ssh_host_key_fingerprint"].problem("MD5:aa") == (
        "ssh_host_key_fingerprint: SHA256:... as `ssh-keygen -lf` prints it")
    assert fields["ssh_host_key_fingerprint"].problem("SHA256:" + "A" * 43) is None
    assert not fields["ssh_host_key_fingerprint"].secret


def test_a_registered_backend_gets_its_scheme_its_settings_and_its_url_rules(plain):
    assert backends.backend_for("plain:///x") is plain
    assert backends.validate_url("plain://host") == "plain:// url needs a path"
    assert backends.validate_url("plain:///x") is None
    assert backends.validate_url("plain:///x?y=1") == "url may not carry a query, a fragment or a password"
    assert backends.validate_url("http://x") == "url must start with unix:// or tcp:// or ssh:// or plain://"
    assert backends.config_defaults() == {"docker_timeout_s": 30, "plain_timeout_s": 7}
    assert backends.timeout_s({"docker_timeout_s": 30, "plain_timeout_s": 7}, "plain:///x") == 7
    assert backends.timeout_s({"docker_timeout_s": 3, "plain_timeout_s": 7}) == 7  # no URL yet: the longest
    assert backends.credential_fields() == DOCKER.credentials.fields  # it takes none of its own


@pytest.mark.parametrize("change, words", [
    ({"name": "docker"}, "registered twice"),
    ({"schemes": ("ssh",)}, "another backend owns"),
    ({"schemes": ()}, "owns no scheme"),
    ({"config": {"port": 1}}, "already exist"),
    ({"config": {"docker_timeout_s": 1}}, "already exist"),
    ({"credentials": backends.CredentialsSchema(fields=(
        backends.CredentialField("token", "Token", re.compile("."), "{name}"),),
        groups=(backends.CredentialGroup("T", ("token",), ("plain",)),))}, "no field for"),
    ({"credentials": backends.CredentialsSchema(fields=(
        backends.CredentialField("tls_ca", "CA", re.compile("."), "{name}"),))}, "must be in a group"),
])
def test_registration_refuses_clashes_and_undeclared_credentials(change, words):
    backend = type("Broken", (Plain,), change)()
    with pytest.raises(ValueError, match=words):
        backends.register(backend)
    assert "plain" not in {b.name for b in backends.all_backends()}


def test_a_spec_needing_what_the_backend_lacks_is_refused_before_it_starts(plain):
    spec = ContainerSpec(name="n", image="i", command="true", env={}, labels={}, resources=Resources(100, 64))
    backends.refuse_unsupported("plain:///x", spec)
    backends.refuse_unsupported("unix:///var/run/docker.sock", spec)
    needy = ContainerSpec(name="n", image="i", command="true", env={}, labels={}, resources=Resources(100, 64),
                          ports=(8888,), cached=(CachedInput("/kqi/input", volume="kqi-cache-s-0"),), host_network=True)
    backends.refuse_unsupported("unix:///var/run/docker.sock", needy)
    with pytest.raises(NodeError) as raised:
        backends.refuse_unsupported("plain:///x", needy)
    assert str(raised.value) == ("this node's backend (plain) cannot publish container ports or mount read-only input "
                                 "volumes or run the parts of a multi-node job")
    assert raised.value.infrastructure is False


def test_a_kind_needing_published_ports_is_placed_only_where_the_backend_publishes_them(plain):
    kind = kind_of("notebook")
    assert kind.needs == ("published_ports",) and kind.constrained
    docker_node = Node(name="d", url="unix:///var/run/docker.sock", allow_notebooks=True)
    plain_node = Node(name="p", url="plain:///x", allow_notebooks=True)
    flagged_off = Node(name="f", url="unix:///var/run/docker.sock", allow_notebooks=False)
    assert kind.allowed_on(docker_node) and not kind.allowed_on(plain_node) and not kind.allowed_on(flagged_off)
    assert placement.needs("notebook") == {"notebook"}  # the feature its jobs need, which nodes allowing it have
    assert "notebook" in placement.node_features(docker_node)
    assert "notebook" not in placement.node_features(plain_node) | placement.node_features(flagged_off)
    missing = Reason.of(NODE_FEATURE_MISSING, feature="notebook", partition=None)
    assert placement.words([missing]) == ("no node allows notebooks",)
