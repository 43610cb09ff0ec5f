"""The high-level functions behind the CLI, for use from Python.

>>> import semsearch
>>> semsearch.index_corpus("corpus.jsonl", "docs")
>>> for hit in semsearch.search("parse a date", "docs", k=5)[0]:
...     print(hit.score, hit.id, hit.text)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .corpus import STDIN, Format, read_records
from .errors import InputError
from .index import AddReport, Hit, Index, IndexWriter
from .pooling import Pooling

if TYPE_CHECKING:
    from .encoder import Encoder


def index_corpus(corpus: str | os.PathLike, index: str | os.PathLike | None = None, *,
                 model: str | None = None, pooling: Pooling | str | None = None, encoder: "Encoder | None" = None,
                 format: Format | str | None = None, text_field: str = "text", id_field: str | None = "id",
                 batch_size: int = 32, chunk_size: int = 2048, skip_invalid: bool = False,
                 index_type: str = "auto", precision: str | None = None, embeddings=None, force: bool = False,
                 progress: Callable[[int], None] | None = None) -> AddReport:
    """Embed the records of ``corpus`` into ``index`` (created when missing).

    Nothing is visible until the whole file went through: a bad record leaves the index as it was, unless
    ``skip_invalid``, when bad records are passed over and counted in the report. ``index_type`` applies to a
    new index (``auto``, ``flat``, ``hnsw``, ``ivf``, ``ivfpq`` or a FAISS factory string, see
    :mod:`semsearch.vectors`); ``auto`` is exact flat search unless the file has more lines than
    :data:`~semsearch.vectors.AUTO_FLAT_MAX` (stdin: flat). ``precision="bf16"`` embeds in bfloat16 (a new
    index records it and its queries use it; see :meth:`Encoder.load`); an existing index keeps its own.

    ``embeddings``: precomputed vectors instead of embedding, a float array (row i belongs to record i) or the
    path of a ``.npy``/Parquet file (see :mod:`semsearch.embeddings_file`); ``model`` names the model that made
    them (default: the bundled one), whose dimension they must have. ``force`` creates the index in a folder that
    holds other files (they are never touched).
    """
    skipped: list[InputError] = []
    if encoder is None and (model is not None or pooling is not None) and not _exists(index):
        from .encoder import Encoder

        encoder = Encoder.load(model, pooling=pooling, backend="auto", precision=precision or "fp32")
    records = read_records(corpus, format=format, text_field=text_field, id_field=id_field,
                           on_invalid=skipped.append if skip_invalid else None)
    source = "<stdin>" if str(corpus) == STDIN else str(corpus)
    expected = None
    if str(index_type).strip().lower() == "auto" and str(corpus) != STDIN and not _exists(index):
        expected = _count_lines(corpus)
    vectors = None
    if embeddings is not None:
        records, vectors = _precomputed(records, embeddings, model, index, skip_invalid)
        expected = len(vectors)
    with IndexWriter(index, encoder, model=model, index_type=index_type, expected_count=expected,
                     precision=precision, force=force) as writer:
        if vectors is not None and writer.spec is None and encoder is None:
            writer._encoder = _SpecOnly(_model_spec(model, precision))  # a new index: the model's spec, no weights
        if vectors is not None:
            dimension = (writer.spec or writer.encoder.spec).dimension
            if vectors.shape[1] != dimension:
                raise InputError(str(embeddings) if not hasattr(embeddings, "shape") else "<embeddings>",
                                 f"vectors are {vectors.shape[1]}-d, the index's model gives {dimension}-d")
        report = writer.add(records, vectors=vectors, batch_size=batch_size, chunk_size=chunk_size, source=source,
                            progress=progress)
        report.skipped = len(skipped)
        report.skipped_examples = [str(e) for e in skipped[:5]]
        if report.read == 0:
            raise InputError(source, "no valid records" if skipped else "no records: the file is empty")
    return report


class _SpecOnly:
    """Stands for the encoder of a new index built from precomputed vectors: its spec, no weights loaded."""

    def __init__(self, spec) -> None:
        self.spec = spec
        self.dimension = spec.dimension

    def encode(self, texts, **_):
        from .errors import ModelError

        raise ModelError("this write has precomputed vectors only; an encoder is needed to embed texts")


def _model_spec(model: str | None, precision: str | None):
    """The spec of a model folder read from its files, without loading its weights."""
    from .encoder import DEFAULT_MODEL, Encoder, check_precision, folder_spec, read_st_config, resolve_model

    name = str(model or DEFAULT_MODEL)
    folder = resolve_model(name)
    spec = folder_spec(name, folder, read_st_config(folder), pooling=None, normalize=True, max_length=None,
                       precision=check_precision(precision or "fp32"))
    if not spec.dimension:  # config.json names no hidden size: the model itself says
        return Encoder.load(model, backend="auto", precision=precision or "fp32").spec
    return spec


def _precomputed(records, embeddings, model, index, skip_invalid: bool):
    """Records and the vectors that belong to them, checked (count, dimension, NaN, zero rows) and normalised."""
    import numpy as np

    from .embeddings_file import check_matrix, read_embeddings

    records = list(records)
    if isinstance(embeddings, (str, os.PathLike)) and skip_invalid and \
            not str(embeddings).lower().endswith((".parquet", ".pq")):
        raise InputError(str(embeddings), "rows of a .npy file belong to records by position, so --skip-invalid "
                                          "cannot be used with it (a Parquet file matches vectors by id)")
    if isinstance(embeddings, (str, os.PathLike)):
        loaded = read_embeddings(embeddings, count=None)
        name = str(embeddings)
        if loaded.ids is not None:  # Parquet: matched by id
            by_id = {doc_id: row for row, doc_id in enumerate(loaded.ids)}
            missing = [r.id for r in records if r.id not in by_id]
            if missing:
                raise InputError(name, f"no embedding for id {missing[0]!r} ({len(missing)} records have none)")
            vectors = loaded.vectors[[by_id[r.id] for r in records]]
        else:
            vectors = loaded.vectors
    else:
        name = "<embeddings>"
        vectors = check_matrix(np.asarray(embeddings), name)
    if len(vectors) != len(records):
        raise InputError(name, f"{len(vectors)} vectors for {len(records)} records (one row per record)")
    return records, vectors


def compact_index(index: str | os.PathLike | None = None):
    """Merge an index's segments and purge deleted documents (see :func:`semsearch.index.compact`)."""
    from .index import compact

    return compact(index)


