# -*- test-case-name: tests.test_selector -*-
"""
Tests for L{wakeproxy.http.selector}.
"""

from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.http.selector import (
    DEFAULT_SELECTOR,
    Head,
    Selection,
    cookie_value,
    parse_cookies,
    parse_selector,
    valid_instance_name,
)

_LONGEST = "a" * 128
_TOO_LONG = "a" * 129


def _head(uri=b"/", headers=(), method=b"GET"):
    """
    Build a L{Head} from C{(name, value)} pairs, lower-casing names the way
    the proxy does.
    """
    grouped = {}
    for name, value in headers:
        grouped.setdefault(name.lower(), []).append(value)
    return Head(method=method, uri=uri, headers=grouped)


class SelectorTestMixin:
    """
    Run a table of C{(headers, uri, expected name, expected uri)} cases
    against one selector spec.
    """

    def assertCases(self, spec, cases, keep_path=False):
        select = parse_selector(spec, keep_path=keep_path)
        for headers, uri, name, forwarded in cases:
            case = (spec, headers, uri)
            result = select(_head(uri, headers))
            self.assertIsInstance(result, Selection, case)
            self.assertEqual(result.name, name, case)
            self.assertEqual(result.uri, forwarded, case)
            if name is None:
                self.assertTrue(result.reason, case)
            else:
                self.assertEqual(result.reason, "", case)


class ValidInstanceNameTests(SynchronousTestCase):
    """
    Tests for L{valid_instance_name}.
    """

    def test_names(self):
        cases = [
            ("minion-1", True),
            ("a", True),
            ("0", True),
            ("My_App.v2-beta", True),
            ("a..b", True),  # Docker allows it; it is only a lookup key
            (_LONGEST, True),
            ("", False),
            ("..", False),
            (".hidden", False),
            ("-leading", False),
            ("_leading", False),
            (_TOO_LONG, False),
            ("with space", False),
            ("slash/name", False),
            ("colon:name", False),
            ("trailing-newline\n", False),
            ("caf\u00e9", False),
            ("\u0661\u0662", False),  # Arabic-Indic digits are not [0-9]
            ("nul\x00", False),
        ]
        for name, expected in cases:
            self.assertEqual(valid_instance_name(name), expected, repr(name))


class ParseCookiesTests(SynchronousTestCase):
    """
    Tests for L{parse_cookies} and L{cookie_value}.
    """

    def test_parse(self):
        cases = [
            ([], []),
            ([b""], []),
            ([b"a=b"], [("a", "b")]),
            ([b"a=b; c=d"], [("a", "b"), ("c", "d")]),
            ([b"a=b;c=d"], [("a", "b"), ("c", "d")]),
            ([b"  a = b ;\tc=d  ; "], [("a", "b"), ("c", "d")]),
            ([b"a=b", b"c=d"], [("a", "b"), ("c", "d")]),
            ([b"junk; a=b; =nameless; c"], [("a", "b")]),
            ([b'a="quoted"'], [("a", "quoted")]),
            ([b'a=""'], [("a", "")]),
            ([b'a="'], [("a", '"')]),
            ([b"a="], [("a", "")]),
            ([b"a=b=c"], [("a", "b=c")]),
            ([b"a=x%2Dy"], [("a", "x%2Dy")]),  # no percent-decoding
            ([b"a=caf\xc3\xa9"], [("a", "caf\u00e9")]),
            ([b"a=caf\xe9"], [("a", "caf\u00e9")]),  # latin-1 fallback
        ]
        for values, expected in cases:
            self.assertEqual(parse_cookies(values), expected, values)

    def test_value(self):
        cases = [
            ([b"instance=minion-1"], "minion-1"),
            ([b"xinstance=a"], None),
            ([b"instancex=a"], None),
            ([b"Instance=a"], None),
            ([b"xinstance=a; instance=b"], "b"),
            ([b"instance=first; instance=second"], "first"),
            ([b"other=1", b"instance=second-header"], "second-header"),
            ([b"instance="], ""),
            ([], None),
        ]
        for values, expected in cases:
            self.assertEqual(
                cookie_value(values, "instance"), expected, values
            )


