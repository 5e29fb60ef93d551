"""The nodes: registering them (registry), heartbeats and losing them (health), the resource
monitor and the samples the dashboard draws."""
