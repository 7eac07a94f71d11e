"""Waking and stopping instances: the waker, readiness probes, the idle stopper and the label policy."""
