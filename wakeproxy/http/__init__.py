"""The proxy listener: the HTTP/1.1 relay, its wire format, the gate and the dispatch to instances."""
