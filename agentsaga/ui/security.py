"""Who may read the web view and who may decide an approval.

* Bound to loopback (the default), anyone on this machine may read, as they may read the
  store itself; the Host header must name a loopback address, so a web page that rebinds
  its own DNS name to 127.0.0.1 is refused (DNS rebinding).
* Bound to any other address, every request needs the token printed at start: as
  ``Authorization: Bearer TOKEN``, or once as ``?token=TOKEN``, which sets a cookie. So
  does loopback with ``--require-token``, for a machine shared with other users (they can
  reach a loopback port too, though not the store's private file).
* A write (an approval decision) always needs the token in a header (``X-Agentsaga-Token``
  or ``Authorization``), never a cookie alone: a page from another site can make the
  browser send our cookie, but can neither read the token from our page nor set a header
  without a CORS preflight we never answer. The Origin, when the browser sends one, must
  be our own, and the body must be JSON.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Protocol

TOKEN_HEADER = "X-Agentsaga-Token"
COOKIE = "agentsaga_token"


class Headers(Protocol):
    """A request's headers: ``http.server``'s message, or a dict in a test."""

    def get(self, name: str, /) -> str | None: ...


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _hostname(host_header: str) -> str:
    """``[::1]:8080`` -> ``::1``; ``localhost:80`` -> ``localhost``."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


@dataclass(frozen=True)
class Access:
    token: str
    loopback: bool
    #: Ask for the token on loopback too (a machine shared with other users).
    require_token: bool = False

    def _matches(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(
            (presented or "").encode(), self.token.encode()
        )

    def host_allowed(self, headers: Headers) -> bool:
        host = headers.get("Host")
        if not self.loopback:
            return True  # the token guards every request
        return host is not None and is_loopback(_hostname(host))

    def header_token(self, headers: Headers) -> str | None:
        auth = headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return headers.get(TOKEN_HEADER)

    def cookie_token(self, headers: Headers) -> str | None:
        try:
            morsel = SimpleCookie(headers.get("Cookie") or "").get(COOKIE)
        except CookieError:
            return None
        return morsel.value if morsel else None

    def can_read(self, headers: Headers) -> bool:
        if not self.host_allowed(headers):
            return False
        if self.loopback and not self.require_token:
            return True
        return self._matches(self.header_token(headers)) or self._matches(
            self.cookie_token(headers)
        )

    def write_refusal(self, headers: Headers) -> str | None:
        """Why a write is refused, or None when it may go ahead."""
        if not self.host_allowed(headers):
            return "the Host header does not name this server"
        if not self._matches(self.header_token(headers)):
            return f"a decision needs the server's token in the {TOKEN_HEADER} header"
        origin = headers.get("Origin")
        if origin is not None and origin != f"http://{headers.get('Host') or ''}":
            return f"cross-origin request refused (Origin {origin})"
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != "application/json":
            return "a decision is sent as application/json"
        return None

    def valid_query_token(self, token: str | None) -> bool:
        return self._matches(token)
