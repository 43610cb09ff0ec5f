"""Near-duplicate mining of an index or a corpus file: vectors in, pairs, clusters and a keep plan out.

This module gets the vectors (stored in an index, or embedded from a corpus file), calls
:mod:`semsearch.mining` and maps positions back to documents. It also holds the approximate mode: an IVF
range search over the vectors, for corpora where the exhaustive search is too slow, with its recall
against the exact answer measured on a sample of documents.

>>> result = dedupe(index="docs", threshold=0.9)
>>> for item in result.dropped:
...     print(item.document.id, "duplicates", item.duplicate_of.id, round(item.score, 3))
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .corpus import Format, guess_format
from .errors import IndexFormatError, InputError, SemsearchError, choice
from .vectors import IndexTypeError
from .mining import (DEFAULT_THRESHOLD, Keep, Pairs, check_threshold, document_pairs, exact_scores,
                     max_pair_similarity, mine_pairs, plan_keep, select_top_k)
from .similarity import normalise_rows

OUT_FORMATS = (Format.JSONL, Format.CSV)  # what --out writes


class Mode(str, Enum):
    EXACT = "exact"              # every pair >= threshold, guaranteed
    APPROXIMATE = "approximate"  # IVF range search; recall measured on a sample
    PARTITIONED = "partitioned"  # exact mining within k-means cells (semsearch.partitioned); recall measured


class Engine(str, Enum):
    LOCAL = "local"  # this process
    RAY = "ray"      # a Ray cluster (semsearch.distributed): encoding over actors, mining as tasks


@dataclass(frozen=True)
class Document:
    """A document as dedupe reports it: its position in the mined order, id, text, and corpus line."""

    position: int
    id: str
    text: str
    line: int | None = None  # line in the corpus file; None for an index


@dataclass(frozen=True)
class DuplicatePair:
    score: float
    a: Document  # the earlier document
    b: Document


@dataclass(frozen=True)
class ClusterMember:
    document: Document
    score: float          # cosine to the cluster's representative (below the threshold in a chain)
    link: Document        # the partner of its best pair
    link_score: float     # that pair's score (>= threshold)


@dataclass(frozen=True)
class Cluster:
    number: int  # 1-based, clusters ordered by their earliest document
    representative: Document
    members: tuple[ClusterMember, ...]  # the others, most similar to the representative first

    @property
    def size(self) -> int:
        return 1 + len(self.members)


@dataclass(frozen=True)
class Dropped:
    document: Document
    duplicate_of: Document  # the representative kept in its place
    score: float            # cosine between the two


@dataclass(frozen=True)
class Recall:
    """Approximate or partitioned mode's recall against the exact search, on the pairs of a sample of documents."""

    sample: int        # documents sampled
    exact_pairs: int   # pairs >= threshold that involve a sampled document (exact search)
    found: int         # of those, how many the approximate search found

    @property
    def value(self) -> float:
        return self.found / self.exact_pairs if self.exact_pairs else 1.0


@dataclass
class DedupeResult:
    """Everything one dedupe run found, with the settings that produced it."""

    source: str
    documents: list[Document]
    threshold: float
    top_k: int | None
    keep: Keep
    mode: Mode
    pairs: list[DuplicatePair]
    clusters: list[Cluster]
    kept: list[Document]
    dropped: list[Dropped]
    encode_seconds: float = 0.0
    mine_seconds: float = 0.0
    recall: Recall | None = None
    search: str = ""  # how the pairs were searched (precision and chunk size, IVF or partition settings)
    engine: Engine = Engine.LOCAL