class CookieSelectorTests(SynchronousTestCase, SelectorTestMixin):
    """
    Tests for C{cookie:NAME} selectors.
    """

    def test_default(self):
        self.assertEqual(DEFAULT_SELECTOR, "cookie:instance")
        select = parse_selector(DEFAULT_SELECTOR)
        result = select(_head(headers=[(b"Cookie", b"instance=minion-1")]))
        self.assertEqual(result, Selection("minion-1", b"/", ""))

    def test_cases(self):
        uri = b"/some/path?q=1"
        cases = [
            ([(b"Cookie", b"instance=minion-1")], uri, "minion-1", uri),
            ([(b"Cookie", b"instance=minion-10")], uri, "minion-10", uri),
            ([(b"Cookie", b"  a=1 ;  instance = minion-1 ;b=2")], uri,
             "minion-1", uri),
            ([(b"Cookie", b"a=1"), (b"Cookie", b"instance=minion-1")], uri,
             "minion-1", uri),
            ([(b"Cookie", b'instance="minion-1"')], uri, "minion-1", uri),
            ([(b"Cookie", b"xinstance=minion-1")], uri, None, uri),
            ([(b"Cookie", b"instance=")], uri, None, uri),
            ([(b"Cookie", b"instance=..")], uri, None, uri),
            ([(b"Cookie", b"instance=-leading")], uri, None, uri),
            ([(b"Cookie", b"instance=" + _TOO_LONG.encode())], uri,
             None, uri),
            ([(b"Cookie", b"instance=caf\xc3\xa9")], uri, None, uri),
            ([(b"Cookie", b"instance=minion%2D1")], uri, None, uri),
            ([], uri, None, uri),
        ]
        self.assertCases("cookie:instance", cases)

    def test_other_name(self):
        cases = [
            ([(b"Cookie", b"instance=a; box=minion-1")], b"/", "minion-1",
             b"/"),
            ([(b"Cookie", b"instance=minion-1")], b"/", None, b"/"),
        ]
        self.assertCases("cookie:box", cases)

    def test_reasons(self):
        select = parse_selector("cookie:instance")
        missing = select(_head(headers=[(b"Cookie", b"xinstance=a")]))
        self.assertEqual(
            missing.reason, "no cookie named 'instance' in the request"
        )
        invalid = select(_head(headers=[(b"Cookie", b"instance=a\x01b")]))
        self.assertEqual(
            invalid.reason,
            "the cookie 'instance' holds an invalid instance name: "
            "'a\\x01b'",
        )
        long = select(_head(headers=[(b"Cookie", b"instance=-" + b"x" * 99)]))
        self.assertEqual(
            long.reason,
            "the cookie 'instance' holds an invalid instance name: "
            + repr("-" + "x" * 63) + "...",
        )


