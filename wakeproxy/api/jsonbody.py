# -*- test-case-name: tests.test_deployspec -*-
"""
The deploy API's JSON request bodies, as pure functions: reading one (L{parse_json}: UTF-8, no duplicate
keys, no NaN), checking its fields (string fields and string maps, each with a size limit), and the
errors that say what is wrong with a body: L{BodyError} (400 unusable, 422 wrong fields) listing
L{FieldError}s. The login body (L{check_login}) is checked here; the deploy body in
L{wakeproxy.api.deployspec}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

__all__ = [
    "BodyError",
    "FieldError",
    "MAX_ENTRIES",
    "check_login",
    "json_kind",
    "parse_json",
    "quote",
    "raise_errors",
    "string_field",
    "string_map",
    "text_problem",
    "unknown_keys",
]

LOGIN_KEYS = ("username", "password")
MAX_LOGIN_FIELD = 1024
#: the most entries of a string map (labels, envs), and the longest key and value.
MAX_ENTRIES = 64
MAX_KEY = 256
MAX_VALUE = 4096


@dataclass(frozen=True)
class FieldError:
    """One thing wrong with a body: where (C{labels.x}, or C{""} for the whole body) and what."""

    field: str
    detail: str

    def as_dict(self) -> dict:
        return {"field": self.field, "detail": self.detail}


class BodyError(Exception):
    """A body that is not usable JSON (400), or a usable one with wrong fields (422)."""

    def __init__(self, status: int, detail: str, errors: Sequence[FieldError] = ()):
        Exception.__init__(self, detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        ValueError.__init__(self, key)
        self.key = key


def _no_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _no_constant(name: str):
    raise ValueError("{} is not JSON".format(name))


def parse_json(raw: bytes) -> Any:
    """The JSON value in C{raw} (UTF-8), or L{BodyError}: 400 when unreadable, 422 for duplicate keys."""
    if not raw.strip():
        raise BodyError(400, "the body is empty: send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BodyError(400, "the body is not UTF-8 (byte {})".format(e.start))
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateKey as e:
        raise BodyError(422, "duplicate key {} in the body".format(quote(e.key)),
                        [FieldError(e.key, "given more than once")])
    except json.JSONDecodeError as e:
        raise BodyError(400, "malformed JSON: {} at line {} column {}".format(e.msg, e.lineno, e.colno))
    except RecursionError:
        raise BodyError(400, "malformed JSON: nested too deeply")
    except ValueError as e:
        raise BodyError(400, "malformed JSON: {}".format(e))


def check_login(doc: Any) -> tuple[str, str]:
    """C{(username, password)} from a login body, or L{BodyError} (422) naming what is wrong."""
    errors = unknown_keys(doc, LOGIN_KEYS)
    values = {}
    if isinstance(doc, dict):
        for key in LOGIN_KEYS:
            values[key] = string_field(doc, key, errors, required=True, limit=MAX_LOGIN_FIELD)
    raise_errors(errors)
    return values["username"], values["password"]


def unknown_keys(doc: Any, known: Sequence[str]) -> list[FieldError]:
    """An error for C{doc} that is not an object, else one for each key of it not in C{known}."""
    if not isinstance(doc, dict):
        return [FieldError("", "the body must be a JSON object with the keys {}, not {}".format(
            ", ".join(known), json_kind(doc)))]
    errors = []
    for key in doc:
        if key in known:
            continue
        hint = " (keys are lower case: {!r})".format(key.lower()) if key.lower() in known else ""
        errors.append(FieldError(key, "unknown key {}{}; the keys are {}".format(quote(key), hint, ", ".join(known))))
    return errors


def string_field(doc: dict, key: str, errors: list, required: bool, limit: int) -> Optional[str]:
    """C{doc[key]} when it is a non-empty string of at most C{limit} characters; else None, the reason added to C{errors}."""
    if key not in doc:
        if required:
            errors.append(FieldError(key, "{} is required".format(key)))
        return None
    value = doc[key]
    if not isinstance(value, str):
        errors.append(FieldError(key, "{} must be a string, not {}".format(key, json_kind(value))))
        return None
    problem = text_problem(value, limit) or ("may not be empty" if not value else None)
    if problem:
        errors.append(FieldError(key, "{} {}".format(key, problem)))
        return None
    return value


def string_map(doc: dict, key: str, errors: list, key_re, key_kind: str) -> Optional[dict[str, str]]:
    """
    C{doc[key]} (C{{}} when absent) when it maps strings matching C{key_re} (described as C{key_kind}) to
    strings, within L{MAX_ENTRIES}, L{MAX_KEY} and L{MAX_VALUE}; else None, the reasons added to C{errors}.
    """
    if key not in doc:
        return {}
    value = doc[key]
    if not isinstance(value, dict):
        errors.append(FieldError(key, "{} must be an object mapping strings to strings, not {}".format(
            key, json_kind(value))))
        return None
    before = len(errors)
    if len(value) > MAX_ENTRIES:
        errors.append(FieldError(key, "{} has {} entries; at most {} are allowed".format(key, len(value), MAX_ENTRIES)))
        return None
    for k, v in value.items():
        where = "{}.{}".format(key, k[:MAX_KEY])
        problem = text_problem(k, MAX_KEY)
        if problem:
            errors.append(FieldError(where, "the key {} {}".format(quote(k), problem)))
        elif key_re.fullmatch(k) is None:
            errors.append(FieldError(where, "{} is not {}".format(quote(k), key_kind)))
        if not isinstance(v, str):
            errors.append(FieldError(where, "{} must map to a string, not {}".format(quote(k), json_kind(v))))
            continue
        problem = text_problem(v, MAX_VALUE)
        if problem:
            errors.append(FieldError(where, "the value of {} {}".format(quote(k), problem)))
    return value if len(errors) == before else None


def text_problem(text: str, limit: int) -> Optional[str]:
    """What is wrong with C{text} as a field: too long, a NUL, a lone surrogate; None when nothing is."""
    if len(text) > limit:
        return "is longer than {} characters".format(limit)
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return None


def json_kind(value: Any) -> str:
    """What a JSON value is, for error messages: "a string", "an object", "null"..."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def quote(text: str, limit: int = 64) -> str:
    """C{text} quoted for an error message, cut after C{limit} characters."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    return json.dumps(shown)


def raise_errors(errors: list[FieldError]) -> None:
    """L{BodyError} (422) listing C{errors}, when there are any."""
    if errors:
        detail = "; ".join(e.detail for e in errors[:10])
        if len(errors) > 10:
            detail += "; and {} more".format(len(errors) - 10)
        raise BodyError(422, detail, errors)