# ----------------------------------------------------------------------------------------------- entry point
def dedupe(corpus: str | os.PathLike | None = None, index: str | os.PathLike | None = None, *,
           embeddings: str | os.PathLike | None = None,
           threshold: float = DEFAULT_THRESHOLD, top_k: int | None = None, keep: Keep | str = Keep.FIRST,
           mode: Mode | str = Mode.EXACT, model: str | None = None, format: str | None = None,
           text_field: str = "text", id_field: str | None = "id", batch_size: int = 32,
           chunk_size: int | None = None, device: str | None = None, sample: int = 1000,
           partitions: int | None = None, spill: int | None = None, engine: Engine | str = Engine.LOCAL,
           address: str | None = None, workers: int | None = None, gpus_per_worker: float = 0,
           progress: bool = False, passages: bool = False) -> DedupeResult:
    """Mine ``corpus`` (embedded first) or, without one, ``index`` (its stored vectors) for near-duplicates.

    ``embeddings`` (a ``.npy`` or Parquet file, :mod:`semsearch.embeddings_file`) gives precomputed vectors:
    alone, its rows are the documents (ids from Parquet, else row numbers); with ``corpus``, they are the
    records' vectors (``.npy``: row i is record i; Parquet: matched by id) and no model is loaded.
    Pairs with cosine >= ``threshold`` are grouped into clusters (connected components); each cluster
    keeps one document (``keep``: the first, or the longest text) and drops the others.
    ``mode="partitioned"`` mines within ``partitions`` k-means cells with a ``spill`` (see
    :mod:`semsearch.partitioned`). ``engine="ray"`` encodes a corpus and mines on a Ray cluster (``address``,
    default: a local one) with ``workers`` encoding actors (``gpus_per_worker`` each); the result is the
    same. ``progress`` shows bars on stderr. An index whose long documents are in passages is mined by
    document (two documents score as their most similar passages), or with ``passages`` passage by passage
    (ids ``ID#N`` for passage N of a document of several).
    """
    threshold = check_threshold(threshold)
    keep, mode = choice(Keep, keep, "keep rule"), choice(Mode, mode, "mode")
    engine = choice(Engine, engine, "engine")
    if index is not None and (corpus is not None or embeddings is not None):
        raise SemsearchError("give a corpus file (and/or an embeddings file) or an index, not both")
    if passages and index is None:
        raise SemsearchError("passages are those of an index: dedupe --passages needs --index")
    if engine is Engine.RAY:
        from .distributed import connect

        connect(address)
    owners = None
    if embeddings is not None:
        documents, vectors, source = embeddings_vectors(embeddings, corpus, format=format, text_field=text_field,
                                                        id_field=id_field)
        encode_seconds = 0.0
    elif corpus is not None and engine is Engine.RAY:
        from .distributed import embed_corpus

        documents, vectors, encode_seconds, source = embed_corpus(
            corpus, model=model, format=format, text_field=text_field, id_field=id_field,
            batch_size=batch_size, workers=workers, gpus_per_worker=gpus_per_worker)
    elif corpus is not None:
        if Path(str(corpus)).suffix.lower() in (".parquet", ".pq"):
            raise InputError(corpus, "a Parquet corpus is read with --engine ray (or convert it to JSONL)")
        documents, vectors, encode_seconds, source = corpus_vectors(
            corpus, model=model, format=format, text_field=text_field, id_field=id_field,
            batch_size=batch_size, device=device, progress=progress)
    else:
        documents, vectors, source, owners = index_vectors(index, passages=passages)
        encode_seconds = 0.0
    result = dedupe_vectors(vectors, documents, threshold=threshold, top_k=top_k, keep=keep, mode=mode,
                            chunk_size=chunk_size, device=device, sample=sample, partitions=partitions,
                            spill=spill, engine=engine, progress=progress, owners=owners)
    result.source, result.encode_seconds = source, encode_seconds
    return result