class PathSelectorTests(SynchronousTestCase, SelectorTestMixin):
    """
    Tests for C{path:PREFIX} selectors.
    """

    def test_cases(self):
        cases = [
            ([], b"/u/minion-1/rest?q=1", "minion-1", b"/rest?q=1"),
            ([], b"/u/minion-1/a/b/", "minion-1", b"/a/b/"),
            ([], b"/u/minion-1/", "minion-1", b"/"),
            ([], b"/u/minion-1", "minion-1", b"/"),
            ([], b"/u/minion-1?q=1", "minion-1", b"/?q=1"),
            ([], b"/u/minion-1?q=/u/x", "minion-1", b"/?q=/u/x"),
            ([], b"/u/minion-10/x", "minion-10", b"/x"),
            ([], b"/u/minion%2D1/x", "minion-1", b"/x"),
            ([], b"/u/minion-1//x", "minion-1", b"//x"),
            ([], b"/u/minion%2F1/x", None, b"/u/minion%2F1/x"),
            ([], b"/u/%2e%2e/x", None, b"/u/%2e%2e/x"),
            ([], b"/u/../x", None, b"/u/../x"),
            ([], b"/u/-leading/x", None, b"/u/-leading/x"),
            ([], b"/u/caf%C3%A9/x", None, b"/u/caf%C3%A9/x"),
            ([], b"/u/caf\xc3\xa9/x", None, b"/u/caf\xc3\xa9/x"),
            ([], b"/u/%ff/x", None, b"/u/%ff/x"),
            ([], b"/u/" + _TOO_LONG.encode() + b"/x", None,
             b"/u/" + _TOO_LONG.encode() + b"/x"),
            ([], b"/u//x", None, b"/u//x"),
            ([], b"/u/", None, b"/u/"),
            ([], b"/u", None, b"/u"),
            ([], b"/u?instance=minion-1", None, b"/u?instance=minion-1"),
            ([], b"/uu/minion-1/x", None, b"/uu/minion-1/x"),
            ([], b"/U/minion-1/x", None, b"/U/minion-1/x"),
            ([], b"/x/u/minion-1/", None, b"/x/u/minion-1/"),
            ([], b"/", None, b"/"),
            ([], b"*", None, b"*"),
            ([(b"Cookie", b"instance=minion-1")], b"/other", None,
             b"/other"),
        ]
        for spec in ["path:u", "path:/u", "path:/u/", "path:u/"]:
            self.assertCases(spec, cases)

    def test_keep_path(self):
        cases = [
            ([], b"/u/minion-1/rest?q=1", "minion-1", b"/u/minion-1/rest?q=1"),
            ([], b"/u/minion-1", "minion-1", b"/u/minion-1"),
            ([], b"/u/minion-10?q", "minion-10", b"/u/minion-10?q"),
            ([], b"/u/-bad/", None, b"/u/-bad/"),
        ]
        self.assertCases("path:u", cases, keep_path=True)

    def test_empty_prefix(self):
        cases = [
            ([], b"/minion-1/rest?q", "minion-1", b"/rest?q"),
            ([], b"/minion-1", "minion-1", b"/"),
            ([], b"/minion-10?q", "minion-10", b"/?q"),
            ([], b"/", None, b"/"),
            ([], b"/?q", None, b"/?q"),
            ([], b"//x", None, b"//x"),
        ]
        for spec in ["path:", "path:/", "path://"]:
            self.assertCases(spec, cases)

    def test_nested_prefix(self):
        cases = [
            ([], b"/apps/u/minion-1/x", "minion-1", b"/x"),
            ([], b"/apps/minion-1/x", None, b"/apps/minion-1/x"),
        ]
        self.assertCases("path:/apps/u/", cases)

    def test_reasons(self):
        select = parse_selector("path:u")
        self.assertEqual(
            select(_head(b"/other/x")).reason,
            "the path '/other/x' is not under '/u/'",
        )
        self.assertEqual(
            select(_head(b"/u?q")).reason,
            "the path '/u' names no instance after '/u/'",
        )
        self.assertEqual(
            select(_head(b"/u/%2F/x")).reason,
            "the path segment after '/u/' holds an invalid instance name: "
            "'/'",
        )


class HostSelectorTests(SynchronousTestCase, SelectorTestMixin):
    """
    Tests for C{host:PATTERN} selectors.
    """

    def test_cases(self):
        uri = b"/x?y"
        cases = [
            ([(b"Host", b"minion-1.apps.example.com")], uri, "minion-1", uri),
            ([(b"Host", b"minion-10.apps.example.com")], uri, "minion-10",
             uri),
            ([(b"Host", b"minion-1.apps.example.com:8080")], uri,
             "minion-1", uri),
            ([(b"Host", b"minion-1.apps.example.com:")], uri, "minion-1", uri),
            ([(b"Host", b"MINION-1.Apps.Example.COM")], uri, "minion-1", uri),
            ([(b"Host", b"minion-1.apps.example.com.")], uri, "minion-1", uri),
            ([(b"Host", b"minion-1.apps.example.com.:443")], uri,
             "minion-1", uri),
            ([(b"Host", b" minion-1.apps.example.com ")], uri, "minion-1",
             uri),
            ([(b"Host", b"minion-1.apps.example.com.evil.com")], uri, None,
             uri),
            ([(b"Host", b"evil.minion-1.apps.example.com")], uri, None, uri),
            ([(b"Host", b"minion-1.apps.example.co")], uri, None, uri),
            ([(b"Host", b"minion-1xapps.example.com")], uri, None, uri),
            ([(b"Host", b"apps.example.com")], uri, None, uri),
            ([(b"Host", b".apps.example.com")], uri, None, uri),
            ([(b"Host", b"-bad.apps.example.com")], uri, None, uri),
            ([(b"Host", b"caf\xc3\xa9.apps.example.com")], uri, None, uri),
            ([(b"Host", b"[::1]:8080")], uri, None, uri),
            ([(b"Host", b"[::1")], uri, None, uri),
            ([(b"Host", b"127.0.0.1")], uri, None, uri),
            ([(b"Host", b"minion-1.apps.example.com:http")], uri, None, uri),
            ([(b"Host", b"")], uri, None, uri),
            ([(b"Host", b"a.apps.example.com"),
              (b"Host", b"b.apps.example.com")], uri, None, uri),
            ([(b"X-Forwarded-Host", b"minion-1.apps.example.com")], uri,
             None, uri),
            ([], uri, None, uri),
        ]
        self.assertCases("host:{name}.apps.example.com", cases)
        self.assertCases("host:{name}.Apps.Example.com.", cases)

    def test_single_label(self):
        cases = [
            ([(b"Host", b"minion-1")], b"/", "minion-1", b"/"),
            ([(b"Host", b"minion-1:8080")], b"/", "minion-1", b"/"),
            ([(b"Host", b"minion-1.example.com")], b"/", None, b"/"),
            ([(b"Host", b"[::1]")], b"/", None, b"/"),
            ([(b"Host", b"[::1]:80")], b"/", None, b"/"),
        ]
        self.assertCases("host:{name}", cases)

    def test_partial_label(self):
        cases = [
            ([(b"Host", b"app-minion-1.example.com")], b"/", "minion-1", b"/"),
            ([(b"Host", b"minion-1.example.com")], b"/", None, b"/"),
        ]
        self.assertCases("host:app-{name}.example.com", cases)

    def test_reasons(self):
        select = parse_selector("host:{name}.apps.example.com")
        self.assertEqual(
            select(_head(headers=[(b"Host", b"evil.com:80")])).reason,
            "the host 'evil.com' does not match '{name}.apps.example.com'",
        )
        self.assertEqual(
            select(_head()).reason, "the request has no Host header"
        )


