"""Users, roles, sessions and the login rate limit of the desk.

Users live in a table of the ledger's database (`desk_users`), not in ledger leaves:
a leaf is evidence, immutable and copied into bundles a regulator receives, while an
account is administration (a password changes, a person leaves) and its password hash
must never travel in a bundle. What a user DOES (a review, an export) is evidence and
will name the user in its own leaf.

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's second
recommended profile). Sessions are server-side: the cookie holds only a random id
(256 bits); the session, its user, role and CSRF token stay in this process's memory,
so a restart of the desk logs everyone out, and nothing about a session is in the
database.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from streams.desk.db import Database
from streams.errors import ConsentwatchError

if TYPE_CHECKING:
    from argon2 import PasswordHasher

__all__ = ["PERMISSIONS", "ROLES", "LoginLimiter", "Session", "SessionStore", "UserError",
           "add_user", "authenticate", "list_users"]

#: What each role may do: cumulative, each role all of the one before and more.
ROLES = ("viewer", "reviewer", "exporter", "admin")
PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "reviewer": frozenset({"read", "review"}),
    "exporter": frozenset({"read", "review", "export"}),
    # exceptions: an exception takes a whole scope of findings (an account, a provider,
    # months) off the open list on the strength of a contract: a policy decision, not a
    # finding's triage, so it is the admin's (the role that also manages who is who)
    "admin": frozenset({"read", "review", "export", "users", "exceptions"}),
}
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")
MIN_PASSWORD = 12
_MAX_PASSWORD = 1024  # Argon2 takes any length; a megabyte "password" is a DoS, not a login


class UserError(ConsentwatchError):
    """A user that cannot be added (one line, never the password)."""


@cache
def _password_hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher()


def check_name(name: str) -> str:
    if not 1 <= len(name) <= 64 or not set(name) <= _NAME_CHARS:
        raise UserError("a user name is 1 to 64 letters, digits, '.', '_', '-' or '@'")
    return name


def add_user(db: Database, name: str, role: str, password: str, *, now_ms: int) -> None:
    check_name(name)
    if role not in ROLES:
        raise UserError(f"unknown role: one of {', '.join(ROLES)}")
    if not MIN_PASSWORD <= len(password) <= _MAX_PASSWORD:
        raise UserError(f"a password has {MIN_PASSWORD} to {_MAX_PASSWORD} characters")
    digest = _password_hasher().hash(password)
    if db.query("SELECT 1 FROM desk_users WHERE name = ?", (name,)):
        raise UserError(f"the user {name} exists already")
    db.execute("INSERT INTO desk_users (name, role, password_hash, created_at) "
               "VALUES (?, ?, ?, ?)", (name, role, digest, now_ms))


def list_users(db: Database) -> list[tuple[str, str, int]]:
    """(name, role, created_at) of every user, by name."""
    return [(str(n), str(r), int(c)) for n, r, c in
            db.query("SELECT name, role, created_at FROM desk_users ORDER BY name")]


# A hash to verify against when the user does not exist, so that a missing user takes
# as long as a wrong password (no user enumeration by timing).
_DUMMY: list[str] = []


def authenticate(db: Database, name: str, password: str) -> str | None:
    """The user's role when the password is theirs, else None."""
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = _password_hasher()
    if len(password) > _MAX_PASSWORD:
        return None
    rows = db.query("SELECT role, password_hash FROM desk_users WHERE name = ?", (name,))
    if not rows:
        if not _DUMMY:
            _DUMMY.append(hasher.hash(secrets.token_urlsafe(16)))
        with contextlib.suppress(VerificationError, InvalidHashError):
            hasher.verify(_DUMMY[0], password)
        return None
    role, digest = str(rows[0][0]), str(rows[0][1])
    try:
        hasher.verify(digest, password)
    except (VerificationError, InvalidHashError):
        return None
    return role if role in ROLES else None


# -- sessions -----------------------------------------------------------------------------


