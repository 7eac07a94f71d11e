"""Password hashes, the passwd file and its CLI, tokens and the login rate limit (wakeproxy.auth, .passwd)."""

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

from wakeproxy import auth, passwd
from wakeproxy.auth import (
    LoginLimiter,
    PasswdFile,
    TokenStore,
    hash_password,
    is_legacy_hash,
    parse_passwd,
    verify_password,
    verify_user,
)


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
        self.assertEqual((kind, n, r, p), ("scrypt", str(auth.SCRYPT_N), str(auth.SCRYPT_R), str(auth.SCRYPT_P)))
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
        stored = "pbkdf2_sha256$1000${}${}".format(auth._b64(salt), auth._b64(digest))
        self.assertTrue(verify_password(stored, "pw"))
        self.assertFalse(verify_password(stored, "pW"))

    def test_malformed_hashes_never_match_nor_explode(self):
        for stored in ("", "x", "scrypt$", "scrypt$3$8$1$AA$AA", "scrypt$1073741824$8$1$AA$AA",
                       "scrypt$16384$8$1$!!$AA", "scrypt$16384$999$1$AA$AA", "pbkdf2_sha256$0$AA$AA",
                       "pbkdf2_sha256$99999999999$AA$AA", "md5$x", "a" * 63, "g" * 64):
            self.assertFalse(verify_password(stored, "pw"), stored)

    def test_comparisons_are_constant_time(self):
        calls = []
        real = auth.hmac.compare_digest
        self.patch(auth.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
        verify_password(hashlib.sha256(b"bar").hexdigest(), "bar")
        verify_password(hash_password("pw"), "pw")
        self.assertEqual(len(calls), 2)

    def test_unknown_users_cost_a_slow_hash_too(self):
        calls = []
        real = auth.hashlib.scrypt
        self.patch(auth.hashlib, "scrypt", lambda *a, **kw: calls.append(1) or real(*a, **kw))
        self.assertFalse(verify_user(None, "pw"))
        self.assertEqual(len(calls), 1)


class PasswdFileTests(SynchronousTestCase):
    def test_parse(self):
        events = _logs(self)
        scrypt = hash_password("pw")
        legacy = hashlib.sha256(b"bar").hexdigest()
        text = "\n".join([
            "# comment", "", "foo,{}".format(legacy), "alice, {} ".format(scrypt), "a,", ",x", "x,y,z",
            "bob,md5:abc", "carol,{}\r".format(scrypt), "  ",
        ])
        users = parse_passwd(text, "pw.txt")
        self.assertEqual(users, {"foo": legacy, "alice": scrypt, "carol": scrypt})
        logged = "\n".join(formatEvent(e) for e in events)
        for line in (5, 6, 7):
            self.assertIn("pw.txt:{}: skipped, not 'user,hash'".format(line), logged)
        self.assertIn("pw.txt:8: skipped user bob: unknown hash format", logged)
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
    def test_per_user_and_per_address_with_a_sliding_window(self):
        clock = Clock()
        limiter = LoginLimiter(clock, per_user=3, per_address=5, window=60)
        for i in range(3):
            self.assertIsNone(limiter.retry_after("10.0.0.{}".format(i), "foo"))
            limiter.failed("10.0.0.{}".format(i), "foo")
            clock.advance(10)
        self.assertEqual(limiter.retry_after("10.9.9.9", "foo"), 30)
        self.assertIsNone(limiter.retry_after("10.9.9.9", "bar"))
        for user in ("u1", "u2", "u3", "u4", "u5"):
            limiter.failed("192.0.2.1", user)
        self.assertEqual(limiter.retry_after("192.0.2.1", "fresh"), 60)
        clock.advance(30)
        self.assertIsNone(limiter.retry_after("10.9.9.9", "foo"))

    def test_success_takes_its_attempt_back(self):
        clock = Clock()
        limiter = LoginLimiter(clock, per_user=2, per_address=2, window=60)
        limiter.failed("a", "foo")
        attempt = limiter.failed("a", "foo")
        self.assertIsNotNone(limiter.retry_after("a", "foo"))
        limiter.succeeded("a", "foo", attempt)
        self.assertIsNone(limiter.retry_after("a", "foo"))

    def test_memory_is_bounded(self):
        clock = Clock()
        limiter = LoginLimiter(clock, max_keys=100)
        for i in range(1000):
            limiter.failed("10.{}.{}.1".format(i // 256, i % 256), "user{}".format(i))
        self.assertLessEqual(len(limiter._failures), 102)


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
        result = subprocess.run([sys.executable, "-m", "wakeproxy.passwd", "add", "carol", "--file", path, "--stdin"],
                                input="pw\n", capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(PasswdFile(path).check("carol", "pw"))
