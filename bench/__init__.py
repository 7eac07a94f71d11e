"""wakeproxy's benchmark harness: ``python -m bench.run [--smoke] [--only NAME]`` (see bench/README.md)."""
