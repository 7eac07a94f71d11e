"""Listening endpoints get a default listen backlog (wakeproxy.listeners)."""

from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.listeners import DEFAULT_BACKLOG, listening_endpoint, with_backlog


class WithBacklogTests(SynchronousTestCase):
    def test_table(self):
        for given, expected in [
            ("tcp:8000", "tcp:8000:backlog=4096"),
            ("tcp:8000:interface=127.0.0.1", "tcp:8000:interface=127.0.0.1:backlog=4096"),
            ("TCP:8000", "TCP:8000:backlog=4096"),
            ("tcp6:8000:interface=\\:\\:1", "tcp6:8000:interface=\\:\\:1:backlog=4096"),
            ("ssl:8443:privateKey=k.pem", "ssl:8443:privateKey=k.pem:backlog=4096"),
            ("unix:/run/wp.sock", "unix:/run/wp.sock:backlog=4096"),
            ("tcp:8000:backlog=10", "tcp:8000:backlog=10"),  # the string's own backlog wins
            ("tcp:8000:interface=127.0.0.1:backlog=50", "tcp:8000:interface=127.0.0.1:backlog=50"),
            ("unix:/tmp/backlog=1", "unix:/tmp/backlog=1:backlog=4096"),  # a path, not the parameter
            ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),  # takes no backlog
        ]:
            self.assertEqual(with_backlog(given), expected, given)

    def test_default_backlog_listens(self):
        reactor = MemoryReactor()
        listening_endpoint(reactor, "tcp:8123:interface=127.0.0.1").listen(Factory())
        self.assertEqual([(p, b, i) for p, _, b, i in reactor.tcpServers], [(8123, DEFAULT_BACKLOG, "127.0.0.1")])

    def test_given_backlog_listens(self):
        reactor = MemoryReactor()
        listening_endpoint(reactor, "tcp:8123:backlog=7").listen(Factory())
        self.assertEqual([b for _, _, b, _ in reactor.tcpServers], [7])

    def test_unix(self):
        reactor = MemoryReactor()
        listening_endpoint(reactor, "unix:/tmp/wp-test.sock").listen(Factory())
        self.assertEqual(reactor.unixServers[0][2], DEFAULT_BACKLOG)
