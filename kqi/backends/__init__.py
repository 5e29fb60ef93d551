"""Execution backends: how kqi runs containers on a node. `base` holds what every backend shares
(the container spec and state, errors, credentials); each backend has a package of its own."""
