"""wakeproxy: a streaming reverse proxy that wakes stopped Docker containers."""
