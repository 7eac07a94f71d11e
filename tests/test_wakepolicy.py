"""
Tests for L{wakeproxy.waking.wakepolicy.WakePolicy}: which paths and agents may wake an instance, the same
answer when a target comes again (its memo), and the memo's bound.
"""

from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.waking import wakepolicy
from wakeproxy.waking.wakepolicy import WakePolicy


class WakePolicyTests(SynchronousTestCase):
    def test_default_paths(self):
        policy = WakePolicy()
        for _ in range(2):  # the second time from the memo
            self.assertFalse(policy.wakes(b"/favicon.ico", None))
            self.assertFalse(policy.wakes(b"/robots.txt?x=1", None))
            self.assertFalse(policy.wakes(b"/%72obots.txt", None))  # percent-encoded, decoded first
            self.assertTrue(policy.wakes(b"/", None))
            self.assertTrue(policy.wakes(b"/app?next=/favicon.ico", None))

    def test_globs_and_agents(self):
        policy = WakePolicy(["/health*", "/static/*.png"], ["bot", "^curl/7"])
        self.assertFalse(policy.wakes(b"/healthz", b"Mozilla/5.0"))
        self.assertFalse(policy.wakes(b"/static/a/b.png", None))
        self.assertTrue(policy.wakes(b"/static/a.js", None))
        self.assertFalse(policy.wakes(b"/", b"Googlebot/2.1"))
        self.assertFalse(policy.wakes(b"/", b"curl/7.88.1"))
        self.assertTrue(policy.wakes(b"/", b"curl/8.1"))  # agents are not memoized with the path
        self.assertTrue(policy.wakes(b"/", None))

    def test_memo_is_bounded(self):
        self.patch(wakepolicy, "_MEMO", 8)
        policy = WakePolicy()
        for i in range(50):
            self.assertTrue(policy.wakes(b"/page/%d" % i, None))
            self.assertLessEqual(len(policy._by_uri), 8)
        self.assertFalse(policy.wakes(b"/favicon.ico", None))

    def test_no_paths(self):
        policy = WakePolicy(no_wake_paths=())
        self.assertTrue(policy.wakes(b"/favicon.ico", None))
