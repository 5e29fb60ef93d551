"""Execution backends: how kqi runs containers on a node. `base` holds what every backend shares
(the driver protocol, container spec and state, errors, credentials), `registry` the backends by
URL scheme, and each backend has a package of its own that registers it.

Importing this package registers every backend, so whoever reaches the registry finds them there:
a new backend is a new package here and one more name below.
"""
from kqi.backends import docker  # noqa: F401  (registers the Docker Engine backend)
