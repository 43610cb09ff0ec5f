"""`semsearch serve`: every endpoint and its errors through FastAPI's TestClient (a FakeEncoder injected with
create_app's hook), the batcher, generation switching, the token, the limits, and a real server killed with
SIGKILL during a write."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from semsearch.corpus import Record, read_records  # noqa: E402
from semsearch.errors import SemsearchError  # noqa: E402
from semsearch.index import Index, IndexWriter  # noqa: E402
from semsearch.server.app import create_app  # noqa: E402

from .conftest import FakeEncoder  # noqa: E402

TOPICS = ["parse a date", "copy a directory tree", "read a file line by line", "sort a list", "open a socket"]


def make_docs(n: int = 30) -> list[Record]:
    return [Record(text=f"{TOPICS[i % len(TOPICS)]} (document {i})", id=f"d{i}", line=i + 1,
                   meta={"lang": "en" if i % 3 else "de", "year": 2000 + i})
            for i in range(n)]


@pytest.fixture
def docs_index(tmp_path, fake_encoder) -> Path:
    path = tmp_path / "indexes" / "docs"
    with IndexWriter(path, fake_encoder) as writer:
        writer.add(make_docs())
    return path


@contextmanager
def serve(path, encoder, **options):
    with TestClient(create_app(path, encoder=encoder, **options)) as client:
        yield client


@pytest.fixture
def client(docs_index, fake_encoder):
    with serve(docs_index, fake_encoder) as c:
        yield c


def error_of(response, status: int, field: str | None = "any") -> dict:
    """The JSON error of a response, after checking its status (and field, unless "any")."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "field"} and error["message"]
    assert "Traceback" not in response.text
    if field != "any":
        assert error["field"] == field, error
    return error


def ids_of(index_path) -> set[str]:
    """Every stored document id, read through a fresh reader."""
    with Index.open(index_path) as index:
        rowids, _ = index.stored_vectors()
        return {doc.id for doc in index.fetch_rowids(rowids.tolist()).values()}


def generation(index_path) -> int:
    from semsearch.server.snapshots import generation_of

    with Index.open(index_path) as index:
        return generation_of(index)


# ------------------------------------------------------------------------------------------ health, info, page
def test_health_and_info(client, docs_index):
    assert client.get("/health").json() == {"status": "ok", "index": True, "writing": False}
    info = client.get("/info").json()
    assert info["index"]["documents"] == 30 and info["index"]["generation"] == 1
    assert info["index"]["name"] == "docs" and info["index"]["encoder"]["model"] == "fake"
    assert info["index"]["manifest"]["counts"]["documents"] == 30
    assert info["server"]["modes"] == ["dense", "lexical", "hybrid"] and info["server"]["token_for_writes"] is False
    assert info["server"]["default_mode"] == "hybrid"  # the page's choice; the API's default stays dense
    assert client.get("/openapi.json").json()["paths"]["/search"]["post"]
    assert client.get("/docs").status_code == 404  # its page would load scripts from a CDN


