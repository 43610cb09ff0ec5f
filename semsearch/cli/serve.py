"""``semsearch serve``: the HTTP API and search page over one index (see :mod:`semsearch.server`)."""

from __future__ import annotations

import errno
import ipaddress
import socket

import click

from . import main
from ._options import index_option


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command("serve")
@index_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address exposes the index to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port, printed at start).")
@click.option("--token", envvar="SEMSEARCH_TOKEN", default=None, metavar="T",
              help="Bearer token required for writes and dedupe (prefer $SEMSEARCH_TOKEN: a command line is "
                   "visible to other users of the machine).")
@click.option("--token-reads", is_flag=True, help="Require the token for searches and document reads too.")
@click.option("--cors", "cors", multiple=True, metavar="ORIGIN",
              help="Let pages from ORIGIN (e.g. https://app.example.org) call the API (repeatable). None by default.")
@click.option("--max-body-mb", default=16.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest request body, in MiB (larger: 413).")
@click.option("--max-query-chars", default=10_000, show_default=True, type=click.IntRange(1),
              help="Longest query text (longer: 413).")
@click.option("--query-cache", default=1024, show_default=True, type=click.IntRange(0),
              help="Query embeddings kept per open generation (0: none).")
@click.option("--batch-wait-ms", default=2.0, show_default=True, type=click.FloatRange(0),
              help="How long the query batcher waits for more queries to share one forward pass.")
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(1),
              help="Most query texts encoded in one forward pass.")
@click.option("--keep-alive", "keep_alive", default=75.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds an idle keep-alive connection stays open. Longer than the idle timeout of the clients "
                   "or proxy in front, so the server never closes a connection a client is about to reuse.")
@click.option("--access-log", is_flag=True, help="Log every request on stderr.")
def serve_cmd(index, host, port, token, token_reads, cors, max_body_mb, max_query_chars, query_cache,
              batch_wait_ms, max_batch, keep_alive, access_log) -> None:
    """Serve an index over HTTP: JSON API (/search, /documents, /dedupe, /info, /health) and a search page at /.

    Listens on 127.0.0.1 unless told otherwise. With --token, writes need 'Authorization: Bearer T'.
    """
    from ..errors import SemsearchError
    from ..index import index_path

    if token is not None and not token.strip():
        raise click.BadParameter("the token is empty", param_hint="--token / $SEMSEARCH_TOKEN")
    if token_reads and not token:
        raise click.UsageError("--token-reads needs a token: --token T or $SEMSEARCH_TOKEN")
    try:
        import uvicorn

        from ..server.app import LOOPBACK_HOSTS, create_app
    except ImportError as exc:
        raise SemsearchError(f"semsearch serve needs FastAPI and uvicorn ({exc.name} is missing): "
                             "pip install 'semsearch[serve]'") from None
    loopback = _is_loopback(host)
    if not loopback and not token:
        click.echo(f"warning: listening on {host} without a token: anyone who can reach this port can change "
                   "the index", err=True)
    sock = _bind(host, port)
    app = create_app(index_path(index), token=token, token_reads=token_reads, cors_origins=cors,
                     allowed_hosts=LOOPBACK_HOSTS if loopback else None,
                     max_body_bytes=int(max_body_mb * (1 << 20)), max_query_chars=max_query_chars,
                     query_cache=query_cache, batch_wait=batch_wait_ms / 1000, max_batch=max_batch, preload=True)
    state = app.state.semsearch
    try:
        state.start()  # open the index and load its model now: a problem is one line, before listening
    except BaseException:
        sock.close()
        raise
    if not state.snapshots.available:
        click.echo(f"note: {state.path} holds no index yet: searches get 404 until POST /documents creates it",
                   err=True)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(f"serving {index_path(index)} at http://{shown}:{bound_port}/ "
               f"(writes {'need the token' if token else 'open'}, reads "
               f"{'need the token' if token_reads else 'open'}; Ctrl-C stops)", err=True)
    config = uvicorn.Config(app, log_level="info" if access_log else "warning", access_log=access_log,
                            timeout_graceful_shutdown=10, timeout_keep_alive=keep_alive)
    uvicorn.Server(config).run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line error (port taken, unknown address)."""
    from ..errors import SemsearchError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SemsearchError(f"cannot listen on {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise SemsearchError(f"cannot listen on {host}:{port}: {exc.strerror}"
                             + ("; pick another with --port" if exc.errno == errno.EADDRINUSE else "")) from None
    return sock
