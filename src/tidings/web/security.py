"""Who may use the web monitor, and the headers that keep its pages safe.

An ASGI middleware in front of every route:

- **Authentication.** ``--basic-auth user:pass,...`` protects pages and API
  alike (a browser asks for the password; scripts written against Flower's
  API send the same header); ``--api-token`` also lets the API in with
  ``Authorization: Bearer <token>``.  Each credential is compared in
  constant time (``hmac.compare_digest``) against every configured user,
  without stopping at the first match, so timing says nothing about which
  part was wrong.  No rule is ever built from user input (Flower's
  ``--auth`` regex is how CVE-2022-30034 came about).  ``/healthcheck`` is
  open, as in Flower, for load balancers.
- **CSRF.** A state-changing request (POST) from a browser must carry the
  page's token in ``X-CSRF-Token``; a browser is recognised by the
  ``Origin`` or ``Sec-Fetch-Site`` header every current browser sends, and a
  cross-site one is refused whatever it carries.  Scripts (no such headers)
  authenticate as above and are not asked for the token.  The token is an
  HMAC of a per-process secret, so it needs no server-side session.
- **Read-only.** ``--read-only`` answers every POST with 403.
- **Headers.** A strict Content-Security-Policy (scripts and styles only
  from the monitor itself, no inline script, no framing),
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CSP", "Access", "SecurityMiddleware", "parse_users"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
#: Paths anyone may read (a load balancer's probe).
OPEN_PATHS = frozenset({"/healthcheck"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def parse_users(text: str | None) -> list[tuple[str, str]]:
    """``user:pass,user2:pass2`` as pairs; ValueError naming the bad entry."""
    users = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"{item.split(':')[0]!r}: expected user:password")
        users.append((user, password))
    return users


@dataclass
class Access:
    """The access rules: users, API token, read-only; and the CSRF secret."""

    users: list[tuple[str, str]] = field(default_factory=list)
    api_token: str | None = None
    read_only: bool = False
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def protected(self) -> bool:
        return bool(self.users or self.api_token)

    def csrf_token(self, user: str | None) -> str:
        return hmac.new(self.secret, (user or "").encode(), hashlib.sha256).hexdigest()

    def check_basic(self, header: str) -> str | None:
        """The user a ``Basic`` header authenticates, or None."""
        try:
            decoded = base64.b64decode(header, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        user, _, password = decoded.partition(":")
        found = None
        for known_user, known_password in self.users:  # no early exit: constant time
            ok_user = hmac.compare_digest(user.encode(), known_user.encode())
            ok_password = hmac.compare_digest(password.encode(), known_password.encode())
            if ok_user and ok_password:
                found = known_user
        return found

    def check_token(self, token: str) -> bool:
        return self.api_token is not None and hmac.compare_digest(
            token.encode(), self.api_token.encode())

    def authenticate(self, authorization: str, api: bool) -> tuple[bool, str | None]:
        """``(allowed, user)`` for a request's Authorization header."""
        if not self.protected:
            return True, None
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and self.users:
            user = self.check_basic(credentials.strip())
            return user is not None, user
        if scheme == "bearer" and api and self.check_token(credentials.strip()):
            return True, "token"
        return False, None


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope.get("headers") or ()}


class SecurityMiddleware:
    """Authentication, CSRF, read-only and security headers around ``app``."""

    def __init__(self, app: ASGIApp, access: Access, prefix: str = "") -> None:
        self.app = app
        self.access = access
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        path = scope.get("path", "")
        if self.prefix and path.startswith(self.prefix):
            path = path[len(self.prefix):] or "/"
        api = path.startswith("/api/") or path == "/metrics"
        headers = _headers(scope)
        allowed, user = self.access.authenticate(headers.get("authorization", ""), api)
        if path not in OPEN_PATHS and not allowed:
            extra = [(b"www-authenticate", b'Basic realm="tidings", charset="UTF-8"')] \
                if self.access.users else []
            await _plain(send_with_headers, 401, "Authentication required", extra)
            return
        method = scope.get("method", "GET")
        if method not in _SAFE_METHODS:
            if self.access.read_only:
                await _json(send_with_headers, 403, {"error": "Read only mode is enabled"})
                return
            refusal = self._csrf_refusal(headers, user)
            if refusal:
                await _json(send_with_headers, 403, {"error": refusal})
                return
        scope.setdefault("state", {})["user"] = user
        scope["state"]["csrf_token"] = self.access.csrf_token(user)
        await self.app(scope, receive, send_with_headers)

    def _csrf_refusal(self, headers: dict[str, str], user: str | None) -> str | None:
        site = headers.get("sec-fetch-site")
        origin = headers.get("origin")
        if site is None and origin is None:
            return None  # not a browser: a script, authenticated above
        if site is not None and site not in ("same-origin", "none"):
            return "Cross-site request refused"
        if origin is not None:
            host = headers.get("host", "")
            if origin.split("://", 1)[-1] != host:
                return "Cross-origin request refused"
        token = headers.get("x-csrf-token", "")
        if not hmac.compare_digest(token.encode(), self.access.csrf_token(user).encode()):
            return "Missing or wrong CSRF token (reload the page)"
        return None


async def _plain(send: Any, status: int, text: str,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = f"{text}\n".encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Any, status: int, data: Any) -> None:
    body = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
