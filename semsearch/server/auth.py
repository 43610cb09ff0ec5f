"""Who may call what: the bearer token (required for writes when the server has one, and for reads too with
``token_reads``) and the JSON content type that keeps other sites' pages from posting to the server.

The token is compared in constant time (``hmac.compare_digest`` over SHA-256 digests, so neither the
content nor the length of the token leaks through timing).
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from ..errors import InvalidArgument
from .errors import ApiError


class TokenCheck:
    def __init__(self, token: str | None, token_reads: bool = False) -> None:
        if token is not None and not token.strip():
            raise InvalidArgument("the token is empty")
        self._digest = hashlib.sha256(token.encode()).digest() if token else None
        self.reads = bool(token) and token_reads

    @property
    def writes(self) -> bool:
        return self._digest is not None

    def verify(self, request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "unauthorized", "this endpoint needs the server's token: "
                                                "send the header 'Authorization: Bearer TOKEN'", "Authorization",
                           headers={"WWW-Authenticate": "Bearer"})
        digest = hashlib.sha256(given.strip().encode()).digest()
        if not hmac.compare_digest(digest, self._digest):
            raise ApiError(401, "unauthorized", "wrong token", "Authorization",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _check(request: Request) -> TokenCheck:
    return request.app.state.semsearch.auth


async def require_write(request: Request) -> None:
    """Dependency of every endpoint that changes the index or costs a long computation."""
    check = _check(request)
    if check.writes:
        check.verify(request)


async def require_read(request: Request) -> None:
    """Dependency of every endpoint that returns stored data (with ``token_reads``)."""
    check = _check(request)
    if check.reads:
        check.verify(request)


async def require_json(request: Request) -> None:
    """JSON endpoints take ``Content-Type: application/json`` only: a page on another site cannot send
    that without the browser asking this server first (CORS preflight), which it refuses unless ``--cors``."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as Content-Type: application/json (got {media or 'none'!r})", "Content-Type")