def index_vectors(index: str | os.PathLike | None = None, *,
                  passages: bool = False) -> tuple[list[Document], np.ndarray, str, np.ndarray | None]:
    """The documents of an index (row-id order), their stored vectors (nothing is re-encoded) and, when some
    document has several (passages), the document of each vector (else None). ``passages``: one document per
    passage instead (``ID#N`` for passage N of a document of several, its text the passage's)."""
    from .index import Index
    from .index.passages import passages_of, rowids_of

    with Index.open(index) as opened:
        try:
            rowids, vectors = opened.stored_vectors()
        except (RuntimeError, AttributeError, IndexTypeError) as exc:  # a FAISS index type that keeps no raw vectors
            raise IndexFormatError(
                f"{opened.path}: its FAISS index ({opened.manifest.faiss.get('factory')}) cannot return the stored "
                f"vectors ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}); dedupe the corpus "
                "file instead: semsearch dedupe CORPUS") from None
        vector_ids, rowids = rowids, rowids_of(rowids)
        stored = opened.fetch_rowids(np.unique(rowids).tolist())
        missing = [r for r in rowids.tolist() if r not in stored]
        if missing:
            raise IndexFormatError(f"{opened.path}: {len(missing)} vectors have no document (first row id "
                                   f"{missing[0]}); the index is damaged")
        if passages:
            documents = []
            for position, (rowid, number) in enumerate(zip(rowids.tolist(), passages_of(vector_ids).tolist())):
                doc = stored[rowid]
                if doc.passages is None:
                    documents.append(Document(position, doc.id, doc.text))
                else:
                    start, end = doc.passage(number)
                    documents.append(Document(position, f"{doc.id}#{number}", doc.text[start:end]))
            return documents, vectors, str(opened.path), None
        order = list(dict.fromkeys(rowids.tolist()))  # row-id order, each document once
        documents = [Document(position, stored[r].id, stored[r].text) for position, r in enumerate(order)]
        if len(order) == len(rowids):
            return documents, vectors, str(opened.path), None
        position_of = {r: p for p, r in enumerate(order)}
        owners = np.array([position_of[r] for r in rowids.tolist()], dtype=np.int64)
        return documents, vectors, str(opened.path), owners


def corpus_vectors(corpus: str | os.PathLike, *, model: str | None = None, format: str | None = None,
                   text_field: str = "text", id_field: str | None = "id", batch_size: int = 32,
                   device: str | None = None, progress: bool = False) -> tuple[list[Document], np.ndarray, float, str]:
    """Read and embed a corpus file (same readers as ``semsearch index``). Identical texts are embedded once."""
    from .corpus import STDIN, read_records
    from .encoder import Encoder

    source = "<stdin>" if str(corpus) == STDIN else str(corpus)
    records = list(read_records(corpus, format=format, text_field=text_field, id_field=id_field))
    if not records:
        raise InputError(source, "no records: the file is empty")
    documents = [Document(i, r.id, r.text, r.line) for i, r in enumerate(records)]
    unique: dict[str, int] = {}
    slots = np.array([unique.setdefault(r.text, len(unique)) for r in records], dtype=np.int64)
    encoder = Encoder.load(model, device=device, backend="auto")  # onnx where it applies
    started = time.perf_counter()
    vectors = encoder.encode(list(unique), batch_size=batch_size, show_progress=progress)[slots]
    return documents, vectors, time.perf_counter() - started, source


def embeddings_vectors(embeddings: str | os.PathLike, corpus: str | os.PathLike | None = None, *,
                       format: str | None = None, text_field: str = "text",
                       id_field: str | None = "id") -> tuple[list[Document], np.ndarray, str]:
    """Documents and vectors from a precomputed embeddings file, with the corpus they belong to if given."""
    from .embeddings_file import read_embeddings

    if corpus is None:
        emb = read_embeddings(embeddings)
        ids = emb.ids if emb.ids is not None else [str(i) for i in range(1, len(emb) + 1)]
        return [Document(i, doc_id, "") for i, doc_id in enumerate(ids)], emb.vectors, str(embeddings)
    from .corpus import STDIN, read_records

    source = "<stdin>" if str(corpus) == STDIN else str(corpus)
    records = list(read_records(corpus, format=format, text_field=text_field, id_field=id_field))
    if not records:
        raise InputError(source, "no records: the file is empty")
    emb = read_embeddings(embeddings, count=len(records))
    vectors = emb.vectors
    if emb.ids is not None:
        row = {doc_id: i for i, doc_id in enumerate(emb.ids)}
        missing = next((r for r in records if r.id not in row), None)
        if missing is not None:
            raise InputError(embeddings, f"no row for id {missing.id!r} ({source} line {missing.line})")
        vectors = vectors[np.array([row[r.id] for r in records], dtype=np.int64)]
    return [Document(i, r.id, r.text, r.line) for i, r in enumerate(records)], vectors, source


