"""Errors as JSON: ``{"error": {"code": ..., "message": ..., "field": ...}}`` with a status that says what was
wrong, and never a stack trace.

:func:`api_error` is the one place where a library error (:class:`~semsearch.errors.SemsearchError`) gets its
HTTP status; :func:`install_handlers` puts the handlers on an application.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors as library_errors
from ..errors import IndexFormatError, IndexNotFoundError, InputError, ModelError, SemsearchError

log = logging.getLogger("semsearch.server")

class ApiError(Exception):
    """An error the client can act on, with its HTTP status, a stable code and, for bad input, the field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def error_body(code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error.code, error.message, error.field), status_code=error.status,
                        headers=error.headers)


def is_writer_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says another writer holds the index's lock."""
    return isinstance(exc, library_errors.WriterBusy)


def api_error(exc: SemsearchError, field: str | None = None) -> ApiError:
    """The HTTP form of a library error."""
    from ..filters import FilterError

    message = str(exc)
    if is_writer_busy(exc):
        return ApiError(409, "writer_busy", message)
    if isinstance(exc, IndexNotFoundError):
        return ApiError(404, "index_not_found", message)
    if isinstance(exc, FilterError):
        return ApiError(400, "bad_filter", message, field or "filters")
    if isinstance(exc, InputError):
        return ApiError(400, "bad_input", message, field)
    if isinstance(exc, IndexFormatError):
        return ApiError(503, "index_unreadable", message)
    if isinstance(exc, ModelError):
        return ApiError(503, "model_unavailable", message)
    return ApiError(400, "bad_request", message, field)


def _field(loc: tuple) -> str | None:
    """``("body", "queries", 2)`` → ``queries[2]``; ``("body",)`` → ``body``."""
    located = bool(loc) and loc[0] in ("body", "query", "path", "header")
    parts = list(loc[1:] if located else loc) or list(loc[:1])
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(SemsearchError)
    async def _library(request: Request, exc: SemsearchError):
        return error_response(api_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        problems = list(exc.errors()) or [{"loc": ("body",), "msg": "invalid request", "type": ""}]
        # An unknown field first: a misspelt name also shows up as the right one missing.
        first = next((p for p in problems if p.get("type") == "extra_forbidden"), problems[0])
        loc = tuple(first.get("loc", ("body",)))
        if first.get("type") == "json_invalid":
            error = (first.get("ctx") or {}).get("error", "")
            return error_response(ApiError(400, "invalid_json", f"the body is not valid JSON ({error})", "body"))
        field = _field(loc)
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden":
            message = "unknown field"
        elif first.get("type") == "missing":
            message = "required"
        return error_response(ApiError(400, "invalid_request", f"{field}: {message}" if field else message, field))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}
        code = codes.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return JSONResponse(error_body(code, message), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # The trace goes to the server's log; the client gets one line.
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body("internal", f"internal error ({type(exc).__name__}); see the server's log"),
                            status_code=500)
