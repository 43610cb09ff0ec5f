"""The application factory: :func:`create_app` wires the index, the query batcher, the writer, the job
runner, the guards and the search page into one FastAPI application.

>>> app = create_app("indexes/docs", token="s3cret")
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from .. import __version__
from .auth import TokenCheck
from .batching import QueryBatcher
from .errors import install_handlers
from .guard import Guard
from .jobs import Jobs
from .routes import router
from .snapshots import Snapshots
from .writes import Writes

MIB = 1 << 20
DEFAULT_MAX_BODY = 16 * MIB
DEFAULT_MAX_QUERY_CHARS = 10_000
DEFAULT_MAX_QUERIES = 256
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = DEFAULT_MAX_BODY
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    max_queries: int = DEFAULT_MAX_QUERIES


@dataclass
class ServerState:
    """What the request handlers share (``app.state.semsearch``)."""

    path: Path
    limits: Limits
    auth: TokenCheck
    snapshots: Snapshots
    batcher: QueryBatcher
    writes: Writes
    jobs: Jobs
    preload: bool
    started: bool = False

    def start(self) -> None:
        """Open the index, load the model (``preload``) and start the worker threads; once.

        The application's start-up calls it; ``semsearch serve`` calls it before listening, so that a damaged
        index or a missing model is a one-line error rather than a failed start-up in the server's log.
        """
        if self.started:
            return
        from ..vectors import use_torch_scans

        use_torch_scans()  # a server lives long: torch's GEMM scans faster than FAISS (see there)
        self.snapshots.start()
        if self.preload and self.snapshots.available:
            self.snapshots.encoder()
        self.batcher.start()
        self.started = True

    def stop(self) -> None:
        self.batcher.stop()
        self.jobs.close()
        self.snapshots.close()
        self.started = False


def create_app(index_path: str | os.PathLike, token: str | None = None, token_reads: bool = False, *,
               cors_origins: Iterable[str] = (), allowed_hosts: Iterable[str] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY, max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
               max_queries: int = DEFAULT_MAX_QUERIES, encoder=None, write_encoder=None,
               query_cache: int = 1024, batch_wait: float = 0.002, max_batch: int = 64,
               write_wait: float = 5.0, reload_interval: float = 0.2, preload: bool = False) -> FastAPI:
    """A FastAPI application serving the index at ``index_path`` (a name under ``indexes/`` or a path).

    - ``token``: bearer token required for writes (and dedupe jobs), and for reads with ``token_reads``.
    - ``cors_origins``: origins allowed to call the API from a browser (none by default).
    - ``allowed_hosts``: ``Host`` names accepted (None: any; ``semsearch serve`` passes the loopback names
      when it listens on a loopback address).
    - ``max_body_bytes``, ``max_query_chars``, ``max_queries``: larger requests get 413.
    - ``encoder``: the query encoder (default: the index's own model); ``write_encoder`` embeds new
      documents. Default: ``encoder`` when one is given (it must then be safe to call from two threads),
      else a second copy of the index's model, loaded by the first write: a tokenizer must not serve two
      threads at once.
    - ``query_cache``: query embeddings each open generation keeps (0: none).
    - ``batch_wait`` (seconds) and ``max_batch`` (texts): the query batcher's bounds.
    - ``write_wait``: seconds a write waits for another writer before 409.
    - ``reload_interval``: seconds between checks for a new generation.
    - ``preload``: load the model at start-up (``semsearch serve`` does), not on the first query.

    The index may not exist yet: reads get 404 until the first ``POST /documents`` creates it.
    """
    from ..index import index_path as resolve

    path = resolve(index_path).absolute()
    limits = Limits(max_body_bytes, max_query_chars, max_queries)
    snapshots = Snapshots(path, query_cache=query_cache, encoder=encoder, interval=reload_interval)
    state = ServerState(
        path=path, limits=limits, auth=TokenCheck(token, token_reads), snapshots=snapshots,
        batcher=QueryBatcher(snapshots, max_wait=batch_wait, max_batch=max_batch),
        writes=Writes(path, snapshots, encoder=write_encoder if write_encoder is not None else encoder,
                      wait=write_wait),
        jobs=Jobs(), preload=preload)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start()
        try:
            yield
        finally:
            state.stop()

    # FastAPI's /docs and /redoc pages load their scripts from a CDN: off; /openapi.json stays.
    app = FastAPI(title="semsearch", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=f"Semantic search over the index {path.name}")
    app.state.semsearch = state
    install_handlers(app)
    app.include_router(router)
    page = _page()

    @app.get("/", include_in_schema=False)
    def search_page() -> HTMLResponse:
        return HTMLResponse(page.html, headers={"Content-Security-Policy": page.csp, "Cache-Control": "no-cache",
                                                "Referrer-Policy": "no-referrer"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    origins = list(cors_origins)
    if origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.add_middleware(Guard, max_body=max_body_bytes, allowed_hosts=allowed_hosts)  # outermost
    return app


@dataclass(frozen=True)
class _Page:
    html: str
    csp: str


def _page() -> _Page:
    """The search page and a Content-Security-Policy that allows its own inline script and style only."""
    html = resources.files(__package__).joinpath("pages/index.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in found)

    csp = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
           "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    return _Page(html, csp)
