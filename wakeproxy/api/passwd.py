# -*- test-case-name: tests.test_auth -*-
"""
The deploy API's passwd file (C{--passwd}): read by L{PasswdFile}, written by
C{python -m wakeproxy.api.passwd add USER [--file passwd.txt] [--stdin] [--admin | --no-admin]}.

Its lines are C{user,hash} or C{user,hash,admin} (an admin sees and manages every managed instance, not
only their own); blank lines and C{#} comments are skipped; the hashes are L{wakeproxy.api.hashes}'. The
file is re-read whenever it changes.

C{add} adds or replaces a user: the password is read from a prompt (twice, not echoed), or from the first
line of standard input with C{--stdin}; the file gets the line C{USER,scrypt$...} (salted), or
C{USER,scrypt$...,admin} for an admin. Replacing a user keeps their role unless C{--admin} or
C{--no-admin} says otherwise. Other lines are kept as they are; the file is replaced atomically and
readable by its owner only when it is new. Nothing here logs a password or a hash.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Optional, Sequence

from twisted.logger import Logger

from wakeproxy.api.hashes import hash_password, is_legacy_hash, known_format, verify_user

__all__ = ["ADMIN", "Account", "PasswdFile", "add_user", "main", "parse_passwd"]

log = Logger()

#: the third field of a passwd line that makes its user an admin (sees and manages every instance).
ADMIN = "admin"
_ROLES = {"": False, "user": False, ADMIN: True}


@dataclass(frozen=True)
class Account:
    """One line of the passwd file: the stored hash and whether the user is an admin."""

    stored: str
    admin: bool = False


def parse_passwd(text: str, source: str = "passwd") -> dict[str, Account]:
    """
    User -> L{Account} from the lines of a passwd file (C{user,hash} or C{user,hash,admin}; blank lines and
    C{#} comments are skipped). Bad lines are skipped with a warning naming the line number only: a line
    may hold a secret.
    """
    users: dict[str, Account] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        while len(fields) > 2 and not fields[-1]:
            fields.pop()
        if len(fields) not in (2, 3) or not all(fields):
            log.warn("{source}:{line}: skipped, not 'user,hash' or 'user,hash,admin'", source=source, line=number)
            continue
        user, stored = fields[:2]
        role = fields[2].lower() if len(fields) == 3 else ""
        if role not in _ROLES:
            log.warn("{source}:{line}: skipped user {user}: unknown role (the third field may only be 'admin')",
                     source=source, line=number, user=user)
            continue
        if not known_format(stored):
            log.warn("{source}:{line}: skipped user {user}: unknown hash format", source=source, line=number,
                     user=user)
            continue
        if is_legacy_hash(stored):
            log.warn("{source}:{line}: user {user} has an unsalted sha256 hash (the old spawner's); replace it "
                     "with `python -m wakeproxy.api.passwd add {user}`", source=source, line=number, user=user)
        users[user] = Account(stored, _ROLES[role])
    return users


class PasswdFile:
    """The users of a passwd file, re-read whenever the file's size or modification time changes."""

    def __init__(self, path: Optional[str]):
        self._path = path
        self._stamp: Optional[tuple] = None
        self._users: dict[str, Account] = {}
        self._refresh()

    def __len__(self) -> int:
        self._refresh()
        return len(self._users)

    def stored(self, user: str) -> Optional[str]:
        """C{user}'s stored hash (re-reading the file if it changed), or None for an unknown user."""
        account = self.account(user)
        return None if account is None else account.stored

    def account(self, user: str) -> Optional[Account]:
        """C{user}'s entry (re-reading the file if it changed), or None for an unknown user."""
        self._refresh()
        return self._users.get(user)

    def check(self, user: str, password: str) -> bool:
        """Is C{password} right for C{user}?"""
        return verify_user(self.stored(user), password)

    def known(self, user: str) -> bool:
        return user in self._users

    def _refresh(self) -> None:
        if self._path is None:
            return
        try:
            info = os.stat(self._path)
        except OSError as e:
            if self._stamp != "missing":
                log.warn("cannot read --passwd {path} ({error}): nobody can sign in", path=self._path,
                         error=e.strerror)
            self._stamp, self._users = "missing", {}
            return
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp == self._stamp:
            return
        try:
            with open(self._path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            log.warn("cannot read --passwd {path} ({error}): nobody can sign in", path=self._path, error=e.strerror)
            self._stamp, self._users = "missing", {}
            return
        self._stamp, self._users = stamp, parse_passwd(text, self._path)
        log.info("{path}: {count} deploy API user(s)", path=self._path, count=len(self._users))


def add_user(path: str, user: str, password: str, admin: Optional[bool] = None) -> bool:
    """
    Write C{user}'s entry into the passwd file at C{path}; True when it replaced an existing one. C{admin}
    True or False sets the role; None keeps the one the user had (a new user is not an admin).
    """
    lines: list[str] = []
    mode = 0o600
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        pass
    if admin is None:
        admin = any(_fields(line)[0] == user and _fields(line)[2:3] == [ADMIN] for line in lines)
    entry = "{},{}".format(user, hash_password(password)) + (",{}".format(ADMIN) if admin else "")
    replaced = False
    kept = []
    for line in lines:
        if _fields(line)[0] == user:
            if not replaced:
                kept.append(entry)
            replaced = True
        else:
            kept.append(line)
    if not replaced:
        kept.append(entry)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".passwd-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(kept) + "\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return replaced


def _fields(line: str) -> list[str]:
    return [field.strip().lower() if i == 2 else field.strip() for i, field in enumerate(line.split(","))]


def _valid_user(user: str) -> Optional[str]:
    if not user or user != user.strip():
        return "a user name may not be empty nor start or end with a space"
    if "," in user or "\n" in user or "\r" in user or user.startswith("#"):
        return "a user name may not contain ',' or a line break, nor start with '#'"
    return None


def main(argv: Optional[Sequence[str]] = None, stdin=None, stdout=None, stderr=None) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="python -m wakeproxy.api.passwd",
                                     description="Manage the users of the wakeproxy deploy API (--passwd FILE).")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a user, or set a new password for an existing one")
    add.add_argument("user")
    add.add_argument("--file", default="passwd.txt", help="the passwd file to write [default: passwd.txt]")
    add.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    role = add.add_mutually_exclusive_group()
    role.add_argument("--admin", dest="admin", action="store_true", default=None,
                      help="make the user an admin: sees and manages every managed instance, not only their own")
    role.add_argument("--no-admin", dest="admin", action="store_false",
                      help="make the user an ordinary one again [default: keep the user's role]")
    args = parser.parse_args(argv)

    problem = _valid_user(args.user)
    if problem:
        print("wakeproxy.api.passwd: {}".format(problem), file=stderr)
        return 2
    if args.stdin:
        password = stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password for {}: ".format(args.user))
        if getpass.getpass("Again: ") != password:
            print("wakeproxy.api.passwd: the passwords differ; nothing written", file=stderr)
            return 1
    if not password:
        print("wakeproxy.api.passwd: empty password; nothing written", file=stderr)
        return 1
    replaced = add_user(args.file, args.user, password, args.admin)
    print("{} {}{} in {}".format("updated" if replaced else "added", args.user, " (admin)" if args.admin else "",
                                 args.file), file=stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
