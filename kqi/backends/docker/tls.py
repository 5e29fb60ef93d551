"""Docker over TCP with TLS: the CA, client certificate and key live only in memory.

docker-py's TLSConfig wants file paths. Instead kqi builds an `ssl.SSLContext` from the PEM texts
(the CA through `cadata`; the certificate and key through an anonymous memory file, memfd, since
`load_cert_chain` reads only paths) and mounts an adapter that uses that context and nothing else:
no system or certifi CA is ever trusted for a node.
"""
from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import requests.adapters
from docker.tls import TLSConfig

from kqi.backends.base import Credentials, NodeError


@contextmanager
def _pem_path(text: str) -> Iterator[str]:
    """A path that reads as `text` for as long as the block runs, then is gone."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("kqi-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, text.encode())
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="kqi-tls-") as folder:  # mode 0700
        path = os.path.join(folder, "pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(text)
        yield path


def ssl_context(credentials: Credentials) -> ssl.SSLContext:
    if not (credentials.tls_ca and credentials.tls_cert and credentials.tls_key):
        raise NodeError("TLS needs all three of tls_ca, tls_cert and tls_key", infrastructure=False)
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=credentials.tls_ca)
        with _pem_path(credentials.tls_cert) as cert, _pem_path(credentials.tls_key) as key:
            context.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError, TypeError) as exc:  # TypeError: cadata that is not ASCII
        raise NodeError(f"the TLS certificates cannot be used: {exc}", infrastructure=False) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _ContextAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, context: ssl.SSLContext, **kwargs):
        self._context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn, url, verify, cert):
        """The context already holds the node's CA and client certificate; requests would add certifi's."""

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self.poolmanager.connection_from_url(request.url)


class InMemoryTLS(TLSConfig):
    """A docker-py TLS configuration that mounts the in-memory context (verification on)."""

    def __init__(self, credentials: Credentials):
        super().__init__()
        self._context = ssl_context(credentials)

    def configure_client(self, client) -> None:
        client.mount("https://", _ContextAdapter(self._context))
