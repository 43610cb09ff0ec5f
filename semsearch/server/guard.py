"""An ASGI middleware in front of every route: the request body limit and the allowed Host names.

- A body longer than ``max_body`` bytes gets 413 before the application reads it: at once when the
  ``Content-Length`` says so, else (chunked uploads) as soon as the bytes received pass the limit.
- ``allowed_hosts`` (set by ``semsearch serve`` when it listens on a loopback address) refuses requests whose
  ``Host`` header names another machine: a web page cannot reach the local server through a DNS name that
  it re-points at 127.0.0.1 (DNS rebinding).
- Every response says ``X-Content-Type-Options: nosniff``.

Errors are the server's JSON errors (see :mod:`.errors`).
"""

from __future__ import annotations

import json
from typing import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body


def host_name(header: str) -> str:
    """``"127.0.0.1:8000"`` → ``127.0.0.1``; ``"[::1]:8000"`` → ``::1``; lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    def __init__(self, app: ASGIApp, *, max_body: int, allowed_hosts: Iterable[str] | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.allowed_hosts = None if allowed_hosts is None else {host_name(h) for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-content-type-options", b"nosniff")]
            await send(message)

        headers = Headers(scope=scope)
        if self.allowed_hosts is not None and host_name(headers.get("host", "")) not in self.allowed_hosts:
            return await _reply(send_nosniff, 400, "host_not_allowed",
                                f"Host {headers.get('host', '')!r} is not served here; use "
                                + " or ".join(sorted(self.allowed_hosts)), "Host")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return await _reply(send_nosniff, 400, "bad_request", "Content-Length is not a number",
                                    "Content-Length")
            if int(length) > self.max_body:
                return await _reply(send_nosniff, 413, "body_too_large", self._too_large(), "body")
            return await self.app(scope, receive, send_nosniff)
        # No length given (chunked): read the body here, up to the limit, and hand it on in one piece.
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_body:
                return await _reply(send_nosniff, 413, "body_too_large", self._too_large(), "body")
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send_nosniff)

    def _too_large(self) -> str:
        return f"the request body is larger than this server's limit of {self.max_body:,} bytes"


async def _reply(send: Send, status: int, code: str, message: str, field: str | None) -> None:
    body = json.dumps(error_body(code, message, field)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
