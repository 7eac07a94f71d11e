# -*- test-case-name: tests.test_wire -*-
"""
HTTP/1.1 message heads (RFC 9112) for the relay: L{parse_request_head} / L{parse_response_head} turn one
complete head into a L{RequestHead} / L{ResponseHead}, or raise L{WireError} with the status to answer
(400, 431, 502) and a sentence; L{RequestReader} reads a client connection's heads in order.

Heads are found by their blank line. The common head (plainly valid, plain framing) is read in one call
of the C scanner (C{_fieldscan.c}), which leaves every other head to C{httptools} (llhttp, the parser uvicorn
uses) and the Python here; both paths give the same result (tests/test_wire.py compares them on random
heads). Bodies are framed by the relay (chunked ones with L{wakeproxy.http.chunked}), so the bytes it
forwards are exactly the bytes it received and every message boundary is known to the byte.
"""

from __future__ import annotations

from typing import Optional

import httptools

from wakeproxy.http.headers import FORWARDING, HOP_BY_HOP, NOTED, field_block, field_lines

__all__ = [
    "RequestHead",
    "RequestReader",
    "ResponseHead",
    "WireError",
    "head_problem",
    "parse_request_head",
    "parse_response_head",
    "scan_fields",
    "scan_fields_py",
]

#: header fields in one head, at most (beyond: 431)
MAX_HEADERS = 100
#: the shortest header field line: "a:" and its line end
_MIN_FIELD = 3
#: a head shorter than this cannot hold more than MAX_HEADERS fields (their count is not needed)
_MAY_HOLD_MAX = _MIN_FIELD * MAX_HEADERS
#: Connection tokens that nominate nothing to remove
_HARMLESS = frozenset({b"keep-alive", b"close", b"upgrade", b""})


class WireError(Exception):
    """A message that cannot be relayed: the status to answer and why, in one sentence."""

    def __init__(self, status: int, detail: str):
        Exception.__init__(self, detail)
        self.status = status
        self.detail = detail


class RequestHead:
    """
    A parsed request head (L{parse_request_head}): its fields sorted by role (L{scan_fields}), one object
    per request, nothing copied afterwards.

    @ivar fields: the field lines forwarded as they are (hop-by-hop, framing, Via and forwarding headers
        gone), as received, each preceded by CRLF; L{lines} is the same as a list of C{b"Name: value"}.
    @ivar headers: C{(name, value)} byte pairs as received (order, case and duplicates kept); read from
        the raw head when first asked for (only selectors that read other headers do).
    @ivar length: the Content-Length, C{-1} for a chunked body, C{0} for none.
    @ivar upgrade: the C{Upgrade} value when the client asks for one (C{Connection: upgrade}), else None.
    @ivar noted: first values of the headers in L{NOTED}, by lower-cased name (only those present).
    @ivar nominated: header names the Connection header nominates for removal (beyond
        keep-alive/close/upgrade), or None.
    @ivar forwarding: C{(lower-cased name, value)} of client-sent forwarding headers, or None.
    @ivar vias: Via values, or None.
    """

    # what most requests leave as it is: set on the instance only when it differs
    method = b""
    target = b""
    version = "1.1"
    length = 0
    keep_alive = True
    upgrade = None
    expect = False
    host_count = 0
    cookie = ()
    host = None
    nominated = None
    forwarding = None
    vias = None
    noted = {}  # shared and empty (never written): a head with a noted field gets its own
    fields = b""
    raw = b""
    # parsing state
    _expect = None
    _coding = None
    _connection = b""

    lines = property(lambda self: field_lines(self.fields),
                     lambda self, lines: setattr(self, "fields", field_block(lines)))

    @property
    def headers(self) -> list:
        _, every_field, _ = scan_fields(self.raw, _NO_ROLES, _KEEP)
        return [(name, value.lstrip(b" \t")) for name, _, value in
                (line.partition(b":") for line in field_lines(every_field))]


class ResponseHead:
    """
    A parsed response head (L{parse_response_head}).

    @ivar fields: the field lines passed on (hop-by-hop, Content-Length, Transfer-Encoding and Via gone),
        as received, each preceded by CRLF.
    @ivar length: Content-Length, or None when absent (or chunked).
    @ivar coding: the Transfer-Encoding value (codings before the final chunked are passed on as they are).
    """

    status = 0
    status_line = b""
    reason = b""
    length = None
    keep_alive = True
    chunked = False
    coding = b"chunked"
    nominated = None
    vias = None
    fields = b""

    lines = RequestHead.lines


