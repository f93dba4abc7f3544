"""Raters: found or created by name when their labels arrive; sign-in tokens for the labelling page.

A token is 32 random bytes (urlsafe base64), shown once; only its sha256 is stored, so a copy of the
database signs nobody in. A revoked rater's token stops working; their labels stay.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa

import shards as sh
from filtering.labels.schema import RATER_NAME_LENGTH, raters, utc_now

NAME_PATTERN = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.@+-]{{0,{RATER_NAME_LENGTH - 1}}}$")
GROUND_TRUTH_RATER = "ground-truth"


@dataclass(frozen=True)
class Rater:
    id: int
    name: str
    is_admin: bool
    revoked: bool


def check_rater_name(name, where: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise sh.UserError(f"{where}: rater {str(name)[:80]!r} must be 1-{RATER_NAME_LENGTH} letters, digits or "
                           f"_ . @ + - (starting with a letter or digit)")
    return name


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def rater_ids(conn: sa.Connection, names, *, create: bool) -> dict[str, int]:
    """{name: id} for `names`; missing raters are created when `create` (inside the caller's write)."""
    names = sorted(set(names))
    if not names:
        return {}
    found = dict(conn.execute(sa.select(raters.c.name, raters.c.id).where(raters.c.name.in_(names))).all())
    missing = [n for n in names if n not in found]
    if missing and create:
        now = utc_now()
        conn.execute(raters.insert(), [{"name": n, "created": now} for n in missing])
        found.update(conn.execute(sa.select(raters.c.name, raters.c.id).where(raters.c.name.in_(missing))).all())
    return found


def _rater(row) -> Rater:
    return Rater(id=row.id, name=row.name, is_admin=bool(row.is_admin), revoked=row.revoked_at is not None)


def issue_token(conn: sa.Connection, name: str, *, admin: bool = False) -> str:
    """A new sign-in token for `name` (created if new); replaces an older token and lifts a revocation."""
    check_rater_name(name, "rater")
    rater_id = rater_ids(conn, [name], create=True)[name]
    token = secrets.token_urlsafe(32)
    conn.execute(raters.update().where(raters.c.id == rater_id)
                 .values(token_hash=token_hash(token), is_admin=admin, revoked_at=None))
    return token


def revoke(conn: sa.Connection, name: str) -> bool:
    """Revoke `name`'s token; False if there is no such rater."""
    result = conn.execute(raters.update().where(raters.c.name == name)
                          .values(revoked_at=utc_now(), token_hash=None))
    return result.rowcount > 0


_BY_TOKEN = sa.select(raters).where(raters.c.token_hash == sa.bindparam("hash"))  # built once: every request


def authenticate(conn: sa.Connection, token: str) -> Optional[Rater]:
    """The rater holding `token`, or None (unknown, replaced or revoked)."""
    if not token:
        return None
    row = conn.execute(_BY_TOKEN, {"hash": token_hash(token)}).first()
    return None if row is None or row.revoked_at is not None else _rater(row)


def list_raters(conn: sa.Connection) -> list[Rater]:
    return [_rater(r) for r in conn.execute(sa.select(raters).order_by(raters.c.name))]
