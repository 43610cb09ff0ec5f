"""Retrieval evaluation on a collection in the BEIR layout.

A folder holds::

    corpus.jsonl         {"_id": ..., "title": ..., "text": ...} per line
    queries.jsonl        {"_id": ..., "text": ...} per line
    qrels/test.tsv       query-id, corpus-id, score (graded; a header row), or qrels.tsv beside the others

Documents are ranked exactly (every query against every document) by a model, or by an existing index,
and scored with :mod:`semsearch.metrics`. As in BEIR, a document whose id equals the query's id is dropped
from that query's results (some collections hold every query as a document too).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from .corpus import json_objects
from .errors import InputError
from .metrics import RECALL_AT, RetrievalMetrics, retrieval_metrics
from .similarity import normalise_rows

if TYPE_CHECKING:
    from .encoder import Encoder
    from .index import Index

DEFAULT_DEPTH = 1000


@dataclass
class BeirCollection:
    folder: Path
    corpus: dict[str, str]  # id -> "title text" (empty when ranking with an index)
    queries: dict[str, str]  # id -> text, for the judged queries
    qrels: dict[str, dict[str, int]]  # query id -> {document id: grade}


@dataclass(frozen=True)
class RetrievalResult:
    metrics: RetrievalMetrics
    ranked_by: str  # the model or index that ranked
    documents: int  # documents ranked over


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    if not path.is_file():
        raise InputError(path, "no such file (a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/test.tsv)")
    with path.open(encoding="utf-8") as fh:
        for line, obj, problem in json_objects(enumerate(fh, start=1)):
            if problem:
                raise InputError(path, problem, line)
            if "_id" not in obj:
                raise InputError(path, "expected a JSON object with an _id", line)
            yield line, obj


def qrels_path(folder: Path, split: str = "test") -> Path:
    for candidate in (folder / "qrels" / f"{split}.tsv", folder / "qrels.tsv"):
        if candidate.is_file():
            return candidate
    raise InputError(folder, f"no qrels: expected qrels/{split}.tsv or qrels.tsv")


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``query-id, corpus-id, score`` rows (tab-separated; a header row is optional)."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for row in reader:
            line = reader.line_num
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise InputError(path, f"expected query-id, corpus-id, score; got {len(row)} fields", line)
            try:
                grade = float(row[2])
            except ValueError:
                if line == 1:
                    continue  # the header
                raise InputError(path, f"score {row[2]!r} is not a number", line) from None
            if not grade.is_integer():
                raise InputError(path, f"score {row[2]!r} is not a whole number (grades are 0, 1, 2, ...)", line)
            qrels.setdefault(row[0].strip(), {})[row[1].strip()] = int(grade)
    if not qrels:
        raise InputError(path, "no judgements")
    return qrels


def read_beir(folder: str | os.PathLike, split: str = "test", with_corpus: bool = True) -> BeirCollection:
    """The judged queries, their judgements and (``with_corpus``) the documents of a BEIR folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such folder")
    qrels = read_qrels(qrels_path(folder, split))
    queries: dict[str, str] = {}
    for line, obj in _jsonl(folder / "queries.jsonl"):
        qid = str(obj["_id"])
        if qid in qrels:
            if not isinstance(obj.get("text"), str):
                raise InputError(folder / "queries.jsonl", "no text", line)
            queries[qid] = obj["text"]
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise InputError(folder / "queries.jsonl", f"{len(missing)} judged queries are missing (first: {missing[0]!r})")
    corpus: dict[str, str] = {}
    if with_corpus:
        for line, obj in _jsonl(folder / "corpus.jsonl"):
            title, text = obj.get("title") or "", obj.get("text")
            if not isinstance(text, str) or not isinstance(title, str):
                raise InputError(folder / "corpus.jsonl", "title and text must be strings", line)
            corpus[str(obj["_id"])] = (title + " " + text).strip()
        if not corpus:
            raise InputError(folder / "corpus.jsonl", "no documents")
    return BeirCollection(folder, corpus, queries, qrels)


def rank_exact(encoder: "Encoder", corpus: dict[str, str], queries: dict[str, str], depth: int,
               batch_size: int = 32, chunk: int = 256) -> dict[str, list[str]]:
    """The ``depth`` documents most similar to each query by cosine, best first (ties: corpus order)."""
    ids = list(corpus)
    documents = encoder.encode([corpus[i] for i in ids], batch_size=batch_size)
    qids = list(queries)
    vectors = encoder.encode([queries[q] for q in qids], batch_size=batch_size)
    documents = normalise_rows(documents, copy=False)
    vectors = normalise_rows(vectors, copy=False)
    depth = min(depth, len(ids))
    run: dict[str, list[str]] = {}
    for start in range(0, len(qids), chunk):
        scores = vectors[start:start + chunk] @ documents.T
        for row, qid in zip(scores, qids[start:start + chunk]):
            top = np.argpartition(-row, depth - 1)[:depth] if depth < len(ids) else np.arange(len(ids))
            top = top[np.lexsort((top, -row[top]))]
            run[qid] = [ids[i] for i in top]
    return run


def rank_with_index(index: "Index", queries: dict[str, str], depth: int) -> dict[str, list[str]]:
    qids = list(queries)
    hits = index.search([queries[q] for q in qids], k=depth)
    return {qid: [h.id for h in row] for qid, row in zip(qids, hits)}


def evaluate_retrieval(folder: str | os.PathLike, *, index: str | os.PathLike | None = None,
                       model: str | os.PathLike | None = None, encoder: "Encoder | None" = None,
                       split: str = "test", depth: int = DEFAULT_DEPTH, batch_size: int = 32,
                       ignore_identical_ids: bool = True) -> RetrievalResult:
    """nDCG@10, MRR@10, recall@1/10/100 and MAP of ranking a BEIR folder's corpus for its queries.

    With ``index``, the documents are those of that index (built from the corpus with ``--id-field _id``)
    ranked by its own model; otherwise every document of ``corpus.jsonl`` is ranked exactly by ``model``.
    """
    depth = max(depth, max(RECALL_AT))
    if index is not None:
        from .index import Index

        collection = read_beir(folder, split, with_corpus=False)
        with Index.open(index) as opened:
            run = rank_with_index(opened, collection.queries, depth + 1)
            ranked_by, documents = f"index {opened.path} ({opened.spec.model})", len(opened)
    else:
        from .encoder import Encoder

        collection = read_beir(folder, split)
        encoder = encoder or Encoder.load(model)
        run = rank_exact(encoder, collection.corpus, collection.queries, depth + 1, batch_size)
        ranked_by, documents = encoder.spec.model, len(collection.corpus)
    if ignore_identical_ids:
        run = {qid: [d for d in ranking if d != qid] for qid, ranking in run.items()}
    run = {qid: ranking[:depth] for qid, ranking in run.items()}
    return RetrievalResult(retrieval_metrics(run, collection.qrels, RECALL_AT, depth), ranked_by, documents)
