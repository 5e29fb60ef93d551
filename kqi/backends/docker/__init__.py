"""The Docker Engine backend: unix socket, TCP with TLS, or SSH to the node."""
