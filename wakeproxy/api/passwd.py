# -*- test-case-name: tests.test_auth -*-
"""
C{python -m wakeproxy.api.passwd add USER [--file passwd.txt] [--stdin] [--admin | --no-admin]}: add or replace a
deploy API user.

The password is read from a prompt (twice, not echoed), or from the first line of standard input with
C{--stdin}; the file gets the line C{USER,scrypt$...} (salted, see L{wakeproxy.api.auth}), or
C{USER,scrypt$...,admin} for an admin (who sees and manages every managed instance, not only their own).
Replacing a user keeps their role unless C{--admin} or C{--no-admin} says otherwise. Other lines are kept
as they are; the file is replaced atomically and readable by its owner only when it is new.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from typing import Optional, Sequence

from wakeproxy.api.auth import ADMIN, hash_password

__all__ = ["add_user", "main"]


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