class _Validate:
    """httptools' protocol when only its verdict is wanted: no callbacks (fields are read by L{scan_fields})."""

    # found as None (httptools looks each up; a missing attribute costs an exception raised and dropped)
    on_message_begin = on_url = on_status = on_header = on_headers_complete = on_body = None
    on_message_complete = on_chunk_header = on_chunk_complete = None


_VALIDATE = _Validate()

# What a header field is to the relay, by lower-cased name: kept as it is (absent from the table), read
# and kept, read and dropped (restated or rebuilt by headers.py), or dropped (hop-by-hop).
_KEEP, _COOKIE, _HOST, _LENGTH, _EXPECT, _NOTE, _CODING, _CONNECTION, _UPGRADE, _FORWARDING, _VIA, _HOP = range(12)
_REQUEST_ROLES = dict.fromkeys(HOP_BY_HOP, _HOP)
_REQUEST_ROLES.update(dict.fromkeys(FORWARDING, _FORWARDING))
_REQUEST_ROLES.update(dict.fromkeys(NOTED, _NOTE))
_REQUEST_ROLES.update({b"cookie": _COOKIE, b"host": _HOST, b"content-length": _LENGTH, b"expect": _EXPECT,
                       b"transfer-encoding": _CODING, b"connection": _CONNECTION, b"upgrade": _UPGRADE,
                       b"via": _VIA})
_RESPONSE_ROLES = dict.fromkeys(HOP_BY_HOP, _HOP)
_RESPONSE_ROLES.update({b"content-length": _LENGTH, b"transfer-encoding": _CODING, b"connection": _CONNECTION,
                        b"via": _VIA})
_NO_ROLES: dict = {}  # every field passed on: what reads all of them


def scan_fields_py(raw: bytes, roles: dict, keep_below: int) -> tuple:
    """
    The lines of a whole head llhttp validated, sorted by role: C{(start_line, kept, special)}. C{roles}
    maps lower-cased field names to roles (absent: 0, passed on as it is). C{kept}: the field lines of
    role 0 or below C{keep_below}, as received, each preceded by CRLF; C{special}: C{(role, name, value)}
    of every field with a role, in order, value without leading whitespace. L{scan_fields} is this, or
    its C twin (C{_fieldscan.c}) when built: the same result, without a Python step per field.
    """
    if not raw.endswith(b"\r\n\r\n"):
        raise ValueError("not a whole head: it must end in an empty line")
    start_line, _, rest = raw[:-2].partition(b"\r\n")
    kept = []
    special = []
    for line in rest[:-2].split(b"\r\n") if rest else ():
        name, _, value = line.partition(b":")
        role = roles.get(name.lower(), _KEEP)
        if role == _KEEP or role < keep_below:
            kept.append(line)
        if role != _KEEP:
            special.append((role, name, value.lstrip(b" \t")))
    return start_line, field_block(kept), special


try:
    from wakeproxy.http import _fieldscan
except ImportError:  # not built (no C compiler at install): the same in Python, and llhttp for every response
    _fieldscan = None
scan_fields = scan_fields_py if _fieldscan is None else _fieldscan.scan
#: the common request and response heads read in one C call without llhttp (None for any other head), when built
_plain_request = _plain_response = None
if getattr(_fieldscan, "ROLES", None) == tuple(range(_COOKIE, _HOP + 1)):
    _plain_request, _plain_response = _fieldscan.plain_request, _fieldscan.plain_response


class RequestReader:
    """
    The request heads of one client connection, in order: L{parse_request_head} with the connection's
    llhttp parser kept from one bodiless keep-alive request to the next (llhttp is then waiting for the next
    message, as after any request it saw whole), so most requests need no parser of their own.
    """

    __slots__ = ("_parser",)

    def __init__(self):
        self._parser = None

    def read(self, raw: bytes) -> RequestHead:
        head = _plain_request_head(raw)
        if head is not None:
            return head  # llhttp's parser, if kept, is still waiting for a message
        parser, self._parser = self._parser, None
        if parser is None:
            parser = httptools.HttpRequestParser(_VALIDATE)
        head = _read_request_head(raw, parser)
        if head.length == 0 and head.keep_alive and head.upgrade is None and parser.should_keep_alive():
            self._parser = parser
        return head


