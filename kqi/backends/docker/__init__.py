"""The Docker Engine backend: unix socket, TCP with TLS, or SSH to the node. Importing the package
registers it (kqi/backends/docker/backend.py); the driver itself is kqi/backends/docker/engine.py."""
from kqi.backends.docker import backend  # noqa: F401  (registers the backend)