def test_the_page_is_self_contained_and_escapes_stored_text(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # no CDN, nothing from elsewhere
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html and "document.write" not in html
    assert "textContent" in html
    assert '<label for="q">' in html and "@media (max-width" in html and ":focus-visible" in html
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy and "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"


def test_unknown_endpoint_and_method_are_json(client):
    error_of(client.get("/nothing-here"), 404)
    assert error_of(client.put("/search", json={}), 405)["code"] == "method_not_allowed"


# ------------------------------------------------------------------------------------------ search
def test_search_one_and_many_equal_the_library(client, docs_index, fake_encoder):
    one = client.post("/search", json={"query": "parse a date", "k": 5})
    assert one.status_code == 200
    body = one.json()
    assert body["generation"] == 1 and [r["query"] for r in body["results"]] == ["parse a date"]
    many = client.post("/search", json={"queries": ["sort a list", "open a socket"], "k": 3,
                                        "filters": ["lang=en"], "threshold": -1.0}).json()["results"]
    with Index.open(docs_index) as index:
        index.use_encoder(fake_encoder)
        expected_one = index.search("parse a date", k=5)[0]
        expected_many = index.search(["sort a list", "open a socket"], k=3, filters=["lang=en"], threshold=-1.0)
    assert body["results"][0]["hits"] == [h.to_dict() for h in expected_one]
    assert [r["hits"] for r in many] == [[h.to_dict() for h in hits] for hits in expected_many]
    assert all(h["meta"]["lang"] == "en" for r in many for h in r["hits"])


def test_search_threshold_k_and_knobs(client):
    hits = client.post("/search", json={"query": "parse a date (document 0)", "k": 30,
                                        "threshold": 0.99}).json()["results"][0]["hits"]
    assert [h["id"] for h in hits] == ["d0"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert client.post("/search", json={"query": "x", "filters": ["lang=fr"]}).json()["results"][0]["hits"] == []
    assert len(client.post("/search", json={"query": "x", "k": 1000}).json()["results"][0]["hits"]) == 30


@pytest.mark.parametrize("body, field", [
    ({}, "query"),
    ({"query": "a", "queries": ["b"]}, "query"),
    ({"queries": []}, "queries"),
    ({"query": "   "}, "query"),
    ({"queries": ["fine", ""]}, "queries[1]"),
    ({"query": "a", "k": 0}, "k"),
    ({"query": "a", "k": 1001}, "k"),
    ({"query": "a", "k": "ten"}, "k"),
    ({"query": "a", "threshold": 2}, "threshold"),
    ({"query": "a", "nprobe": 0}, "nprobe"),
    ({"query": "a", "nprobe": 8}, "nprobe"),  # a flat index has no nprobe
    ({"query": "a", "ef_search": 64}, "ef_search"),
    ({"query": "a", "filters": ["lang"]}, "filters[0]"),
    ({"query": "a", "filters": ["lang=en", "bad key=1"]}, "filters[1]"),
    ({"query": "a", "filters": "lang=en"}, "filters"),
    ({"query": "a", "kk": 3}, "kk"),
    ({"query": 3}, "query"),
    ({"query": "a", "mode": "fast"}, "mode"),
    ({"query": "a", "mode": "hybrid", "alpha": 1.5}, "alpha"),
    ({"query": "a", "mode": "dense", "alpha": 0.5}, None),  # alpha weighs the sides of hybrid search only
    ({"query": "a", "mode": "lexical", "threshold": 0.5}, None),  # a threshold is on cosines: dense only
])
def test_bad_searches_are_400_naming_the_field(client, body, field):
    error_of(client.post("/search", json=body), 400, field)


def test_the_three_modes_are_accepted_and_others_refused_by_name(client):
    for mode in ("dense", "lexical", "hybrid"):
        assert client.post("/search", json={"query": "parse a date", "mode": mode}).status_code == 200
    error = error_of(client.post("/search", json={"query": "a", "mode": "bm25"}), 400, "mode")
    assert "'bm25' is not available" in error["message"] and "dense, lexical, hybrid" in error["message"]


def test_hybrid_hits_carry_both_sides_and_lexical_hits_match_words(client):
    found = client.post("/search", json={"query": "copy a directory tree", "mode": "lexical", "k": 5}).json()
    hits = found["results"][0]["hits"]
    assert len(hits) == 5 and all("copy a directory tree" in h["text"] for h in hits)
    assert all(h["mode"] == "lexical" for h in hits) and hits[0]["score"] >= hits[-1]["score"]
    hybrid = client.post("/search", json={"query": "copy a directory tree", "mode": "hybrid", "k": 3,
                                          "filters": ["lang=en"]}).json()["results"][0]["hits"]
    assert len(hybrid) == 3 and all(h["meta"]["lang"] == "en" and h["mode"] == "hybrid" for h in hybrid)
    assert all(set(h) >= {"dense", "lexical"} for h in hybrid)
    assert all(h["lexical"] is not None for h in hybrid)  # every document says "a": all are lexical candidates
    weighted = client.post("/search", json={"query": "copy a directory tree", "mode": "hybrid", "alpha": 0.0,
                                            "k": 3}).json()["results"][0]["hits"]
    assert all("copy a directory tree" in h["text"] for h in weighted)  # alpha 0: the lexical side alone decides


def test_bad_bodies(client):
    assert error_of(client.post("/search", content=b"{nope", headers={"content-type": "application/json"}),
                    400, "body")["code"] == "invalid_json"
    assert error_of(client.post("/search", content=b'{"query": "a"}', headers={"content-type": "text/plain"}),
                    415, "Content-Type")["code"] == "unsupported_media_type"
    error_of(client.post("/search", content=b'{"query": "a"}'), 415, "Content-Type")  # no type at all
    error_of(client.post("/search", content=b'["a"]', headers={"content-type": "application/json"}), 400)


def test_query_and_request_size_limits_are_413(docs_index, fake_encoder):
    with serve(docs_index, fake_encoder, max_query_chars=50, max_queries=3) as c:
        assert c.post("/search", json={"query": "x" * 50}).status_code == 200
        assert error_of(c.post("/search", json={"query": "x" * 51}), 413, "query")["code"] == "query_too_long"
        error_of(c.post("/search", json={"queries": ["a", "x" * 51]}), 413, "queries[1]")
        assert error_of(c.post("/search", json={"queries": ["a"] * 4}), 413, "queries")["code"] == "too_many_queries"
    with serve(docs_index, fake_encoder, max_queries=200) as c:
        assert c.post("/search", json={"queries": ["a"] * 100, "k": 1000}).status_code == 200
        assert error_of(c.post("/search", json={"queries": ["a"] * 101, "k": 1000}), 413, "k")["code"] == \
            "too_many_results"


# ------------------------------------------------------------------------------------------ batching
class GatedEncoder(FakeEncoder):
    """Counts encode() calls; the first one waits at a gate, so the requests behind it queue up."""

    def __init__(self) -> None:
        super().__init__()
        self.encode_calls = 0
        self.entered = threading.Event()
        self.gate = threading.Event()

    def encode(self, texts, batch_size: int = 32, show_progress=None):
        self.encode_calls += 1
        if self.encode_calls == 1:
            self.entered.set()
            self.gate.wait(60)
        return super().encode(texts, batch_size=batch_size, show_progress=show_progress)


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_concurrent_queries_share_encoder_calls_and_equal_unbatched(docs_index, fake_encoder):
    n = 12
    encoder = GatedEncoder()
    texts = [f"query number {i} about {TOPICS[i % len(TOPICS)]}" for i in range(n)]
    settings = [{"k": 3 + i % 3, "filters": ["lang=en"] if i % 2 else []} for i in range(n)]
    responses: dict[int, dict] = {}
    with serve(docs_index, encoder, query_cache=0, batch_wait=0.001, max_batch=64) as c:
        def ask(i):
            responses[i] = c.post("/search", json={"query": texts[i], **settings[i]}).json()

        first = threading.Thread(target=ask, args=(0,))
        first.start()
        assert encoder.entered.wait(60)
        rest = [threading.Thread(target=ask, args=(i,)) for i in range(1, n)]
        for thread in rest:
            thread.start()
        batcher = c.app.state.semsearch.batcher
        wait_until(lambda: batcher.pending >= n - 1, what="the queued requests")
        encoder.gate.set()
        for thread in [first, *rest]:
            thread.join(60)
        assert encoder.encode_calls < n
        assert encoder.encode_calls == batcher.batches == 2
    with Index.open(docs_index) as index:
        index.use_encoder(fake_encoder)
        for i in range(n):
            expected = index.search(texts[i], k=settings[i]["k"], filters=settings[i]["filters"])[0]
            assert responses[i]["results"][0]["hits"] == [h.to_dict() for h in expected]


def test_a_bad_filter_fails_its_own_request_only(docs_index, fake_encoder):
    """Requests batched together but searched separately: one request's SQL error does not spill over."""
    from semsearch.server.batching import QueryBatcher, SearchJob
    from semsearch.server.snapshots import Snapshots

    snapshots = Snapshots(docs_index, encoder=fake_encoder)
    snapshots.refresh()
    batcher = QueryBatcher(snapshots, max_wait=0.05)
    good = SearchJob(["sort a list"], k=2)
    bad = SearchJob(["sort a list"], k=0)  # refused by Index.search_vectors
    batcher.start()
    try:
        futures = [batcher.submit(good), batcher.submit(bad)]
        assert len(futures[0].result(30)[0]) == 2
        with pytest.raises(SemsearchError, match="k must be at least 1"):
            futures[1].result(30)
        assert batcher.batches == 1  # both were in one batch
    finally:
        batcher.stop()
        snapshots.close()


# ------------------------------------------------------------------------------------------ documents: read
def test_get_documents(client):
    assert client.get("/documents/d4").json() == {"id": "d4", "text": "open a socket (document 4)",
                                                  "meta": {"lang": "en", "year": 2004}}
    error_of(client.get("/documents/nope"), 404, "id")
    body = client.post("/documents/get", json={"ids": ["d2", "zz", "d1", "d2"]}).json()
    assert [d["id"] for d in body["documents"]] == ["d2", "d1", "d2"] and body["missing"] == ["zz"]
    error_of(client.post("/documents/get", json={"ids": []}), 400, "ids")
    error_of(client.post("/documents/get", json={"id": ["d1"]}), 400, "id")


def test_ids_with_slashes_and_odd_characters(client):
    odd = "a/b c?d#é"
    assert client.post("/documents", json={"documents": [{"id": odd, "text": "an odd id"}]}).status_code == 200
    from urllib.parse import quote

    assert client.get("/documents/" + quote(odd, safe="")).json()["id"] == odd
    assert client.delete("/documents/" + quote(odd, safe="")).json()["deleted"] == 1


# ------------------------------------------------------------------------------------------ documents: write
def test_add_json_is_searchable_at_once_with_the_cli_id_rules(client, docs_index, tmp_path):
    documents = [{"text": "a brand new text about zebras", "lang": "fr"}, {"id": 7, "text": "an integer id"},
                 {"id": "", "text": "empty id means hash"}, {"id": "x1", "text": "with metadata", "tags": ["a", 1],
                                                            "nested": {"k": None}}]
    response = client.post("/documents", json={"documents": documents})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["read"] == 4 and report["added"] == 4 and report["generation"] == 2
    jsonl = tmp_path / "same.jsonl"
    jsonl.write_text("".join(json.dumps(d) + "\n" for d in documents))
    cli_records = list(read_records(jsonl))
    for record in cli_records:
        stored = client.get(f"/documents/{record.id}").json()
        assert stored == {"id": record.id, "text": record.text, "meta": record.meta}
    hit = client.post("/search", json={"query": "a brand new text about zebras", "k": 1}).json()
    assert hit["generation"] == 2 and hit["results"][0]["hits"][0]["id"] == cli_records[0].id


def test_update_and_unchanged(client):
    first = client.post("/documents", json={"documents": [{"id": "d1", "text": "a changed text"},
                                                          {"id": "d2", "text": client.get("/documents/d2").json()["text"],
                                                           "lang": "de", "year": 2002}]}).json()
    assert (first["updated"], first["unchanged"], first["added"]) == (1, 1, 0)
    assert client.get("/documents/d1").json()["text"] == "a changed text"
    again = client.post("/documents", json={"documents": [{"id": "r", "text": "one"}, {"id": "r", "text": "two"}]})
    assert again.json()["repeated"] == 1 and client.get("/documents/r").json()["text"] == "two"


def test_add_ndjson(client):
    body = '{"id": "n1", "text": "first line"}\n\n{"text": "second line", "lang": "en"}\n'.encode()
    response = client.post("/documents", content=body, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 200 and response.json()["added"] == 2
    assert client.get("/documents/n1").json()["text"] == "first line"


@pytest.mark.parametrize("content_type, body, field, words", [
    ("application/json", {"documents": [{"text": "fine"}, {"id": "x"}]}, "documents[1]", "no 'text' field"),
    ("application/json", {"documents": [{"text": "  "}]}, "documents[0]", "empty"),
    ("application/json", {"documents": [{"text": "ok", "id": [1]}]}, "documents[0]", "string or an integer"),
    ("application/json", {"documents": [{"text": 5}]}, "documents[0]", "not a string"),
    ("application/json", {"documents": ["just text"]}, "documents[0]", ""),
    ("application/json", {"documents": []}, "documents", "empty"),
    ("application/json", {"docs": []}, "docs", "unknown field"),
    ("application/json", b"{oops", "body", "not valid JSON"),
    ("application/x-ndjson", b'{"text": "ok"}\n{"text": "fine"\n', "body", "line 2"),
    ("application/x-ndjson", b'{"text": "ok"}\n[1, 2]\n', "body", "line 2"),
    ("application/x-ndjson", b'{"text": "ok"}\n\xff\n', "body", "line 2"),
    ("application/x-ndjson", b"\n\n", "body", "no documents"),
])
def test_bad_documents_are_400_and_change_nothing(client, docs_index, content_type, body, field, words):
    before = (generation(docs_index), ids_of(docs_index))
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    error = error_of(client.post("/documents", content=content, headers={"content-type": content_type}), 400, field)
    assert words in error["message"]
    assert (generation(docs_index), ids_of(docs_index)) == before


def test_documents_need_a_known_content_type(client):
    error_of(client.post("/documents", content=b'{"text": "a"}', headers={"content-type": "text/plain"}),
             415, "Content-Type")


def test_delete_by_ids_filter_and_path(client, docs_index):
    assert client.post("/documents/delete", json={"ids": ["d1", "nope"]}).json()["deleted"] == 1
    removed = client.request("DELETE", "/documents", json={"filters": ["lang=de"]}).json()
    # 11 of 30 deleted: past 20 %, so the write also compacted the index (one more generation)
    assert removed["deleted"] == 10 and removed["generation"] == generation(docs_index) == 4
    assert client.delete("/documents/d2").json() == {"deleted": 1, "generation": 5}
    error_of(client.delete("/documents/d2"), 404, "id")
    error_of(client.post("/documents/delete", json={}), 400, "ids")
    error_of(client.post("/documents/delete", json={"filters": ["year"]}), 400, "filters[0]")
    assert ids_of(docs_index) == {f"d{i}" for i in range(30) if i % 3 and i not in (1, 2)}
    hits = client.post("/search", json={"query": "x", "k": 100}).json()["results"][0]["hits"]
    assert {h["id"] for h in hits} == ids_of(docs_index)


def test_unknown_index_is_404_until_the_first_write_creates_it(tmp_path, fake_encoder):
    path = tmp_path / "indexes" / "fresh"
    with serve(path, fake_encoder) as c:
        assert c.get("/health").json()["index"] is False
        assert c.get("/info").json()["index"] is None
        assert error_of(c.post("/search", json={"query": "a"}), 404)["code"] == "index_not_found"
        error_of(c.get("/documents/a"), 404)
        error_of(c.post("/documents/delete", json={"ids": ["a"]}), 404)
        error_of(c.post("/dedupe", json={}), 404)
        assert c.post("/documents", json={"documents": [{"id": "a", "text": "hello"}]}).json()["generation"] == 1
        assert c.post("/search", json={"query": "hello"}).json()["results"][0]["hits"][0]["id"] == "a"


# ------------------------------------------------------------------------------------------ token
def test_bad_token_is_401_and_changes_nothing(docs_index, fake_encoder):
    before = (generation(docs_index), ids_of(docs_index))
    with serve(docs_index, fake_encoder, token="s3cret") as c:
        add = {"documents": [{"id": "evil", "text": "should not land"}]}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                        {"Authorization": "Basic s3cret"}, {"Authorization": "Bearer "}):
            for method, url, body in (("POST", "/documents", add), ("POST", "/documents/delete", {"ids": ["d1"]}),
                                      ("DELETE", "/documents", {"ids": ["d1"]}), ("DELETE", "/documents/d1", None),
                                      ("POST", "/dedupe", {})):
                response = c.request(method, url, json=body, headers=headers)
                error = error_of(response, 401, "Authorization")
                assert error["code"] == "unauthorized" and response.headers["www-authenticate"].startswith("Bearer")
        assert (generation(docs_index), ids_of(docs_index)) == before
        assert c.post("/search", json={"query": "a"}).status_code == 200  # reads stay open
        assert c.get("/documents/d1").status_code == 200
        ok = c.post("/documents", json=add, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and "evil" in ids_of(docs_index)
        assert c.get("/info").json()["server"]["token_for_writes"] is True


def test_token_for_reads(docs_index, fake_encoder):
    with serve(docs_index, fake_encoder, token="s3cret", token_reads=True) as c:
        for method, url, body in (("POST", "/search", {"query": "a"}), ("GET", "/documents/d1", None),
                                  ("POST", "/documents/get", {"ids": ["d1"]}), ("GET", "/info", None),
                                  ("GET", "/jobs/abc", None)):
            error_of(c.request(method, url, json=body), 401, "Authorization")
            assert c.request(method, url, json=body, headers={"Authorization": "Bearer s3cret"}).status_code in (200, 404)
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200


# ------------------------------------------------------------------------------------------ body limit, hosts, CORS
def test_oversized_bodies_are_413_and_change_nothing(docs_index, fake_encoder):
    before = (generation(docs_index), ids_of(docs_index))
    big = json.dumps({"documents": [{"id": f"b{i}", "text": "x" * 100} for i in range(20)]}).encode()
    assert len(big) > 1024
    with serve(docs_index, fake_encoder, max_body_bytes=1024) as c:
        response = c.post("/documents", content=big, headers={"content-type": "application/json"})
        assert error_of(response, 413, "body")["code"] == "body_too_large"

        def chunks():  # no Content-Length: sent chunked
            for start in range(0, len(big), 200):
                yield big[start:start + 200]

        chunked = c.post("/documents", content=chunks(), headers={"content-type": "application/json"})
        error_of(chunked, 413, "body")
        small = json.dumps({"documents": [{"id": "s", "text": "small"}]}).encode()
        assert c.post("/documents", content=iter([small]), headers={"content-type": "application/json"}).status_code == 200
    assert ids_of(docs_index) == before[1] | {"s"}


def test_host_check(docs_index, fake_encoder):
    with TestClient(create_app(docs_index, encoder=fake_encoder, allowed_hosts=["127.0.0.1", "localhost", "::1"]),
                    base_url="http://127.0.0.1:8000") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/health", headers={"host": "[::1]:8000"}).status_code == 200
        error_of(c.get("/health", headers={"host": "evil.example:8000"}), 400, "Host")


def test_no_cors_unless_asked(docs_index, fake_encoder):
    preflight = {"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    with serve(docs_index, fake_encoder) as c:
        response = c.options("/search", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-origin" not in c.post("/search", json={"query": "a"},
                                                           headers={"Origin": "https://app.example.org"}).headers
    with serve(docs_index, fake_encoder, cors_origins=["https://app.example.org"]) as c:
        assert c.options("/search", headers=preflight).headers["access-control-allow-origin"] == "https://app.example.org"
        other = c.options("/search", headers={**preflight, "Origin": "https://other.example"})
        assert "access-control-allow-origin" not in other.headers


# ------------------------------------------------------------------------------------------ writer busy
def test_writer_busy_is_409(docs_index, fake_encoder):
    before = ids_of(docs_index)
    with serve(docs_index, fake_encoder, write_wait=0.3) as c:
        with IndexWriter(docs_index, fake_encoder, lock_timeout=1):  # another writer holds the index's lock
            error = error_of(c.post("/documents", json={"documents": [{"id": "late", "text": "waits"}]}), 409)
            assert error["code"] == "writer_busy"
            error_of(c.post("/documents/delete", json={"ids": ["d1"]}), 409)
            assert c.post("/search", json={"query": "a"}).status_code == 200  # reads go on
        writes = c.app.state.semsearch.writes
        with writes._lock:  # this server's own writer is busy
            error = error_of(c.post("/documents", json={"documents": [{"id": "late", "text": "waits"}]}), 409)
            assert "this server" in error["message"]
        assert c.post("/documents", json={"documents": [{"id": "late", "text": "waits"}]}).status_code == 200
    assert ids_of(docs_index) == before | {"late"}


def test_writer_busy_error_kinds_map_to_409(monkeypatch):
    from semsearch import errors
    from semsearch.server.errors import api_error

    assert api_error(errors.WriterBusy("/x: another process is writing this index (waited 5 s)")).status == 409
    assert api_error(SemsearchError("/x: another process is writing this index")).status == 400  # by kind only
    assert api_error(errors.IndexNotFoundError("gone")).status == 404


def test_reads_beside_writes_all_answer(client):
    """Readers in threads while this server commits several writes: every read answers, and each reader sees
    generations in order."""
    failures: list[str] = []
    seen: dict[int, list[int]] = {}

    def reader(number: int) -> None:
        seen[number] = []
        for i in range(25):
            response = client.post("/search", json={"query": f"reader {number} asks {i}", "k": 5})
            document = client.get(f"/documents/d{(i % 10) * 3 + 1}")
            if response.status_code != 200 or document.status_code != 200:
                failures.append(f"{response.status_code} {document.status_code}: {response.text[:200]}")
            else:
                seen[number].append(response.json()["generation"])

    readers = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for thread in readers:
        thread.start()
    for round_ in range(5):
        added = client.post("/documents", json={"documents": [{"id": f"w{round_}", "text": f"write {round_}"}]})
        assert added.status_code == 200, added.text
    for thread in readers:
        thread.join(120)
    assert failures == []
    assert all(generations == sorted(generations) for generations in seen.values())
    assert client.post("/search", json={"query": "a"}).json()["generation"] == 6


# ------------------------------------------------------------------------------------------ dedupe jobs
def test_dedupe_job(client):
    for text_id in ("twin-a", "twin-b"):
        client.post("/documents", json={"documents": [{"id": text_id, "text": "exactly the same words"}]})
    start = client.post("/dedupe", json={"threshold": 0.99, "view": "pairs"})
    assert start.status_code == 202 and start.headers["location"] == start.json()["url"]
    url = start.json()["url"]
    wait_until(lambda: client.get(url).json()["status"] in ("done", "failed"), what="the dedupe job")
    job = client.get(url).json()
    assert job["status"] == "done", job
    result = job["result"]
    assert result["documents"] == 32 and result["pairs"] == 1 and result["threshold"] == 0.99
    assert [(row["id_a"], row["id_b"]) for row in result["rows"]] == [("twin-a", "twin-b")]
    plan = client.post("/dedupe", json={"threshold": 0.99, "view": "plan", "keep": "first"}).json()["url"]
    wait_until(lambda: client.get(plan).json()["status"] in ("done", "failed"), what="the second job")
    rows = client.get(plan).json()["result"]["rows"]
    assert [r["id"] for r in rows if r["action"] == "drop"] == ["twin-b"]


@pytest.mark.parametrize("body, field", [({"threshold": 0}, "threshold"), ({"threshold": 1.5}, "threshold"),
                                         ({"keep": "best"}, "keep"), ({"mode": "fast"}, "mode"),
                                         ({"view": "table"}, "view"), ({"top_k": 0}, "top_k")])
def test_bad_dedupe_requests(client, body, field):
    error_of(client.post("/dedupe", json=body), 400, field)


def test_unknown_job_is_404(client):
    assert error_of(client.get("/jobs/0123456789abcdef"), 404, "job_id")["code"] == "job_not_found"


# ------------------------------------------------------------------------------------------ no stack traces
class BrokenEncoder(FakeEncoder):
    def encode(self, texts, batch_size: int = 32, show_progress=None):
        raise RuntimeError("the model fell over at /secret/path/model.bin")


def test_unexpected_errors_are_500_json_without_a_trace(docs_index):
    with TestClient(create_app(docs_index, encoder=BrokenEncoder()), raise_server_exceptions=False) as c:
        error = error_of(c.post("/search", json={"query": "a"}), 500)
        assert error["code"] == "internal" and "/secret/path" not in error["message"]
        assert c.get("/health").status_code == 200  # the batcher survived


# ------------------------------------------------------------------------------------------ generations
def test_a_write_by_another_process_is_picked_up_without_restart(docs_index, fake_encoder):
    with serve(docs_index, fake_encoder, reload_interval=0.05) as c:
        assert c.post("/search", json={"query": "a"}).json()["generation"] == 1
        with IndexWriter(docs_index, fake_encoder) as writer:  # as `semsearch index` in another process would
            writer.add([Record(text="written from elsewhere", id="elsewhere", line=1)])
        wait_until(lambda: c.post("/search", json={"query": "written from elsewhere", "k": 1})
                   .json()["generation"] == 2, what="the new generation")
        hits = c.post("/search", json={"query": "written from elsewhere", "k": 1}).json()["results"][0]["hits"]
        assert hits[0]["id"] == "elsewhere" and c.get("/documents/elsewhere").status_code == 200
        assert c.get("/info").json()["server"]["generations_opened"] == 1


def test_an_old_generation_closes_when_its_last_reader_leaves(docs_index, fake_encoder):
    from semsearch.server.snapshots import Snapshots, generation_of

    snapshots = Snapshots(docs_index, encoder=fake_encoder)
    snapshots.refresh()
    closed: list[int] = []
    with snapshots.lease() as old:
        close = old.close
        old.close = lambda: (closed.append(generation_of(old)), close())
        with IndexWriter(docs_index, fake_encoder) as writer:
            writer.add([Record(text="newer", id="newer", line=1)])
        assert snapshots.refresh() is True
        with snapshots.lease() as new:
            assert generation_of(new) == 2 and len(new) == 31
        assert len(old) == 30 and old.search("newer", k=40)[0]  # still open, still the old snapshot
        assert closed == []
    assert closed == [1]  # closed once its last reader left
    assert snapshots.refresh() is False
    snapshots.close()


# ------------------------------------------------------------------------------------------ the command
def test_serve_usage_errors(tmp_path):
    from click.testing import CliRunner

    from semsearch.cli import main

    result = CliRunner().invoke(main, ["serve", "--index", str(tmp_path / "x"), "--token-reads"], env={"SEMSEARCH_TOKEN": ""})
    assert result.exit_code == 2 and "--token-reads needs a token" in result.output
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        result = CliRunner().invoke(main, ["serve", "--index", str(tmp_path / "x"), "--port",
                                           str(taken.getsockname()[1])])
    finally:
        taken.close()
    assert result.exit_code == 1 and "cannot listen on 127.0.0.1" in result.output and "--port" in result.output
    assert "Traceback" not in result.output
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "manifest.json").write_text("{not json")
    result = CliRunner().invoke(main, ["serve", "--index", str(damaged), "--port", "0"])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "manifest" in result.output
    assert "Traceback" not in result.output


def start_server(index, *args, env=None) -> tuple[subprocess.Popen, str]:
    """A real `semsearch serve` on a free loopback port; returns the process and its base URL."""
    process = subprocess.Popen([sys.executable, "-m", "semsearch", "serve", "--index", str(index), "--port", "0",
                                *args], env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    for line in process.stderr:
        found = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
        if found:
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # keep draining
            return process, found.group(1)
        if time.monotonic() > deadline:
            break
    process.kill()
    raise AssertionError(f"the server did not start: {process.stderr.read()}")


def stop_server(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(30)
    process.stderr.close()


@pytest.mark.slow
def test_sigkill_of_the_server_during_a_write_leaves_the_index_whole(tmp_path, tiny_model_dir):
    """Must show 4: kill -9 of `semsearch serve` in the middle of a POST /documents; the index passes
    `semsearch check` and holds every earlier document, and the new ones all or not at all."""
    import httpx

    index = tmp_path / "indexes" / "t"
    env = {**os.environ}
    corpus = tmp_path / "first.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"a{i}", "text": f"earlier document {i}"}) + "\n" for i in range(300)))
    assert subprocess.run([sys.executable, "-m", "semsearch", "index", str(corpus), "--index", str(index),
                           "--model", str(tiny_model_dir), "-q"], env=env).returncode == 0
    killed_while_writing, committed = 0, 0
    for round_, delay in enumerate((0.0, 0.4)):
        new_ids = {f"b{round_}-{i}" for i in range(20000)}
        new = "".join(json.dumps({"id": f"b{round_}-{i}", "text": f"a new document, number {i}, " * 6}) + "\n"
                      for i in range(20000)).encode()
        process, url = start_server(index, env=env)
        try:
            def send(body=new, url=url):
                try:
                    httpx.post(f"{url}/documents", content=body, headers={"content-type": "application/x-ndjson"},
                               timeout=120)
                except httpx.HTTPError:  # the server is killed under it
                    pass

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            wait_until(lambda: httpx.get(f"{url}/health").json()["writing"], timeout=60, what="the write")
            time.sleep(delay)
            killed_while_writing += httpx.get(f"{url}/health").json()["writing"]
            process.send_signal(signal.SIGKILL)
            process.wait(30)
        finally:
            stop_server(process)
        done = subprocess.run([sys.executable, "-m", "semsearch", "check", "--index", str(index)], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0 and ": ok (" in done.stdout, done.stderr
        stored = ids_of(index)
        assert {f"a{i}" for i in range(300)} <= stored  # every earlier document is there
        landed = stored & new_ids
        assert landed in (set(), new_ids)  # the write is all or nothing
        committed += bool(landed)
        assert len(stored) == 300 + 20000 * committed
    assert killed_while_writing > 0
