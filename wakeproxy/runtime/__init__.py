"""Container engines behind one interface (L{wakeproxy.runtime.interface}): Docker, and an in-memory fake."""
