"""Access tokens (L{wakeproxy.http.access}) and the proxy's access gates (L{wakeproxy.http.gate}), without sockets."""

import os
import shutil
import tempfile

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from wakeproxy import answers
from wakeproxy.http.access import AccessKeys, AccessRefused
from wakeproxy.http.gate import ForwardAuthGate, OpenGate, SignedGate, strip_token
from wakeproxy.http.wire import parse_request_head

KEY = b"k" * 32
OTHER = b"o" * 32


def _head(*lines: bytes, method: bytes = b"GET"):
    return parse_request_head(b"\r\n".join((method + b" /x HTTP/1.1", b"Host: h") + lines) + b"\r\n\r\n")


class AccessKeysTests(SynchronousTestCase):
    def test_round_trip_and_refusals(self):
        keys = AccessKeys([KEY])
        token = keys.issue("app", "alice", 1000)
        self.assertEqual(keys.check(token, "app", 999), "alice")
        cases = [
            (token, "other", "another instance"),
            (token, "app", "expired"),  # checked at now=1000
            (AccessKeys([OTHER]).issue("app", "alice", 1000), "app", "wrong signature"),
            ("garbage", "app", "malformed"),
            ("!!!.???", "app", "malformed"),
            ("", "app", "malformed"),
            (token.split(".")[0] + "." + token.split(".")[0], "app", "wrong signature"),
        ]
        for given, instance, reason in cases:
            with self.assertRaises(AccessRefused) as caught:
                keys.check(given, instance, 1000)
            self.assertIn(reason, str(caught.exception), (given, instance))

    def test_rotation(self):
        old = AccessKeys([OTHER]).issue("app", "alice", 1000)
        rotated = AccessKeys([KEY, OTHER])
        self.assertEqual(rotated.check(old, "app", 10), "alice")
        self.assertEqual(rotated.check(rotated.issue("app", "bob", 1000), "app", 10), "bob")
        with self.assertRaises(AccessRefused):
            AccessKeys([OTHER]).check(rotated.issue("app", "bob", 1000), "app", 10)  # signed with the new key

    def test_short_keys_refused(self):
        self.assertRaises(ValueError, AccessKeys, [b"short"])
        self.assertRaises(ValueError, AccessKeys, [])

    def test_from_file(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "keys")
        with open(path, "wb") as f:
            f.write(b"# keys\n" + KEY + b"\n" + OTHER + b"\n")
        keys = AccessKeys.from_file(path)
        self.assertEqual(keys.check(keys.issue("a", "u", 10), "a", 1), "u")


class SignedGateTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(100)
        self.keys = AccessKeys([KEY])
        self.gate = SignedGate(self.keys, self.clock)
        self.token = self.keys.issue("app", "alice", 200).encode()

    def test_cookie_or_header_allows_and_is_removed(self):
        for lines in ((b"Cookie: instance=app; wakeproxy_access=" + self.token + b"; theme=dark",),
                      (b"Cookie: instance=app", b"X-Wakeproxy-Access: " + self.token),
                      (b"Cookie: wakeproxy_access=" + self.token, b"Cookie: instance=app")):
            head = _head(*lines)
            self.assertIsNone(self.gate.check(head, "app"), lines)
            forwarded = b"\r\n".join(head.lines)
            self.assertNotIn(self.token, forwarded)
            self.assertIn(b"instance=app", forwarded)

    def test_refusals_say_why(self):
        cases = [
            ((b"Cookie: instance=app",), "needs an access token"),
            ((b"Cookie: instance=app; wakeproxy_access=" + self.keys.issue("other", "alice", 200).encode(),),
             "another instance"),
            ((b"X-Wakeproxy-Access: nonsense.bm9uc2Vuc2U",), "signature"),
        ]
        for lines, reason in cases:
            self.assertIn(reason, self.gate.check(_head(*lines), "app"))
        self.clock.advance(100)
        self.assertIn("expired", self.gate.check(_head(b"X-Wakeproxy-Access: " + self.token), "app"))

    def test_open_gate(self):
        self.assertIsNone(OpenGate().check(_head(), "anything"))

    def test_strip_token_keeps_other_cookies(self):
        head = _head(b"Cookie: a=1; wakeproxy_access=t; b=2", b"Cookie: wakeproxy_access=t")
        strip_token(head)
        self.assertEqual([line for line in head.lines if line.startswith(b"Cookie")], [b"Cookie: a=1; b=2"])


class _Response:
    def __init__(self, code, headers, body=b""):
        self.code = code
        self.phrase = b"X"
        self.headers = Headers(headers)
        self._body = body

    def deliverBody(self, protocol):
        from twisted.web.client import ResponseDone
        from twisted.python.failure import Failure

        protocol.makeConnection(_Transport())
        protocol.dataReceived(self._body)
        protocol.connectionLost(Failure(ResponseDone()))


class _Transport:
    def abortConnection(self):
        pass

    def stopProducing(self):
        pass


class _Agent:
    def __init__(self, response):
        self.response = response
        self.calls = []

    def request(self, method, url, headers=None, body=None):
        self.calls.append((method, url, headers))
        return succeed(self.response)


class ForwardAuthGateTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()

    def verdict(self, gate, head):
        outcome = gate.check(head, "app")
        if not isinstance(outcome, Deferred):
            return outcome  # a cached answer comes at once
        results = []
        outcome.addCallback(results.append)
        return results[0]

    def test_allow_copies_named_headers(self):
        agent = _Agent(_Response(200, {b"X-User": [b"alice"], b"X-Other": [b"no"]}))
        gate = ForwardAuthGate("http://auth/check", agent, self.clock, copy_headers=["X-User"])
        head = _head(b"Cookie: instance=app", b"X-User: forged")
        self.assertIsNone(self.verdict(gate, head))
        self.assertIn(b"x-user: alice", [line.lower() for line in head.lines])
        self.assertNotIn(b"X-User: forged", head.lines)
        method, url, headers = agent.calls[0]
        self.assertEqual((method, url), (b"GET", b"http://auth/check"))
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-uri"), [b"/x"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-method"), [b"GET"])

    def test_deny_is_passed_on_and_cached(self):
        agent = _Agent(_Response(403, {b"Content-Type": [b"text/plain"]}, b"go away"))
        gate = ForwardAuthGate("http://auth/check", agent, self.clock, cache_seconds=5)
        answer = self.verdict(gate, _head(b"Cookie: instance=app"))
        self.assertIsInstance(answer, answers.Answer)
        self.assertEqual((answer.status, answer.body), (403, b"go away"))
        self.verdict(gate, _head(b"Cookie: instance=app"))
        self.assertEqual(len(agent.calls), 1)  # cached
        self.clock.advance(6)
        self.verdict(gate, _head(b"Cookie: instance=app"))
        self.assertEqual(len(agent.calls), 2)


class OwnerChangeTests(SynchronousTestCase):
    def test_a_token_does_not_outlive_a_recreate_by_another_owner(self):
        clock = Clock()
        keys = AccessKeys([KEY])
        owners = {"app": "alice"}
        gate = SignedGate(keys, clock, owner_of=owners.get)
        token = keys.issue("app", "alice", 100).encode()
        self.assertIsNone(gate.check(_head(b"X-Wakeproxy-Access: " + token), "app"))
        owners["app"] = "mallory"  # deleted and created again by someone else
        self.assertIn("earlier instance", gate.check(_head(b"X-Wakeproxy-Access: " + token), "app"))
