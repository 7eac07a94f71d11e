"""wakeproxy's tests: unit tests (fakes, clocks) and integration tests on a real Docker engine (-m docker)."""
