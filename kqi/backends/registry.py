"""The registry of execution backends: which backend serves a node, by the scheme of its URL.

A `Backend` describes one way of running containers: the URL schemes it owns, what it can do
(`Capabilities`), the credentials a node of it takes (`CredentialsSchema`), its own settings keys,
and how to make a driver (`NodeDriver`, kqi/backends/base.py) for a node. Everything outside
kqi/backends/ asks this module: node registration validates URLs and credentials with the node's
backend, the scheduler loop gets drivers from it, kinds and the shell ask for capabilities. A new
backend (a Slurm cluster) is a package beside kqi/backends/docker/ that calls `register()`, and
one more import in kqi/backends/__init__.py; the planner and the views do not change.

Registration happens when the package kqi.backends is imported (its __init__ imports every
backend package), so no caller can reach this registry before the backends are in it. This
module imports no backend: each backend imports it to register itself.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from kqi import config as kqi_config
from kqi.backends.base import ContainerSpec, Credentials, NodeDriver, NodeError


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do with a container; callers that need one ask before relying on it."""

    places_itself: bool = False  # it chooses hosts and GPUs itself (a batch system): kqi assigns no GPU indices
    multi_node: bool = False  # its nodes run the parts of a gang job (nodes > 1), reaching each other by address
    published_ports: bool = False  # a container port is published on the node for users (notebooks, TensorBoard)
    exec: bool = False  # a command runs inside a running container (the job's shell)
    volumes: bool = False  # read-only inputs kept on the node and mounted (ContainerSpec.cached, kqi/jobs/node_cache.py)

    def lacking(self, spec: ContainerSpec) -> list[str]:
        """The capabilities `spec` needs that this backend lacks, in words."""
        needs = [(spec.ports, self.published_ports, "publish container ports"),
                 (spec.cached, self.volumes, "mount read-only input volumes"),
                 (spec.host_network, self.multi_node, "run the parts of a multi-node job")]
        return [words for needed, able, words in needs if needed and not able]


@dataclass(frozen=True)
class CredentialField:
    """One credential a node of the backend may carry (a field of `Credentials` and of the API)."""

    name: str
    label: str  # how the registration form names it
    pattern: re.Pattern  # searched in the value
    invalid: str  # the message when the pattern is not found ({name} is replaced)
    secret: bool = True  # sealed at rest and never shown again; False: stored with the node and shown
    max_len: int = 32768
    hint: str = ""  # the form's help beside it

    def problem(self, value: str) -> str | None:
        return None if self.pattern.search(value) else self.invalid.format(name=self.name)


@dataclass(frozen=True)
class CredentialGroup:
    """Credentials that belong together: used only with some URL schemes, perhaps required there,
    perhaps all-or-nothing, and checked as a whole by `check` (which raises NodeError)."""

    title: str  # the form's heading for the group, and the name in messages ("TLS")
    fields: tuple[str, ...]
    schemes: tuple[str, ...]  # URL schemes that take these credentials
    required: tuple[str, ...] = ()  # needed by every node of those schemes
    together: bool = False  # all of `fields`, or none
    check: Callable[[Credentials], None] | None = None  # reads the material (a key that does not load)
    check_field: str = ""  # the field a failed check is reported on