@dataclass(slots=True)
class Session:
    """A browser's session: anonymous until login (it still carries the CSRF token of
    the login form), then a user's."""

    sid: str
    csrf: str
    expires: float
    user: str | None = None
    role: str | None = None

    def may(self, permission: str) -> bool:
        return self.role is not None and permission in PERMISSIONS.get(self.role, frozenset())

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf.encode(),
                                                         token.encode(errors="replace"))


@dataclass
class SessionStore:
    """Sessions by id, in memory. A signed-in session lives `idle_s` after its last use
    and at most `absolute_s` after login; an anonymous one (the login form's) at most
    `anonymous_s`. Each kind is capped (`max_sessions`, the oldest evicted first) in its
    own table, so a flood of anonymous visits never pushes a signed-in user out."""

    idle_s: float = 8 * 3600
    absolute_s: float = 12 * 3600
    anonymous_s: float = 3600
    max_sessions: int = 10_000
    _anonymous: OrderedDict[str, tuple[Session, float]] = field(default_factory=OrderedDict)
    _signed_in: OrderedDict[str, tuple[Session, float]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _put(self, table: OrderedDict[str, tuple[Session, float]], session: Session,
             hard_end: float) -> None:
        table[session.sid] = (session, hard_end)
        while len(table) > self.max_sessions:
            table.popitem(last=False)

    def new(self) -> Session:
        session = Session(sid=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32),
                          expires=time.monotonic() + self.anonymous_s)
        with self._lock:
            self._put(self._anonymous, session, session.expires)
        return session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = time.monotonic()
        with self._lock:
            for table in (self._signed_in, self._anonymous):
                item = table.get(sid)
                if item is None:
                    continue
                session, hard_end = item
                if now >= session.expires or now >= hard_end:
                    del table[sid]
                    return None
                if session.user is not None:
                    session.expires = min(now + self.idle_s, hard_end)
                table.move_to_end(sid)
                return session
        return None

    def login(self, old: Session | None, user: str, role: str) -> Session:
        """A NEW session (new id and CSRF token: no session fixation) for `user`."""
        now = time.monotonic()
        session = Session(sid=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32),
                          expires=now + self.idle_s, user=user, role=role)
        with self._lock:
            if old is not None:
                self._anonymous.pop(old.sid, None)
                self._signed_in.pop(old.sid, None)
            self._put(self._signed_in, session, now + self.absolute_s)
        return session

    def end(self, session: Session) -> None:
        with self._lock:
            self._anonymous.pop(session.sid, None)
            self._signed_in.pop(session.sid, None)

    def signed_in(self) -> int:
        with self._lock:
            return len(self._signed_in)


@dataclass
class LoginLimiter:
    """At most `per_user` failed logins per user name and `per_address` login attempts
    per client address in any `window_s` seconds; then the login answers 429 until the
    oldest attempt leaves the window. Keys are kept in memory only, never logged."""

    per_user: int = 5
    per_address: int = 20
    window_s: float = 300.0
    max_keys: int = 50_000
    _attempts: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._attempts.get(key)
        if times is None:
            times = self._attempts[key] = deque()
            while len(self._attempts) > self.max_keys:
                self._attempts.popitem(last=False)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        self._attempts.move_to_end(key)
        return times

    def retry_after(self, user: str, address: str) -> float:
        """0 when this attempt may go ahead, else the seconds until it may; either way it
        counts against the address. An attempt that goes ahead counts against the user
        at once, as a failure until `succeeded` says otherwise: attempts made at the same
        time (the password check takes a while) cannot pass the limit together."""
        now = time.monotonic()
        with self._lock:
            by_user = self._recent(f"u:{user}", now)
            by_address = self._recent(f"a:{address}", now)
            waits = [times[0] + self.window_s - now
                     for times, limit in ((by_user, self.per_user),
                                          (by_address, self.per_address))
                     if len(times) >= limit]
            by_address.append(now)  # refused ones too: a flood keeps its address out
            if waits:
                return max(1.0, *waits)
            by_user.append(now)
            return 0.0

    def succeeded(self, user: str) -> None:
        """The attempt `retry_after` let through was right: it is not a failure."""
        with self._lock:
            times = self._attempts.get(f"u:{user}")
            if times:
                times.pop()