class HeaderSelectorTests(SynchronousTestCase, SelectorTestMixin):
    """
    Tests for C{header:NAME} selectors.
    """

    def test_cases(self):
        uri = b"/x?y"
        cases = [
            ([(b"X-Instance", b"minion-1")], uri, "minion-1", uri),
            ([(b"x-instance", b"minion-10")], uri, "minion-10", uri),
            ([(b"X-INSTANCE", b"  minion-1\t")], uri, "minion-1", uri),
            ([(b"X-Instance", b"minion-1"), (b"X-Instance", b"other")], uri,
             "minion-1", uri),
            ([(b"X-Instance", b"minion-1, minion-2")], uri, None, uri),
            ([(b"X-Instance", b"")], uri, None, uri),
            ([(b"X-Instance", b"..")], uri, None, uri),
            ([(b"X-Instance", b"-leading")], uri, None, uri),
            ([(b"X-Instance", _TOO_LONG.encode())], uri, None, uri),
            ([(b"X-Instance", b"caf\xc3\xa9")], uri, None, uri),
            ([(b"X-Instancex", b"minion-1")], uri, None, uri),
            ([(b"Cookie", b"instance=minion-1")], uri, None, uri),
            ([], uri, None, uri),
        ]
        self.assertCases("header:X-Instance", cases)
        self.assertCases("header:x-instance", cases)

    def test_reasons(self):
        select = parse_selector("header:X-Instance")
        self.assertEqual(
            select(_head()).reason, "no X-Instance header in the request"
        )
        self.assertEqual(
            select(_head(headers=[(b"X-Instance", b"a b")])).reason,
            "the X-Instance header holds an invalid instance name: 'a b'",
        )


class ParseSelectorTests(SynchronousTestCase):
    """
    Tests for bad specs given to L{parse_selector}.
    """

    def test_bad_specs(self):
        specs = [
            "",
            "cookie",
            "instance",
            "foo:bar",
            "Cookie:instance",
            " cookie:instance",
            "cookie:",
            "cookie:has space",
            "cookie:a;b",
            "cookie:a=b",
            "header:",
            "header:X Instance",
            "header:X-Instance:",
            "host:",
            "host:apps.example.com",
            "host:{name}.{name}.example.com",
            "host:{NAME}.example.com",
            "host:{name}.example.com:8080",
            "host:{name}.example.com/x",
            "host:{other}.{name}.example.com",
            "path:u?x",
            "path:u#x",
            "path:a//b",
            "path:u x",
            "path:caf\u00e9",
        ]
        for spec in specs:
            self.assertRaises(ValueError, parse_selector, spec)

    def test_messages(self):
        cases = [
            ("foo:bar",
             "unknown selector kind 'foo': use cookie:NAME, path:PREFIX, "
             "host:PATTERN or header:NAME"),
            ("cookie",
             "selector spec 'cookie' has no ':': use cookie:NAME, "
             "path:PREFIX, host:PATTERN or header:NAME"),
            ("host:apps.example.com",
             "host selector pattern must contain {name} exactly once, e.g. "
             "host:{name}.apps.example.com; got 'apps.example.com'"),
        ]
        for spec, message in cases:
            error = self.assertRaises(ValueError, parse_selector, spec)
            self.assertEqual(str(error), message, spec)