def delete_documents(index: str | os.PathLike | None = None, *, ids: Sequence[str] = (),
                     filters: Sequence[str] | None = None) -> int:
    """Remove documents by id and/or metadata filter (``["lang=de"]``); returns how many were removed."""
    with IndexWriter(index, create=False) as writer:
        return writer.delete(ids, filters)


def _count_lines(path: str | os.PathLike) -> int | None:
    """Newlines in a file (an upper bound on its records, cheap to get); None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 22), b""))
    except OSError:
        return None


def _exists(index) -> bool:
    from .index import MANIFEST, index_path

    return (index_path(index) / MANIFEST).is_file()


def search(queries: str | Sequence[str], index: str | os.PathLike | Index | None = None, *, k: int = 10,
           threshold: float | None = None, filters: Sequence[str] | None = None,
           model: str | None = None, nprobe: int | None = None, ef_search: int | None = None) -> list[list[Hit]]:
    """Nearest documents for each query (one list of hits per query, best first).

    ``filters`` are metadata conditions (``["lang=en", "year>=2020"]``) applied before the vector search.
    ``nprobe`` (IVF indexes) and ``ef_search`` (HNSW) override the index's search defaults.
    """
    if isinstance(index, Index):
        if model is not None:
            index.encoder(model)
        return index.search(queries, k=k, threshold=threshold, filters=filters, nprobe=nprobe, ef_search=ef_search)
    with Index.open(index) as opened:
        if model is not None:
            opened.encoder(model)
        return opened.search(queries, k=k, threshold=threshold, filters=filters, nprobe=nprobe, ef_search=ef_search)


def read_queries(path: str | Path) -> list[str]:
    """One query per non-blank line."""
    from .corpus import _lines, _open

    name = "<stdin>" if str(path) == STDIN else str(path)
    fh = _open(path)
    try:
        queries = [line.strip() for _, line in _lines(fh, name) if line.strip()]
    finally:
        if str(path) != STDIN:
            fh.close()
    if not queries:
        raise InputError(name, "no queries")
    return queries