def _plain_request_head(raw: bytes) -> Optional[RequestHead]:
    """The common request head read in one C call (see C{_fieldscan.c}), or None for any other (or no C)."""
    plain = None if _plain_request is None else _plain_request(raw, _REQUEST_ROLES)
    if plain is None:
        return None
    head = RequestHead()
    head.raw = raw
    head.host_count = 1
    head.method, head.target, head.fields, head.host, head.cookie, noted, head.length, head.keep_alive, relayed = \
        plain
    if noted is not None:
        head.noted = noted
    if relayed is not None:  # a client's forwarding headers or Via
        head.forwarding, head.vias = relayed
    return head


def parse_request_head(raw: bytes, parser=None) -> RequestHead:
    """
    C{raw}: the bytes of one request head, up to and including its blank line; C{parser}: an httptools
    request parser to validate it with, waiting for a message (L{RequestReader}), or None for a new one.
    The common head (a usual method, an origin-form target of plain characters, HTTP/1.1, plainly valid
    lines, one Host, plain framing, no Expect or Upgrade: see C{_fieldscan.c}) is read in one C call; any other is
    validated by llhttp and read by L{_read_request_head}, which gives the same result.
    """
    return _plain_request_head(raw) or _read_request_head(raw, parser)


def _read_request_head(raw: bytes, parser=None) -> RequestHead:
    if parser is None:
        parser = httptools.HttpRequestParser(_VALIDATE)
    _validate(parser, raw, _REQUEST_ERRORS)
    head = RequestHead()
    head.raw = raw
    request_line, head.fields, special = scan_fields(raw, _REQUEST_ROLES, _CODING)
    try:
        head.method, head.target, version = request_line.split()  # llhttp: no whitespace inside the target
    except ValueError:
        raise WireError(400, "the request line is not method, target and version")
    for role, name, value in special:
        if role == _HOST:
            head.host_count += 1
            head.host = value
        elif role == _COOKIE:
            head.cookie += (value,)
        elif role == _NOTE:
            lower = name.lower()
            if not head.noted:
                head.noted = {lower: value}
            elif lower not in head.noted:
                head.noted[lower] = value
        elif role == _LENGTH:
            head.length = int(value)  # llhttp checked digits and duplicates
        elif role == _EXPECT:
            head._expect = value
        elif role == _CODING:
            head._coding = value if head._coding is None else head._coding + b"," + value
        elif role == _CONNECTION:
            head._connection = head._connection + b"," + value.lower() if head._connection else value.lower()
        elif role == _UPGRADE:
            head.upgrade = value
        elif role == _FORWARDING:
            head.forwarding = (head.forwarding or []) + [(name.lower(), value)]
        elif role == _VIA:
            head.vias = (head.vias or []) + [value]
    if version != b"HTTP/1.1" or head._coding is not None or head._expect is not None \
            or head.host_count != 1 or head._connection or head.upgrade is not None:
        _check_request(head, parser.get_http_version())  # what most requests need not look at
    return head


def _check_request(head: RequestHead, version: str) -> None:
    if version != "1.1":
        if version != "1.0":
            raise WireError(505, "wakeproxy speaks HTTP/1.1 and HTTP/1.0, not HTTP/{}".format(version))
        head.version = version
    coding = head._coding
    if coding is not None:
        if version == "1.0":
            raise WireError(400, "an HTTP/1.0 request cannot use Transfer-Encoding")
        codings = [t.strip().lower() for t in coding.split(b",")]
        if codings != [b"chunked"]:
            raise WireError(400, "the only transfer coding accepted in a request is chunked, alone; got {!r}".format(
                coding[:64].decode("latin-1")))
        head.length = -1
    expect = head._expect
    if expect is not None:
        if expect.strip().lower() != b"100-continue":
            raise WireError(417, "the only expectation wakeproxy knows is 100-continue, not {!r}".format(
                expect[:64].decode("latin-1")))
        head.expect = True
    hosts = head.host_count
    if hosts != 1:
        if hosts > 1:
            raise WireError(400, "the request has more than one Host header")
        if version == "1.1":
            raise WireError(400, "an HTTP/1.1 request needs a Host header")
    connection = head._connection
    if connection:
        tokens = [t.strip() for t in connection.split(b",")]
        if b"close" in tokens or version == "1.0":
            head.keep_alive = False
        head.nominated = frozenset(tokens) - _HARMLESS or None
    else:
        tokens = ()
        if version == "1.0":
            head.keep_alive = False  # HTTP/1.0: one exchange per connection
    upgrade = head.upgrade
    if upgrade is not None and (b"upgrade" not in tokens or upgrade.strip().lower() == b"h2c" or version == "1.0"):
        head.upgrade = None  # not nominated by Connection, or h2c: stripped, the request goes on as HTTP/1.1


