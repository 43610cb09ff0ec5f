"""``semsearch serve``: an HTTP API and a search page over one index (FastAPI + uvicorn).

The server is a thin layer over the library: queries go through :class:`~semsearch.index.Index`, writes
through :class:`~semsearch.index.IndexWriter`, dedupe through :func:`semsearch.dedupe.dedupe`. Its own parts:

- :mod:`.app`: :func:`create_app`, the application factory (settings, middleware, lifespan);
- :mod:`.routes`: the JSON endpoints; :mod:`.schemas`: their request bodies;
- :mod:`.snapshots`: the open index, reopened when another generation is committed;
- :mod:`.batching`: concurrent queries encoded in one forward pass;
- :mod:`.writes`: one writer at a time, records built as the corpus readers build them;
- :mod:`.jobs`: long tasks (dedupe) run in the background and polled;
- :mod:`.errors`, :mod:`.guard`, :mod:`.auth`: JSON errors, body and host limits, the bearer token;
- ``pages/index.html``: the search page, one self-contained file.

FastAPI and uvicorn are optional dependencies (``pip install 'semsearch[serve]'``); nothing here is
imported by ``import semsearch``.
"""

from __future__ import annotations


def create_app(*args, **kwargs):
    """See :func:`semsearch.server.app.create_app`."""
    from .app import create_app as factory

    return factory(*args, **kwargs)


__all__ = ["create_app"]
