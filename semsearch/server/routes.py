"""The JSON endpoints. Each checks its input, calls the library (through the batcher, the writer or a job)
and renders the result; errors are raised as :class:`~.errors.ApiError` or library errors and become JSON in
one place (:mod:`.errors`)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ..vectors import IndexTypeError
from .auth import require_json, require_read, require_write
from .batching import SearchJob
from .errors import ApiError, api_error
from .schemas import MAX_HITS, MAX_K, MODES, DedupeIn, DeleteIn, DocumentsIn, IdsIn, SearchIn
from .snapshots import fetch_documents, generation_of
from .writes import records_from_ndjson, records_from_objects

if TYPE_CHECKING:
    from .app import ServerState

router = APIRouter()
READ = [Depends(require_read)]
READ_JSON = [Depends(require_read), Depends(require_json)]
WRITE = [Depends(require_write)]
WRITE_JSON = [Depends(require_write), Depends(require_json)]
NDJSON = "application/x-ndjson"


def _state(request: Request) -> "ServerState":
    return request.app.state.semsearch


def _check_filters(filters: list[str]) -> tuple[str, ...]:
    from ..filters import FilterError, parse_condition

    for position, text in enumerate(filters):
        try:
            parse_condition(text).sql()
        except FilterError as exc:
            raise ApiError(400, "bad_filter", f"filters[{position}]: {exc}", f"filters[{position}]") from None
    return tuple(filters)


# --------------------------------------------------------------------------------------------- status
@router.get("/health")
def health(request: Request) -> dict:
    """Liveness: whether an index is open and a write is running (no documents are shown)."""
    state = _state(request)
    return {"status": "ok", "index": state.snapshots.available, "writing": state.writes.active}


@router.get("/info", dependencies=READ)
def info(request: Request) -> dict:
    """The index (name, documents, generation, encoder, manifest) and the server's limits and counters."""
    from ..index.maintenance import info as index_info

    state = _state(request)
    limits = state.limits
    server = {
        "modes": list(MODES), "max_k": MAX_K, "max_query_chars": limits.max_query_chars,
        "max_queries": limits.max_queries, "max_body_bytes": limits.max_body_bytes,
        "token_for_writes": state.auth.writes, "token_for_reads": state.auth.reads,
        "batching": {"max_wait_ms": state.batcher.max_wait * 1000, "max_batch": state.batcher.max_batch,
                     "encoder_calls": state.batcher.batches, "queries": state.batcher.queries},
        "generations_opened": state.snapshots.reopened, "writes_committed": state.writes.committed,
    }
    if not state.snapshots.available:
        return {"index": None, "server": server}
    with state.snapshots.lease() as index:
        summary = {"name": index.path.name, "path": str(index.path), "generation": generation_of(index),
                   "documents": len(index), "encoder": index.spec.to_dict()}
    try:
        summary["manifest"] = index_info(state.path)
    except Exception as exc:  # the summary above still holds
        summary["manifest"] = {"error": str(exc)}
    return {"index": summary, "server": server}


# --------------------------------------------------------------------------------------------- search
@router.post("/search", dependencies=READ_JSON)
async def search(body: SearchIn, request: Request) -> JSONResponse:
    """Nearest documents for ``query`` or for each of ``queries``: ``{"generation", "results": [{"query",
    "hits": [{"rank", "score", "id", "text", "meta"}]}]}``."""
    state = _state(request)
    if (body.query is None) == (body.queries is None):
        raise ApiError(400, "invalid_request", "give either 'query' (one text) or 'queries' (a list)", "query")
    texts, field = ([body.query], "query") if body.query is not None else (body.queries, "queries")
    if not texts:
        raise ApiError(400, "invalid_request", "queries: the list is empty", "queries")
    if len(texts) > state.limits.max_queries:
        raise ApiError(413, "too_many_queries", f"{len(texts)} queries in one request; this server takes "
                                                f"{state.limits.max_queries} at most", "queries")
    if body.k * len(texts) > MAX_HITS:
        raise ApiError(413, "too_many_results", f"k={body.k} for {len(texts)} queries asks for more than "
                                                f"{MAX_HITS:,} hits; split the request", "k")
    for position, text in enumerate(texts):
        where = field if body.query is not None else f"queries[{position}]"
        if len(text) > state.limits.max_query_chars:
            raise ApiError(413, "query_too_long", f"{where}: {len(text):,} characters; this server takes "
                                                  f"{state.limits.max_query_chars:,} at most", where)
        if not text.strip():
            raise ApiError(400, "invalid_request", f"{where}: empty", where)
    job = SearchJob(list(texts), k=body.k, threshold=body.threshold, filters=_check_filters(body.filters),
                    nprobe=body.nprobe, ef_search=body.ef_search)
    try:
        hits = await asyncio.wrap_future(state.batcher.submit(job))
    except IndexTypeError as exc:  # a knob this index type does not have
        knob = "nprobe" if body.ef_search is None or (body.nprobe is not None and str(exc).startswith("nprobe")) \
            else "ef_search"
        raise api_error(exc, field=knob) from None
    return JSONResponse({"generation": job.generation, "results": [
        {"query": text, "hits": [hit.to_dict() for hit in found]} for text, found in zip(texts, hits)]})