class CredentialsError(Exception):
    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def _listed(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _urls(schemes: tuple[str, ...]) -> str:
    return " or ".join(f"{scheme}://" for scheme in schemes)


@dataclass(frozen=True)
class CredentialsSchema:
    fields: tuple[CredentialField, ...] = ()
    groups: tuple[CredentialGroup, ...] = ()

    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def fields_of(self, group: CredentialGroup) -> tuple[CredentialField, ...]:
        return tuple(f for f in self.fields if f.name in group.fields)

    def check(self, creds: Credentials, scheme: str) -> None:
        """Raise CredentialsError (message, field) when `creds` do not suit a node of `scheme`.
        Each field's own format was checked by its `CredentialField` already."""
        for group in self.groups:
            given = [name for name in group.fields if getattr(creds, name)]
            if given and scheme not in group.schemes:
                raise CredentialsError(f"{_listed(group.fields)} {'are' if len(group.fields) > 1 else 'is'} for "
                                       f"{_urls(group.schemes)} nodes", group.fields[0])
            if given and group.together and len(given) < len(group.fields):
                missing = next(name for name in group.fields if name not in given)
                raise CredentialsError(f"{group.title} needs {_listed(group.fields)} together; {missing} is missing",
                                       missing)
            if scheme in group.schemes:
                missing = next((name for name in group.required if not getattr(creds, name)), None)
                if missing:
                    raise CredentialsError(f"an {scheme}:// node needs {missing}", missing)
        for group in self.groups:
            if group.check is not None and any(getattr(creds, name) for name in group.fields):
                try:
                    group.check(creds)
                except NodeError as exc:
                    raise CredentialsError(str(exc), group.check_field) from None


class Backend(ABC):
    """One execution backend. Subclasses set the attributes and implement `driver` and `timeout_s`."""

    name: str = ""
    schemes: tuple[str, ...] = ()  # the URL schemes it owns (no two backends share one)
    url_help: str = ""  # its URL forms in words, for help texts
    reaches: str = ""  # what a node URL of it reaches, in words ("cannot reach the Docker engine at ...")
    transports: tuple[str, ...] = ()  # the values of a node's "transport" it may report
    capabilities: Capabilities = Capabilities()
    credentials: CredentialsSchema = CredentialsSchema()
    config: Mapping[str, Any] = {}  # its own settings keys and their defaults (kqi/config.py: Settings.backend)

    def validate_url(self, url: str) -> str | None:
        """Why a node URL of one of its schemes is unusable, or None."""
        return None

    @abstractmethod
    def driver(self, url: str, timeout_s: int, credentials: Credentials) -> NodeDriver:
        """A driver for the node; it connects on first use, so making one never blocks."""

    def transport(self, url: str, has_credentials: bool) -> str:
        """How the node is reached, as the API shows it (one of `transports`)."""
        return urlsplit(url).scheme

    @abstractmethod
    def timeout_s(self, settings: Mapping[str, Any]) -> int:
        """The longest one call to a node of this backend may take, from the backends' settings
        (`Settings.backend`: every backend's own keys)."""

    def pins_host_key(self, url: str) -> bool:
        """Whether a node of this URL is reached over SSH with a pinned host key."""
        return False

    def scan_host_key(self, url: str, timeout_s: float) -> str:
        """The fingerprint of the host key the node presents now (raises NodeError)."""
        raise NodeError(f"{self.name} nodes have no host key", infrastructure=False)


_BACKENDS: dict[str, Backend] = {}  # by name, in registration order
_BY_SCHEME: dict[str, Backend] = {}
_CREDENTIAL_NAMES = {f.name for f in fields(Credentials)}


def register(backend: Backend) -> Backend:
    """Add a backend. Its name and schemes must be new, and its credentials fields of `Credentials`."""
    if not backend.name or backend.name in _BACKENDS:
        raise ValueError(f"backend {backend.name!r} is unnamed or registered twice")
    taken = sorted(set(backend.schemes) & set(_BY_SCHEME))
    if not backend.schemes or taken:
        raise ValueError(f"backend {backend.name!r} owns no scheme, or one another backend owns: {taken}")
    unknown = sorted(set(backend.credentials.names()) - _CREDENTIAL_NAMES)
    if unknown:
        raise ValueError(f"backend {backend.name!r} declares credentials Credentials has no field for: {unknown}")
    clash = sorted(set(backend.config) & (set(kqi_config.DEFAULTS) | set(config_defaults())))
    if clash:
        raise ValueError(f"backend {backend.name!r} declares settings that already exist: {clash}")
    grouped = {name for group in backend.credentials.groups for name in group.fields}
    if grouped != set(backend.credentials.names()):
        raise ValueError(f"backend {backend.name!r}: each credential field must be in a group, each grouped one declared")
    _BACKENDS[backend.name] = backend
    _BY_SCHEME.update(dict.fromkeys(backend.schemes, backend))
    return backend


def unregister(name: str) -> None:
    """Remove a backend (tests register throwaway ones)."""
    backend = _BACKENDS.pop(name)
    for scheme in backend.schemes:
        del _BY_SCHEME[scheme]


def all_backends() -> Iterator[Backend]:
    return iter(list(_BACKENDS.values()))


def _unknown_scheme() -> str:
    return f"url must start with {_urls(tuple(_BY_SCHEME))}"


def backend_for(url: str) -> Backend:
    """The backend owning the URL's scheme; NodeError when none does (a backend since removed)."""
    backend = _BY_SCHEME.get(urlsplit(url or "").scheme)
    if backend is None:
        raise NodeError(f"no backend serves this node: {_unknown_scheme()}", infrastructure=False)
    return backend


def capabilities_of(url: str) -> Capabilities:
    """What the node's backend can do; nothing at all for a URL no backend owns."""
    backend = _BY_SCHEME.get(urlsplit(url or "").scheme)
    return backend.capabilities if backend is not None else Capabilities()


def validate_url(url: str) -> str | None:
    """Return why a node URL is unusable, or None."""
    parts = urlsplit(url or "")
    backend = _BY_SCHEME.get(parts.scheme)
    if backend is None:
        return _unknown_scheme()
    if parts.query or parts.fragment or parts.password:
        return "url may not carry a query, a fragment or a password"
    return backend.validate_url(url)


def driver_for(url: str, timeout_s: int = 30, credentials: Credentials | None = None) -> NodeDriver:
    """A driver for the node; it connects on first use, so creating one never blocks."""
    return backend_for(url).driver(url, timeout_s, credentials or Credentials())


def refuse_unsupported(url: str, spec: ContainerSpec) -> None:
    """Raise NodeError (the request's fault, not the node's) when the node's backend cannot run `spec`."""
    backend = backend_for(url)
    lacking = backend.capabilities.lacking(spec)
    if lacking:
        raise NodeError(f"this node's backend ({backend.name}) cannot {' or '.join(lacking)}", infrastructure=False)


def timeout_s(settings: Mapping[str, Any], url: str | None = None) -> int:
    """The call timeout for a node of `url`; for a URL no backend owns (about to be refused), the
    longest any backend sets."""
    backend = _BY_SCHEME.get(urlsplit(url or "").scheme)
    if backend is not None:
        return backend.timeout_s(settings)
    return max(b.timeout_s(settings) for b in _BACKENDS.values())


def credential_fields() -> tuple[CredentialField, ...]:
    """Every credential field some backend takes, each once (the registration API's fields)."""
    found: dict[str, CredentialField] = {}
    for backend in _BACKENDS.values():
        for item in backend.credentials.fields:
            found.setdefault(item.name, item)
    return tuple(found.values())


def secret_fields() -> tuple[str, ...]:
    return tuple(f.name for f in credential_fields() if f.secret)


def config_defaults() -> dict[str, Any]:
    """Every backend's own settings keys with their defaults."""
    merged: dict[str, Any] = {}
    for backend in _BACKENDS.values():
        merged.update(backend.config)
    return merged


def all_transports() -> tuple[str, ...]:
    return tuple(dict.fromkeys(t for backend in _BACKENDS.values() for t in backend.transports))


def url_forms() -> str:
    """The URL forms of every backend, for help texts."""
    return ", ".join(backend.url_help or _urls(backend.schemes) for backend in _BACKENDS.values())

