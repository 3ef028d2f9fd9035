"""Static bearer tokens in kube-apiserver's ``--token-auth-file`` format.

One user a line: ``token,user,uid,"group1,group2"`` (the groups column optional).
``skiff up`` writes one for the admin (:func:`ensure_admin_token`); the apiserver's REST
edge reads it (:func:`load`) and accepts ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

ADMIN_USER = "skiff-admin"
ADMIN_GROUPS = ("system:masters",)


@dataclass(frozen=True)
class User:
    """Who a token stands for."""

    name: str
    uid: str
    groups: tuple[str, ...] = field(default=())


class TokenFileError(ValueError):
    """A token file line that is not ``token,user,uid[,groups]``."""


def parse(text: str, *, source: str = "token file") -> dict[str, User]:
    """Token -> user, from the CSV ``text``; blank lines and ``#`` comments skipped."""
    users: dict[str, User] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 3 or not row[0].strip() or not row[1].strip():
            raise TokenFileError(f"{source}: line {number}: expected token,user,uid"
                                 f'[,"group1,group2"]')
        groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
        users[row[0].strip()] = User(row[1].strip(), row[2].strip(), groups)
    return users


def load(path: Path) -> dict[str, User]:
    """The tokens in the file at ``path``."""
    return parse(path.read_text(), source=str(path))


def format_line(token: str, user: User) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(
        [token, user.name, user.uid, ",".join(user.groups)])
    return out.getvalue()


def ensure_admin_token(path: Path) -> str:
    """The admin's token from ``path``, the file (0600) made with a new one if missing."""
    if path.exists():
        for token, user in load(path).items():
            if user.name == ADMIN_USER:
                return token
    token = secrets.token_urlsafe(32)
    line = format_line(token, User(ADMIN_USER, ADMIN_USER, ADMIN_GROUPS))
    existing = path.read_text() if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(existing + line)
    os.chmod(path, 0o600)
    return token