# --------------------------------------------------------------------------------------------- documents
@router.get("/documents/{doc_id:path}", dependencies=READ)
def get_document(doc_id: str, request: Request) -> dict:
    """One stored document: ``{"id", "text", "meta"}``."""
    with _state(request).snapshots.lease() as index:
        found = fetch_documents(index, [doc_id])
    if doc_id not in found:
        raise ApiError(404, "document_not_found", f"no document with id {doc_id!r}", "id")
    return found[doc_id]


@router.post("/documents/get", dependencies=READ_JSON)
def get_documents(body: IdsIn, request: Request) -> dict:
    """Stored documents by id, in the order asked, and the ids that are not stored."""
    with _state(request).snapshots.lease() as index:
        found = fetch_documents(index, list(dict.fromkeys(body.ids)))
    return {"documents": [found[i] for i in body.ids if i in found],
            "missing": [i for i in body.ids if i not in found]}


@router.post("/documents", dependencies=WRITE, openapi_extra={"requestBody": {"required": True, "content": {
    "application/json": {"schema": DocumentsIn.model_json_schema()},
    NDJSON: {"schema": {"type": "string", "description": "one document object per line"}}}}})
async def add_documents(request: Request) -> dict:
    """Add or update documents (``{"documents": [...]}`` as JSON, or one object per line as NDJSON).

    A document is ``{"text": ..., "id": ..., other fields: metadata}``; without an id it gets the hash of
    its text, as in ``semsearch index``. A changed text under a known id replaces it. All or nothing.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if media == NDJSON:
        records = records_from_ndjson(body)
    elif media == "application/json":
        try:
            parsed = DocumentsIn.model_validate(json.loads(body))
        except json.JSONDecodeError as exc:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON ({exc.msg} at line {exc.lineno} "
                                                f"column {exc.colno})", "body") from None
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
        records = records_from_objects(parsed.documents)
    else:
        raise ApiError(415, "unsupported_media_type", f"send application/json or {NDJSON} "
                                                      f"(got {media or 'none'!r})", "Content-Type")
    return await run_in_threadpool(_state(request).writes.add, records)


def _delete(request: Request, ids: list[str], filters: list[str]) -> dict:
    if not ids and not filters:
        raise ApiError(400, "invalid_request", "name what to delete: 'ids', 'filters' or both", "ids")
    return _state(request).writes.delete(ids, _check_filters(filters))


@router.post("/documents/delete", dependencies=WRITE_JSON)
def delete_documents(body: DeleteIn, request: Request) -> dict:
    """Remove the documents with these ids and those matching every filter: ``{"deleted", "generation"}``."""
    return _delete(request, body.ids, body.filters)


@router.delete("/documents", dependencies=WRITE_JSON)
def delete_documents_by_body(body: DeleteIn, request: Request) -> dict:
    """The same as ``POST /documents/delete``."""
    return _delete(request, body.ids, body.filters)


@router.delete("/documents/{doc_id:path}", dependencies=WRITE)
def delete_document(doc_id: str, request: Request) -> dict:
    """Remove one document; 404 when there is none with this id."""
    result = _delete(request, [doc_id], [])
    if result["deleted"] == 0:
        raise ApiError(404, "document_not_found", f"no document with id {doc_id!r}", "id")
    return result


# --------------------------------------------------------------------------------------------- jobs
@router.post("/dedupe", status_code=202, dependencies=WRITE_JSON)
def start_dedupe(body: DedupeIn, request: Request) -> JSONResponse:
    """Start a dedupe of the index's stored vectors; poll the job at ``/jobs/{id}``."""
    from ..dedupe import dedupe

    state = _state(request)
    if not state.snapshots.available:
        from ..errors import IndexNotFoundError

        raise IndexNotFoundError(f"{state.path}: no such index")
    params = body.model_dump()

    def run() -> dict:
        result = dedupe(index=state.path, threshold=body.threshold, top_k=body.top_k, keep=body.keep,
                        mode=body.mode)
        return dedupe_summary(result, body.view)

    job = state.jobs.submit("dedupe", params, run)
    url = f"/jobs/{job.id}"
    return JSONResponse({"job": job.to_dict(), "url": url}, status_code=202, headers={"Location": url})


def dedupe_summary(result, view: str) -> dict:
    from ..dedupe import result_rows

    return {"documents": len(result.documents), "threshold": result.threshold, "top_k": result.top_k,
            "keep": result.keep.value, "mode": result.mode.value, "pairs": len(result.pairs),
            "clusters": len(result.clusters), "dropped": len(result.dropped), "search": result.search,
            "recall": None if result.recall is None else result.recall.value,
            "mine_seconds": round(result.mine_seconds, 3), "view": view, "rows": result_rows(result, view)}


@router.get("/jobs/{job_id}", dependencies=READ)
def get_job(job_id: str, request: Request) -> dict:
    """A job's status (queued, running, done, failed), and its result or error."""
    job = _state(request).jobs.get(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {job_id!r} (jobs are kept in memory, the last "
                                             f"{_state(request).jobs.keep})", "job_id")
    return job.to_dict()