def dedupe_vectors(vectors: np.ndarray, documents: Sequence[Document], *, threshold: float = DEFAULT_THRESHOLD,
                   top_k: int | None = None, keep: Keep | str = Keep.FIRST, mode: Mode | str = Mode.EXACT,
                   chunk_size: int | None = None, device: str | None = None, sample: int = 1000,
                   partitions: int | None = None, spill: int | None = None, engine: Engine | str = Engine.LOCAL,
                   progress: bool = False, source: str = "", owners: np.ndarray | None = None) -> DedupeResult:
    """Mine ``vectors`` (row ``i`` belongs to ``documents[i]``, or with ``owners`` to ``documents[owners[i]]``:
    documents of several vectors, scored by their best pair) and turn the pairs into clusters and a plan."""
    keep, mode = choice(Keep, keep, "keep rule"), choice(Mode, mode, "mode")
    engine = choice(Engine, engine, "engine")
    if mode is not Mode.PARTITIONED and (partitions is not None or spill is not None):
        raise SemsearchError("partitions and spill apply to the partitioned mode")
    if owners is None and len(vectors) != len(documents):
        raise SemsearchError(f"{len(vectors)} vectors for {len(documents)} documents")
    import torch  # noqa: F401  (imported before the clock starts: its import is not mining time)

    started = time.perf_counter()
    recall = None
    vector_top_k = top_k if owners is None else None  # passages: every pair, top k applies to the documents
    with _bar(len(vectors), progress, exhaustive=mode is not Mode.PARTITIONED) as bar:
        if len(vectors) < 2:
            pairs = mine_pairs(vectors, threshold, top_k=vector_top_k, chunk_size=chunk_size, device=device)
            search = "fewer than two documents: nothing to compare"
        elif mode is Mode.EXACT and engine is Engine.RAY:
            from .distributed import mine_pairs_ray

            pairs = mine_pairs_ray(vectors, threshold, top_k=vector_top_k, chunk_size=chunk_size)
            search = f"exact, Ray tasks over row-block pairs, {pairs.dtype} blocks of {pairs.chunk_size}, " \
                     "float64 re-scoring"
        elif mode is Mode.EXACT:
            pairs = mine_pairs(vectors, threshold, top_k=vector_top_k, chunk_size=chunk_size, device=device,
                               progress=bar.update)
            search = f"exact, {pairs.dtype} search in blocks of {pairs.chunk_size}, float64 re-scoring"
        elif mode is Mode.PARTITIONED:
            pairs, recall, search = _partitioned(vectors, threshold, top_k=vector_top_k, partitions=partitions,
                                                 spill=spill,
                                                 sample=sample, chunk_size=chunk_size, device=device, engine=engine,
                                                 progress=bar.update)
        else:
            pairs, recall, search = mine_approximate(vectors, threshold, top_k=vector_top_k, sample=sample,
                                                     progress=bar.update)
    similarity = None
    if owners is not None:  # passages: pairs of documents from pairs of their passages
        pairs = document_pairs(replace(pairs, top_k=top_k), owners, len(documents))
        similarity = max_pair_similarity(vectors, owners)
        search += f"; {len(vectors):,} passages, a pair of documents scored as its most similar passages"
    mine_seconds = time.perf_counter() - started
    plan = plan_keep(pairs, vectors, keep, lengths=[len(d.text) for d in documents], similarity=similarity)
    docs = list(documents)
    clusters = [
        Cluster(number, docs[g.representative], tuple(
            ClusterMember(docs[m], s, docs[link], link_score)
            for m, s, link, link_score in zip(g.members.tolist(), g.scores.tolist(), g.links.tolist(),
                                              g.link_scores.tolist())))
        for number, g in enumerate(plan.groups, start=1)]
    return DedupeResult(
        source=source, documents=docs, threshold=threshold, top_k=top_k, keep=keep, mode=mode,
        pairs=[DuplicatePair(p.score, docs[p.left], docs[p.right]) for p in pairs],
        clusters=clusters,
        kept=[docs[i] for i in plan.kept.tolist()],
        dropped=[Dropped(docs[i], docs[r], s) for i, r, s in
                 zip(plan.dropped.tolist(), plan.duplicate_of.tolist(), plan.scores.tolist())],
        mine_seconds=mine_seconds, recall=recall, search=search, engine=engine)


