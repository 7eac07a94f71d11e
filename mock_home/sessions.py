"""Signed-in sessions, in memory: each holds its user's deploy API token and its CSRF token."""

import secrets
import threading
import time

from mock_home.config import MAX_SESSIONS


class Session:
    __slots__ = ("id", "user", "token", "csrf", "expires")

    def __init__(self, user, token, lifetime):
        self.id = secrets.token_urlsafe(32)
        self.user = user
        self.token = token
        self.csrf = secrets.token_urlsafe(32)
        self.expires = time.monotonic() + lifetime


class Sessions:
    """Signed-in sessions by id, in memory, each ending with its API token."""

    def __init__(self, limit=MAX_SESSIONS):
        self._lock = threading.Lock()
        self._by_id = {}
        self._limit = limit

    def new(self, user, token, lifetime):
        session = Session(user, token, lifetime)
        now = time.monotonic()
        with self._lock:
            for key in [k for k, s in self._by_id.items() if s.expires <= now]:
                del self._by_id[key]
            while len(self._by_id) >= self._limit:
                del self._by_id[next(iter(self._by_id))]  # the oldest
            self._by_id[session.id] = session
        return session

    def get(self, session_id):
        if not session_id:
            return None
        with self._lock:
            session = self._by_id.get(session_id)
            if session is not None and session.expires <= time.monotonic():
                del self._by_id[session_id]
                session = None
        return session

    def drop(self, session_id):
        with self._lock:
            self._by_id.pop(session_id, None)
