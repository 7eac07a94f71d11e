"""Password hashes, the passwd file and its CLI, tokens, the login rate limit and trusted proxies (wakeproxy.api.hashes,
.passwd, .tokens, .loginlimit; wakeproxy.trustedproxies)."""

import base64
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.api import hashes, passwd
from wakeproxy.api.hashes import hash_password, is_legacy_hash, verify_password, verify_user
from wakeproxy.api.loginlimit import LoginLimiter
from wakeproxy.api.passwd import Account, PasswdFile, parse_passwd
from wakeproxy.api.tokens import TokenStore
from wakeproxy.trustedproxies import client_address


def _temp_path(case, name: str = "passwd.txt") -> str:
    """A path in a fresh temporary directory removed after the test (trial's mktemp writes into the cwd)."""
    directory = tempfile.mkdtemp(prefix="wakeproxy-auth-")
    case.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, name)


def _logs(case) -> list:
    events = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class HashTests(SynchronousTestCase):
    def test_salted_scrypt_round_trip(self):
        stored = hash_password("correct horse")
        kind, n, r, p, salt, digest = stored.split("$")
        self.assertEqual((kind, n, r, p), ("scrypt", str(hashes.SCRYPT_N), str(hashes.SCRYPT_R), str(hashes.SCRYPT_P)))
        self.assertEqual(len(base64.urlsafe_b64decode(salt + "==")), 16)
        self.assertNotIn(",", stored)  # the passwd file splits on commas
        self.assertTrue(verify_password(stored, "correct horse"))
        self.assertFalse(verify_password(stored, "correct horse "))
        self.assertFalse(verify_password(stored, ""))
        self.assertNotEqual(hash_password("correct horse"), stored)  # a new salt every time

    def test_seed_sha256_hex(self):
        stored = hashlib.sha256(b"bar").hexdigest()
        self.assertTrue(is_legacy_hash(stored))
        self.assertTrue(verify_password(stored, "bar"))
        self.assertTrue(verify_password(stored.upper(), "bar"))
        self.assertFalse(verify_password(stored, "baz"))

    def test_pbkdf2(self):
        salt = b"0123456789abcdef"
        digest = hashlib.pbkdf2_hmac("sha256", b"pw", salt, 1000)
        stored = "pbkdf2_sha256$1000${}${}".format(hashes._b64(salt), hashes._b64(digest))
        self.assertTrue(verify_password(stored, "pw"))
        self.assertFalse(verify_password(stored, "pW"))

    def test_malformed_hashes_never_match_nor_explode(self):
        for stored in ("", "x", "scrypt$", "scrypt$3$8$1$AA$AA", "scrypt$1073741824$8$1$AA$AA",
                       "scrypt$16384$8$1$!!$AA", "scrypt$16384$999$1$AA$AA", "pbkdf2_sha256$0$AA$AA",
                       "pbkdf2_sha256$99999999999$AA$AA", "md5$x", "a" * 63, "g" * 64):
            self.assertFalse(verify_password(stored, "pw"), stored)

    def test_comparisons_are_constant_time(self):
        calls = []
        real = hashes.hmac.compare_digest
        self.patch(hashes.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
        verify_password(hashlib.sha256(b"bar").hexdigest(), "bar")
        verify_password(hash_password("pw"), "pw")
        self.assertEqual(len(calls), 2)

    def test_unknown_users_cost_a_slow_hash_too(self):
        calls = []
        real = hashes.hashlib.scrypt
        self.patch(hashes.hashlib, "scrypt", lambda *a, **kw: calls.append(1) or real(*a, **kw))
        self.assertFalse(verify_user(None, "pw"))
        self.assertEqual(len(calls), 1)

    def test_every_kind_of_entry_costs_one_standard_scrypt(self):
        """Finding 7: the old unsalted sha256 entries were told apart by timing (1 ms against 38 ms)."""
        legacy = hashlib.sha256(b"bar").hexdigest()
        salt = b"0123456789abcdef"
        pbkdf2 = "pbkdf2_sha256$1000${}${}".format(hashes._b64(salt), hashes._b64(hashlib.pbkdf2_hmac("sha256", b"pw", salt, 1000)))
        cheap_scrypt = "scrypt$1024$8$1${}${}".format(hashes._b64(salt), hashes._b64(
            hashlib.scrypt(b"pw", salt=salt, n=1024, r=8, p=1, dklen=32)))
        standard = hash_password("pw")
        cases = [(None, "pw", False), (legacy, "bar", True), (legacy, "baz", False), (pbkdf2, "pw", True),
                 (pbkdf2, "pX", False), (cheap_scrypt, "pw", True), (standard, "pw", True), (standard, "px", False)]
        real = hashes.hashlib.scrypt
        for stored, password, expected in cases:
            costs = []
            self.patch(hashes.hashlib, "scrypt", lambda *a, **kw: costs.append(kw["n"]) or real(*a, **kw))
            self.assertEqual(verify_user(stored, password), expected, stored)
            self.assertIn(hashes.SCRYPT_N, costs, stored)

    def test_legacy_entries_cost_what_salted_ones_do(self):
        """
        Every verification pays exactly one standard-cost scrypt, whatever the entry (legacy sha256, salted
        scrypt, unknown user), so timing cannot tell them apart. Counted, not timed: wall-clock ratios
        flake on a loaded machine.
        """
        real, costs = hashlib.scrypt, []

        def counting(secret, **kwargs):
            costs.append((kwargs["n"], kwargs["r"], kwargs["p"]))
            return real(secret, **kwargs)

        legacy, salted = hashlib.sha256(b"bar").hexdigest(), hash_password("bar")
        self.patch(hashes.hashlib, "scrypt", counting)
        standard = (hashes.SCRYPT_N, hashes.SCRYPT_R, hashes.SCRYPT_P)
        for stored, password, expected in ((legacy, "wrong", False), (legacy, "bar", True),
                                           (salted, "wrong", False), (salted, "bar", True), (None, "bar", False)):
            del costs[:]
            self.assertEqual(verify_user(stored, password), expected)
            self.assertEqual(costs, [standard], stored)


class PasswdFileTests(SynchronousTestCase):
    def test_parse(self):
        events = _logs(self)
        scrypt = hash_password("pw")
        legacy = hashlib.sha256(b"bar").hexdigest()
        text = "\n".join([
            "# comment", "", "foo,{}".format(legacy), "alice, {} ".format(scrypt), "a,", ",x", "x,y,z,w",
            "bob,md5:abc", "carol,{}\r".format(scrypt), "  ", "root,{},admin".format(scrypt),
            "ops, {} , Admin ,".format(scrypt), "dave,{},user".format(scrypt), "eve,{},root".format(scrypt),
            "x,,admin",
        ])
        users = parse_passwd(text, "pw.txt")
        self.assertEqual(users, {"foo": Account(legacy), "alice": Account(scrypt), "carol": Account(scrypt),
                                 "root": Account(scrypt, True), "ops": Account(scrypt, True),
                                 "dave": Account(scrypt)})
        logged = "\n".join(formatEvent(e) for e in events)
        for line in (5, 6, 7, 15):
            self.assertIn("pw.txt:{}: skipped, not 'user,hash' or 'user,hash,admin'".format(line), logged)
        self.assertIn("pw.txt:8: skipped user bob: unknown hash format", logged)
        self.assertIn("pw.txt:14: skipped user eve: unknown role", logged)
        self.assertIn("user foo has an unsalted sha256 hash", logged)
        for secret in (legacy, scrypt, "md5:abc"):
            self.assertNotIn(secret, logged + repr(events))

    def test_reread_on_change_and_missing_file(self):
        path = _temp_path(self)
        with open(path, "w") as f:
            f.write("a,{}\n".format(hash_password("1")))
        users = PasswdFile(path)
        self.assertTrue(users.check("a", "1"))
        self.assertFalse(users.check("b", "2"))
        with open(path, "a") as f:
            f.write("b,{}\n".format(hash_password("2")))
        os.utime(path, ns=(5, 5))
        self.assertTrue(users.check("b", "2"))
        os.remove(path)
        self.assertFalse(users.check("a", "1"))
        self.assertEqual(len(users), 0)

    def test_no_file_no_users(self):
        users = PasswdFile(None)
        self.assertEqual(len(users), 0)
        self.assertFalse(users.check("foo", "bar"))


class TokenTests(SynchronousTestCase):
    def test_issue_and_check(self):
        clock = Clock()
        tokens = TokenStore(clock, ttl=60)
        a, b = tokens.issue("foo"), tokens.issue("foo")
        self.assertNotEqual(a, b)
        self.assertGreaterEqual(len(a), 43)  # 32 random bytes, url-safe base64
        self.assertEqual(tokens.check(a), ("foo", ""))
        user, why = tokens.check("nope")
        self.assertIsNone(user)
        self.assertIn("not valid", why)

    def test_tokens_are_kept_as_digests_only(self):
        tokens = TokenStore(Clock(), ttl=60)
        token = tokens.issue("foo")
        self.assertNotIn(token, repr(tokens.__dict__))
        self.assertNotIn(token.encode(), b"".join(tokens._tokens))

    def test_expiry_counts_from_creation_not_use(self):
        clock = Clock()
        tokens = TokenStore(clock, ttl=60)
        token = tokens.issue("foo")
        for _ in range(5):
            clock.advance(11)
            self.assertEqual(tokens.check(token)[0], "foo")
        clock.advance(5)
        self.assertIn("expired", tokens.check(token)[1])
        self.assertIn("not valid", tokens.check(token)[1])
        self.assertEqual(len(tokens), 0)

    def test_sweep_and_bound(self):
        clock = Clock()
        tokens = TokenStore(clock, ttl=30, max_tokens=3, sweep_every=60)
        first = tokens.issue("a")
        for user in "bcd":
            tokens.issue(user)
        self.assertEqual(len(tokens), 3)
        self.assertIsNone(tokens.check(first)[0])  # the oldest made room
        clock.advance(61)
        tokens.issue("e")
        self.assertEqual(len(tokens), 1)


class LimiterTests(SynchronousTestCase):
    def fail(self, limiter, address, user):
        self.assertIsNone(limiter.retry_after(address, user), (address, user))
        limiter.failed(limiter.begin(address, user))

    def test_per_address_sliding_window(self):
        clock = Clock()
        limiter = LoginLimiter(clock, per_address=5, window=60)
        for i in range(5):
            self.fail(limiter, "192.0.2.1", "u{}".format(i))
            clock.advance(10)
        self.assertEqual(limiter.retry_after("192.0.2.1", "fresh"), 10)  # the first failure leaves the window at 60
        self.assertIsNone(limiter.retry_after("192.0.2.2", "fresh"))
        clock.advance(10)
        self.assertIsNone(limiter.retry_after("192.0.2.1", "fresh"))

    def test_per_user_delay_doubles_up_to_a_cap_and_is_forgotten(self):
        clock = Clock()
        limiter = LoginLimiter(clock, free=2, base=1, max_delay=30, forget=600)
        waits = []
        for i in range(9):
            wait = limiter.retry_after("10.0.0.{}".format(i), "foo")
            waits.append(wait)
            clock.advance(wait or 0)
            self.fail(limiter, "10.0.0.{}".format(i), "foo")
        self.assertEqual(waits, [None, None, 1, 2, 4, 8, 16, 30, 30])
        self.assertIsNone(limiter.retry_after("10.0.0.1", "bar"))
        clock.advance(30 + 600)
        self.assertIsNone(limiter.retry_after("10.0.0.1", "foo"))
        self.fail(limiter, "10.0.0.1", "foo")  # starts over: free again
        self.assertIsNone(limiter.retry_after("10.0.0.1", "foo"))

    def test_guesses_in_parallel_count_while_they_are_checked(self):
        clock = Clock()
        limiter = LoginLimiter(clock, free=3)
        attempts = [limiter.begin("10.0.0.{}".format(i), "foo") for i in range(3)]
        self.assertEqual(limiter.retry_after("10.0.0.9", "foo"), 1)
        for attempt in attempts:
            limiter.failed(attempt)
        self.assertEqual(limiter.retry_after("10.0.0.9", "foo"), 1)

    def test_success_starts_over_and_makes_the_address_known(self):
        clock = Clock()
        limiter = LoginLimiter(clock, free=2)
        self.fail(limiter, "198.51.100.1", "foo")
        limiter.succeeded(limiter.begin("198.51.100.1", "foo"))
        for i in range(6):  # strangers
            clock.advance(limiter.retry_after("203.0.113.{}".format(i), "foo") or 0)
            self.fail(limiter, "203.0.113.{}".format(i), "foo")
        self.assertIsNotNone(limiter.retry_after("203.0.113.99", "foo"))
        self.assertIsNone(limiter.retry_after("198.51.100.1", "foo"))
        # the known address has a delay of its own
        self.fail(limiter, "198.51.100.1", "foo")
        self.fail(limiter, "198.51.100.1", "foo")
        self.assertEqual(limiter.retry_after("198.51.100.1", "foo"), 1)

    def test_success_takes_its_attempt_back_from_the_address(self):
        clock = Clock()
        limiter = LoginLimiter(clock, per_address=2)
        self.fail(limiter, "a", "x")
        limiter.succeeded(limiter.begin("a", "foo"))
        self.assertIsNone(limiter.retry_after("a", "y"))

    def test_memory_is_bounded(self):
        clock = Clock()
        limiter = LoginLimiter(clock, max_keys=100)
        for i in range(1000):
            address = "10.{}.{}.1".format(i // 256, i % 256)
            limiter.failed(limiter.begin(address, "user{}".format(i)))
            limiter.succeeded(limiter.begin(address, "known{}".format(i)))
        self.assertLessEqual(len(limiter._addresses), 101)
        self.assertLessEqual(len(limiter._backoff), 101)
        self.assertLessEqual(len(limiter._known), 101)


class ClientAddressTests(SynchronousTestCase):
    def test_table(self):
        import ipaddress

        trusted = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"),
                   ipaddress.ip_network("::1/128")]
        cases = [
            ("203.0.113.5", [], "203.0.113.5"),
            ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),  # an untrusted peer's header is ignored
            ("127.0.0.1", [], "127.0.0.1"),
            ("127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
            ("127.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # the client's own claim is not believed
            ("127.0.0.1", ["6.6.6.6", "198.51.100.1, 10.1.2.3"], "198.51.100.1"),  # trusted hops are skipped
            ("127.0.0.1", ["10.1.1.1, 10.2.2.2"], "10.1.1.1"),  # all trusted: the farthest
            ("127.0.0.1", ["198.51.100.1, garbage"], "127.0.0.1"),  # garbage ends the walk at the last trusted hop
            ("127.0.0.1", ["garbage, 10.1.1.1"], "10.1.1.1"),
            ("::1", ["2001:db8::1"], "2001:db8::1"),
            ("127.0.0.1", [" 198.51.100.1 "], "198.51.100.1"),
            ("local", ["198.51.100.1"], "local"),  # a unix socket peer
        ]
        for peer, header, expected in cases:
            self.assertEqual(client_address(peer, header, trusted), expected, (peer, header))
        self.assertEqual(client_address("127.0.0.1", ["198.51.100.1"], []), "127.0.0.1")


class PasswdCommandTests(SynchronousTestCase):
    def run_main(self, *argv, stdin=""):
        out, err = io.StringIO(), io.StringIO()
        code = passwd.main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def test_add_from_stdin_creates_a_private_file(self):
        path = _temp_path(self)
        code, out, err = self.run_main("add", "bob", "--file", path, "--stdin", stdin="s3cret\n")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("added bob", out)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        users = PasswdFile(path)
        self.assertTrue(users.check("bob", "s3cret"))
        self.assertNotIn("s3cret", open(path).read())

    def test_add_replaces_a_user_and_keeps_the_rest(self):
        path = _temp_path(self)
        legacy = hashlib.sha256(b"bar").hexdigest()
        with open(path, "w") as f:
            f.write("# users\nfoo,{}\nbob,{}\n".format(legacy, legacy))
        code, out, _ = self.run_main("add", "bob", "--file", path, "--stdin", stdin="new\n")
        self.assertEqual(code, 0)
        self.assertIn("updated bob", out)
        lines = open(path).read().splitlines()
        self.assertEqual(lines[:2], ["# users", "foo,{}".format(legacy)])
        self.assertEqual(len(lines), 3)
        self.assertTrue(PasswdFile(path).check("bob", "new"))
        self.assertTrue(PasswdFile(path).check("foo", "bar"))

    def test_admin_role(self):
        path = _temp_path(self)
        self.assertEqual(self.run_main("add", "root", "--file", path, "--stdin", "--admin", stdin="pw\n")[0], 0)
        self.assertEqual(self.run_main("add", "bob", "--file", path, "--stdin", stdin="pw\n")[0], 0)
        self.assertTrue(open(path).read().splitlines()[0].endswith(",admin"))
        users = PasswdFile(path)
        self.assertEqual((users.account("root").admin, users.account("bob").admin), (True, False))
        # a new password keeps the role unless told otherwise
        self.assertEqual(self.run_main("add", "root", "--file", path, "--stdin", stdin="new\n")[0], 0)
        self.assertTrue(PasswdFile(path).account("root").admin)
        self.assertTrue(PasswdFile(path).check("root", "new"))
        self.assertEqual(self.run_main("add", "root", "--file", path, "--stdin", "--no-admin", stdin="new\n")[0], 0)
        self.assertFalse(PasswdFile(path).account("root").admin)
        self.assertEqual(self.run_main("add", "bob", "--file", path, "--stdin", "--admin", stdin="pw\n")[0], 0)
        self.assertTrue(PasswdFile(path).account("bob").admin)
        with self.assertRaises(SystemExit):
            self.run_main("add", "bob", "--file", path, "--stdin", "--admin", "--no-admin", stdin="pw\n")

    def test_old_two_field_files_stay_valid(self):
        path = _temp_path(self)
        legacy = hashlib.sha256(b"bar").hexdigest()
        with open(path, "w") as f:
            f.write("foo,{}\n".format(legacy))
        self.assertEqual(PasswdFile(path).account("foo"), Account(legacy, False))
        self.run_main("add", "carol", "--file", path, "--stdin", stdin="pw\n")
        self.assertEqual(open(path).read().splitlines()[0], "foo,{}".format(legacy))

    def test_prompt_twice(self):
        path = _temp_path(self)
        answers = iter(["pw1", "pw2"])
        self.patch(passwd.getpass, "getpass", lambda prompt: next(answers))
        code, _, err = self.run_main("add", "bob", "--file", path)
        self.assertEqual(code, 1)
        self.assertIn("differ", err)
        self.assertFalse(os.path.exists(path))
        answers = iter(["pw", "pw"])
        self.assertEqual(self.run_main("add", "bob", "--file", path)[0], 0)
        self.assertTrue(PasswdFile(path).check("bob", "pw"))

    def test_refusals(self):
        path = _temp_path(self)
        for user in ("", " bob", "a,b", "#x", "a\nb"):
            self.assertEqual(self.run_main("add", user, "--file", path, "--stdin", stdin="pw\n")[0], 2, user)
        self.assertEqual(self.run_main("add", "bob", "--file", path, "--stdin", stdin="\n")[0], 1)
        self.assertFalse(os.path.exists(path))

    def test_runs_as_a_module(self):
        path = _temp_path(self)
        result = subprocess.run([sys.executable, "-m", "wakeproxy.api.passwd", "add", "carol", "--file", path, "--stdin"],
                                input="pw\n", capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(PasswdFile(path).check("carol", "pw"))