def _partitioned(vectors: np.ndarray, threshold: float, *, top_k: int | None, partitions: int | None,
                 spill: int | None, sample: int, chunk_size: int | None, device: str | None, engine: Engine,
                 progress: Callable[[int], None] | None) -> tuple[Pairs, Recall, str]:
    """Partitioned mining (locally or on Ray), its recall on a sample, then the top-k cap if any."""
    if sample < 1:
        raise SemsearchError(f"the recall sample must hold at least 1 document, got {sample}")
    if engine is Engine.RAY:
        from .distributed import mine_partitioned_ray as mine
    else:
        from .partitioned import mine_partitioned as mine
    found, cells = mine(vectors, threshold, partitions=partitions, spill=spill, chunk_size=chunk_size,
                        device=device, progress=progress)
    recall = _recall(np.asarray(vectors, dtype=np.float32), found.left, found.right, threshold, sample, seed=0)
    if top_k is not None:
        from .partitioned import ordered_pairs

        keep = select_top_k(found.left, found.right, found.scores, top_k)
        found = ordered_pairs(found.left[keep], found.right[keep], found.scores[keep], threshold, found.n,
                              found.candidates, top_k)
    where = ", on Ray tasks" if engine is Engine.RAY else ""
    return found, recall, f"{cells.describe(len(vectors))}{where}, float64 re-scoring"