def head_problem(partial: bytes) -> Optional[WireError]:
    """What is already wrong with the start of a request head (a TLS hello, a bare-LF head), or None."""
    parser = httptools.HttpRequestParser(_VALIDATE)
    try:
        parser.feed_data(partial)
    except httptools.HttpParserUpgrade:
        return None
    except httptools.HttpParserError as e:
        return WireError(400, "the request is not valid HTTP/1.1: {}".format(_message(e)))
    return None


def parse_response_head(raw: bytes) -> ResponseHead:
    """
    C{raw}: the bytes of one response head, up to and including its blank line. The common head (an
    HTTP/1.1 final response, plainly valid lines, plain framing: see C{_fieldscan.c}) is read in one C call;
    any other is validated by llhttp and read by L{_read_response_head}, which gives the same result.
    """
    return _plain_response_head(raw) or _read_response_head(raw)


def _plain_response_head(raw: bytes) -> Optional[ResponseHead]:
    """The common response head read in one C call (see C{_fieldscan.c}), or None for any other (or no C)."""
    plain = None if _plain_response is None else _plain_response(raw, _RESPONSE_ROLES)
    if plain is None:
        return None
    head = ResponseHead()
    head.status, head.status_line, head.reason, head.fields, head.length, head.keep_alive, head.chunked = plain
    return head


def _read_response_head(raw: bytes) -> ResponseHead:
    parser = httptools.HttpResponseParser(_VALIDATE)
    _validate(parser, raw, _RESPONSE_ERRORS)
    head = ResponseHead()
    head.status = parser.get_status_code()
    head.status_line, head.fields, special = scan_fields(raw, _RESPONSE_ROLES, 1)  # no field with a role is passed on
    status_line = head.status_line
    if len(status_line) > 13:  # "HTTP/1.1 200 " and a reason phrase (llhttp: one space, a three-digit status)
        head.reason = status_line[13:].lstrip(b" ")
    close = status_line[:9] != b"HTTP/1.1 "
    connection = coding = b""
    for role, name, value in special:
        if role == _LENGTH:
            head.length = int(value)
        elif role == _CONNECTION:
            connection = connection + b"," + value.lower() if connection else value.lower()
        elif role == _CODING:
            value = value.strip()
            coding = coding + b", " + value if coding else value
        elif role == _VIA:
            head.vias = (head.vias or []) + [value]
    if connection:
        if connection == b"keep-alive":  # the common one alone: nothing nominated
            close = False
        elif connection == b"close":
            close = True
        else:
            tokens = [t.strip() for t in connection.split(b",")]
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens:
                close = False
            head.nominated = frozenset(tokens) - _HARMLESS or None
    if close:
        head.keep_alive = False
    if coding:
        head.coding = coding
        if coding.lower().endswith(b"chunked"):
            head.chunked = True
            head.length = None
    return head


#: what a bad head is answered with: (status, sentence) for invalid HTTP and for too many fields
_REQUEST_ERRORS = ((400, "the request is not valid HTTP/1.1: {}"),
                   (431, "the request has {} header fields; at most {} are accepted"))
_RESPONSE_ERRORS = ((502, "the upstream's response is not valid HTTP/1.1: {}"),
                    (502, "the upstream's response has {} header fields; at most {} are relayed"))


def _validate(parser, raw: bytes, errors: tuple) -> None:
    """llhttp's verdict on a whole head (fed to C{parser}, which has no callbacks), and its field count."""
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass  # an Upgrade (or CONNECT) head: parsed in full, the rest is not HTTP
    except httptools.HttpParserError as e:
        raise WireError(errors[0][0], errors[0][1].format(_message(e)))
    if len(raw) > _MAY_HOLD_MAX:  # else it cannot hold more fields than that; no count per field
        fields = raw.count(b"\n") - 2  # one line end per field beyond the start line and the blank line
        if fields > MAX_HEADERS:
            raise WireError(errors[1][0], errors[1][1].format(fields, MAX_HEADERS))


def _message(error: Exception) -> str:
    text = str(error)
    return text[0].lower() + text[1:] if text else type(error).__name__