def _bar(n: int, enabled: bool, exhaustive: bool = True):
    import sys

    from tqdm.auto import tqdm

    total = (n * (n - 1) // 2 if n > 1 else 0) if exhaustive else None  # partitioned: not known ahead
    return tqdm(total=total, unit="pair", unit_scale=True, desc="mining", disable=not enabled, leave=False,
                file=sys.stderr)


# ----------------------------------------------------------------------------------------------- approximate
def mine_approximate(embeddings: np.ndarray, threshold: float = DEFAULT_THRESHOLD, *, top_k: int | None = None,
                     nlist: int | None = None, nprobe: int | None = None, sample: int = 1000, seed: int = 0,
                     progress: Callable[[int], None] | None = None) -> tuple[Pairs, Recall, str]:
    """Pairs >= ``threshold`` found by an IVF range search (FAISS), and the recall of that search.

    The vectors are split into ``nlist`` clusters (default 2·√n, k-means on 40 points per list); each
    document is searched in its ``nprobe`` nearest clusters (default 8), from both sides of every pair.
    Found pairs are re-scored exactly, so every reported pair is a true one; some may be missed. The
    recall is measured against an exact search for ``sample`` random documents (seeded): of all pairs
    >= threshold that involve a sampled document, the share found. With ``top_k``, the cap is applied to
    the pairs found.
    """
    import faiss

    threshold = check_threshold(threshold)
    matrix = np.asarray(embeddings, dtype=np.float32)
    n = len(matrix)
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return Pairs(empty, empty, np.zeros(0), threshold, n, top_k), Recall(min(n, sample), 0, 0), "approximate"
    if sample < 1:
        raise SemsearchError(f"the recall sample must hold at least 1 document, got {sample}")
    d = matrix.shape[1]
    unit = np.ascontiguousarray(normalise_rows(matrix))
    nlist = nlist or min(int(2 * math.sqrt(n)), n // 40)  # k-means wants >= 39 points per list
    nprobe = min(max(nlist, 1), nprobe or 8)
    if nlist < 2:  # too few documents to partition: one flat list, searched exhaustively
        ivf, nlist, nprobe = faiss.IndexFlatIP(d), 1, 1
    else:
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed, ivf.cp.niter, ivf.cp.max_points_per_centroid = seed, 10, 40  # coarse lists train fast
        points = min(n, 40 * nlist)
        ivf.train(unit if points == n else unit[np.sort(np.random.default_rng(seed).choice(n, points, replace=False))])
        ivf.nprobe = nprobe
    ivf.add(unit)
    radius = threshold - 1e-4  # range search keeps scores > radius; float32 slack, re-scored below
    lefts, rights = [], []
    step = 4096
    for start in range(0, n, step):
        lims, _, found = ivf.range_search(unit[start:start + step], radius)
        queries = np.repeat(np.arange(start, min(n, start + step), dtype=np.int64), np.diff(lims).astype(np.int64))
        lefts.append(queries)
        rights.append(found.astype(np.int64))
        if progress is not None:
            rows = min(n, start + step) - start
            progress(rows * (n - 1) // 2)
    left, right = np.concatenate(lefts), np.concatenate(rights)
    left, right = np.minimum(left, right), np.maximum(left, right)
    distinct = left != right
    codes = np.unique(left[distinct] * n + right[distinct])
    left, right = codes // n, codes % n
    scores = exact_scores(matrix, left, right)
    keep = scores >= threshold
    left, right, scores = left[keep], right[keep], scores[keep]
    recall = _recall(matrix, left, right, threshold, sample, seed)
    if top_k is not None:
        keep = select_top_k(left, right, scores, top_k)
        left, right, scores = left[keep], right[keep], scores[keep]
    order = np.lexsort((right, left, -scores))
    pairs = Pairs(left[order], right[order], scores[order], threshold, n, top_k, candidates=len(codes))
    how = f"IVF {nlist} lists, {nprobe} probed" if nlist > 1 else "one flat list (too few documents for IVF)"
    return pairs, recall, f"approximate, {how}, float64 re-scoring"


def _recall(matrix: np.ndarray, left: np.ndarray, right: np.ndarray, threshold: float, sample: int,
            seed: int) -> Recall:
    """Recall of the found pairs against an exact search for ``sample`` random documents."""
    n = len(matrix)
    chosen = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    in_sample = np.zeros(n, dtype=bool)
    in_sample[chosen] = True
    a, b = mine_rows(matrix, chosen, threshold)
    exact = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    touched = in_sample[left] | in_sample[right]
    found = np.intersect1d(exact, left[touched] * n + right[touched])
    return Recall(len(chosen), len(exact), len(found))


def mine_rows(matrix: np.ndarray, rows: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact: ``(row, partner)`` for every partner of each of ``rows`` with cosine >= threshold (no self)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    unit = normalise_rows(matrix)
    lefts, rights = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start in range(0, len(rows), 256):
        part = np.asarray(rows[start:start + 256], dtype=np.int64)
        r, c = np.nonzero(unit[part] @ unit.T >= threshold - 1e-4)  # float32 slack, re-scored below
        a, b = part[r], c.astype(np.int64)
        a, b = a[a != b], b[a != b]
        keep = exact_scores(matrix, a, b) >= threshold
        lefts.append(a[keep])
        rights.append(b[keep])
    return np.concatenate(lefts), np.concatenate(rights)


# ----------------------------------------------------------------------------------------------- output
class View(str, Enum):
    PAIRS = "pairs"
    CLUSTERS = "clusters"
    PLAN = "plan"


def result_rows(result: DedupeResult, view: View | str = View.PAIRS) -> list[dict]:
    """Flat records of one view of a result, the same keys for JSON lines and CSV.

    pairs: ``score, id_a, id_b, text_a, text_b``; clusters: one row per document, ``cluster, size, id,
    representative, score, link_id, link_score, text``; plan: one row per document, ``id, action,
    duplicate_of, score``. Corpus input adds the line numbers (``line_a``/``line_b``, ``line``).
    """
    view = choice(View, view, "view")
    lines = bool(result.documents) and result.documents[0].line is not None
    rows: list[dict] = []
    if view is View.PAIRS:
        for p in result.pairs:
            row = {"score": round(p.score, 6), "id_a": p.a.id, "id_b": p.b.id, "text_a": p.a.text, "text_b": p.b.text}
            if lines:
                row.update(line_a=p.a.line, line_b=p.b.line)
            rows.append(row)
    elif view is View.CLUSTERS:
        for c in result.clusters:
            members = [(c.representative, True, 1.0, None, None)] + [
                (m.document, False, m.score, m.link.id, m.link_score) for m in c.members]
            for doc, is_rep, score, link_id, link_score in members:
                row = {"cluster": c.number, "size": c.size, "id": doc.id, "representative": is_rep,
                       "score": round(score, 6), "link_id": link_id,
                       "link_score": None if link_score is None else round(link_score, 6), "text": doc.text}
                if lines:
                    row["line"] = doc.line
                rows.append(row)
    else:
        dropped = {item.document.position: item for item in result.dropped}
        for doc in result.documents:
            item = dropped.get(doc.position)
            row = {"id": doc.id, "action": "drop" if item else "keep",
                   "duplicate_of": item.duplicate_of.id if item else None,
                   "score": round(item.score, 6) if item else None}
            if lines:
                row["line"] = doc.line
            rows.append(row)
    return rows


def out_format(path: str | os.PathLike) -> Format:
    """The format an output file's suffix names: JSON lines or CSV (anything else is an :class:`InputError`)."""
    fmt = guess_format(path, default=None)
    if fmt not in OUT_FORMATS:
        raise InputError(path, "use a .jsonl or .csv file (JSON lines or CSV)")
    return fmt


def write_rows(path: str | os.PathLike, rows: list[dict], fields: Sequence[str] | None = None) -> str:
    """Write records as JSON lines (``.jsonl``, ``.ndjson``, ``.json``) or CSV (``.csv``), atomically.

    Returns the format written. CSV needs ``fields`` (the header) when ``rows`` is empty.
    """
    path = Path(path)
    fmt = out_format(path)
    if not path.parent.is_dir():
        raise InputError(path, "its folder does not exist")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            if fmt is Format.CSV:
                header = list(fields or (rows[0].keys() if rows else []))
                writer = csv.DictWriter(fh, fieldnames=header)
                writer.writeheader()
                writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
            else:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(path, f"cannot be written ({exc.strerror})") from None
    return fmt.value


def view_fields(view: View | str, lines: bool) -> list[str]:
    """The column names of a view (for a CSV header when there are no rows)."""
    view = choice(View, view, "view")
    if view is View.PAIRS:
        return ["score", "id_a", "id_b", "text_a", "text_b"] + (["line_a", "line_b"] if lines else [])
    if view is View.CLUSTERS:
        return ["cluster", "size", "id", "representative", "score", "link_id", "link_score", "text"] + (
            ["line"] if lines else [])
    return ["id", "action", "duplicate_of", "score"] + (["line"] if lines else [])


__all__ = ["Mode", "Engine", "View", "Document", "DuplicatePair", "Cluster", "ClusterMember", "Dropped", "Recall",
           "DedupeResult", "dedupe", "dedupe_vectors", "index_vectors", "corpus_vectors", "embeddings_vectors",
           "mine_approximate", "mine_rows", "result_rows", "write_rows", "out_format", "OUT_FORMATS", "view_fields"]
