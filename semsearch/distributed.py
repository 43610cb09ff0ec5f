"""The Ray engine (``--engine ray``): encoding on actors that load the model once, mining as Ray tasks.

Ray is an optional extra (``pip install 'semsearch[ray]'``); nothing here imports it before it is needed.
What runs where:

* **Reading.** Ray Data read tasks, one per file, running semsearch's own readers: JSONL, CSV/TSV and text
  through :mod:`semsearch.corpus` on the driver's node (where the path was given), so records, ids, line
  numbers and errors are those of a local run; Parquet files, folders of them or object-store prefixes
  (``s3://``, ``gs://``: Arrow's filesystems) on any node, rows numbered per file. Readers take no CPU slot:
  on a small cluster the encoding actors hold them all.
* **Encoding.** ``map_batches`` over an actor pool (``ActorPoolStrategy(size=workers)``): each actor loads
  the encoder once, on CPUs ÷ workers threads or on a GPU, and returns the vectors with the records. Ray
  restarts a dead actor and retries its batch (twice; then the run fails with one line).
* **Writing.** The driver receives the blocks in input order and hands them to one
  :class:`~semsearch.index.IndexWriter` (``add(records, vectors=...)``): documents go to SQLite, row ids are
  given. The vectors of an IVF index (``ivf``, ``auto`` above 200,000 records, or a factory string with an
  ``IndexIVF`` at the top such as ``IVF4096,PQ48``) are not kept on the driver: the first ones train the
  index (:mod:`semsearch.index.ondisk`), each block of ``rows_per_segment`` is added to a copy of it by a Ray
  task, and at the end FAISS's on-disk merge joins the parts into one segment whose inverted lists are a file
  of their own. Other types collect the vectors on the driver. The manifest is swapped once at the end, so a
  failed run leaves the index as it was.
* **Mining.** The vectors go to the object store once. Exact: the rows are cut into blocks and every pair
  of blocks is one task (:func:`semsearch.mining.mine_pairs` with ``split``). Partitioned: the driver
  computes the cells (:mod:`semsearch.partitioned`), tasks mine groups of cells. Pairs and scores are those
  of the local run, bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from .chunking import Chunking
from .errors import InputError, SemsearchError

if TYPE_CHECKING:
    from .corpus import Record
    from .dedupe import Document
    from .index import AddReport
    from .mining import Pairs
    from .partitioned import Partition

INSTALL_HINT = "pip install 'semsearch[ray]'"
#: Fault injection for the tests: a file path. The first encoding actor that finds the file removes it and
#: exits hard in the middle of a batch; if the file holds "always", every actor does, every time. A file whose
#: text starts with "add" ("add once", "add always") does the same to the tasks that fill IVF parts instead.
CRASH_FILE_ENV = "SEMSEARCH_RAY_CRASH_FILE"
ROWS_PER_BATCH = 1024     # records per encoding batch (one actor call); sorted by length inside it
ROWS_PER_SEGMENT = 65536  # records per IndexWriter.add call on the driver; vectors per IVF part (one task each)
RETRIES = 2               # actor restarts and batch retries before a run fails
_ROWS_PER_BLOCK = 4096    # records per block read from a text file


def _ray():
    try:
        import ray
    except ImportError:
        raise SemsearchError(f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (default ``$RAY_ADDRESS``, else a new local one); once per process."""
    ray = _ray()
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ notes would reach the user's terminal
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "a new local cluster"
        raise SemsearchError(f"cannot start or join the Ray cluster ({where}): {_first_line(exc)}") from None


def cluster_cpus() -> int:
    return max(1, int(_ray().cluster_resources().get("CPU", 1)))


# ----------------------------------------------------------------------------------------------- reading
PARQUET_SUFFIXES = (".parquet", ".pq")
_COLUMNS = ("file", "line", "id", "text", "meta", "error", "fatal")


def _records_dataset(corpus: str | os.PathLike, *, format: str | None, text_field: str, id_field: str | None):
    """A Ray dataset of the corpus's records as rows (file, line, id, text, meta as JSON, error, fatal), in order.

    One read task per file, taking no CPU slot (on a small cluster the encoding actors hold them all, and a
    reader waiting for a slot would wait for ever). Text formats are read on the driver's node, where the
    path was given; Parquet files (a file, or a folder or prefix of them) may be local or behind any URI
    Arrow's filesystems open (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``, ``file://``).
    """
    ray = _ray()
    path = str(corpus)
    if path == "-":
        raise SemsearchError("--engine ray reads files, not stdin; save the input to a file first")
    remote = "://" in path
    if (format or "").lower() == "parquet" or remote or Path(path).suffix.lower() in PARQUET_SUFFIXES \
            or Path(path).is_dir():
        tasks = [(_read_parquet_blocks, (name, text_field, id_field)) for name in _parquet_files(path)]
        return ray.data.read_datasource(_CorpusSource(tasks), num_cpus=0)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not Path(path).is_file():  # before any Ray work
        raise InputError(path, "is a directory, not a corpus file" if Path(path).is_dir() else "no such file")
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    tasks = [(_read_text_blocks, (path, format, text_field, id_field))]
    return ray.data.read_datasource(_CorpusSource(tasks), num_cpus=0, scheduling_strategy=here)


def _parquet_files(path: str) -> list[str]:
    """The Parquet files a path names: itself, or the ``*.parquet`` files of a folder or prefix, sorted."""
    import pyarrow.fs as pafs

    try:
        fs, inner = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)
        info = fs.get_file_info(inner)
        if info.type == pafs.FileType.NotFound:
            raise InputError(path, "no such file or folder")
        if info.type == pafs.FileType.File:
            return [path]
        found = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    except (OSError, ValueError) as exc:  # Arrow's errors derive from these
        raise InputError(path, f"cannot be listed ({_first_line(exc)})") from None
    prefix = path[:len(path) - len(inner)] if "://" in path else ""
    files = sorted(prefix + f.path for f in found
                   if f.type == pafs.FileType.File and f.path.lower().endswith(PARQUET_SUFFIXES))
    if not files:
        raise InputError(path, "holds no .parquet files")
    return files


def _corpus_source_class():
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class CorpusSource(Datasource):
        """Ray Data source of a corpus: one read task per (function, arguments), blocks in order."""

        def __init__(self, tasks: list[tuple[Callable, tuple]]) -> None:
            super().__init__()
            self.tasks = tasks

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context=None) -> list:
            return [ReadTask(lambda fn=fn, args=args: fn(*args),
                             BlockMetadata(num_rows=None, size_bytes=None, input_files=[str(args[0])],
                                           exec_stats=None))
                    for fn, args in self.tasks]

    return CorpusSource


def _CorpusSource(tasks: list[tuple[Callable, tuple]]):
    return _corpus_source_class()(tasks)


def _read_text_blocks(path: str, format: str | None, text_field: str, id_field: str | None) -> Iterator:
    """Blocks of a JSONL/CSV/TSV/text file's records, read by :func:`semsearch.corpus.read_records`, in order;
    invalid records become error rows at their place."""
    from .corpus import read_records

    rows: list[dict] = []
    errors: list[InputError] = []

    def error_row(error: InputError, fatal: bool = False) -> dict:
        return _row(path, error.line, error=error.reason, fatal=fatal)

    records = read_records(path, format=format, text_field=text_field, id_field=id_field,
                           on_invalid=errors.append)
    while True:
        fatal = None
        try:
            record = next(records)
        except StopIteration:
            record = None
        except InputError as error:  # one the reader cannot pass over (malformed CSV): the run stops there
            record, fatal = None, error
        rows.extend(error_row(e) for e in errors)  # they come before the next good record, in line order
        errors.clear()
        if fatal is not None:
            rows.append(error_row(fatal, fatal=True))
        if record is None:
            break
        rows.append(_row(path, record.line, record=record))
        if len(rows) >= _ROWS_PER_BLOCK:
            yield _rows_table(rows)
            rows = []
    if rows:
        yield _rows_table(rows)


def _read_parquet_blocks(path: str, text_field: str, id_field: str | None) -> Iterator:
    """Blocks of a Parquet file's records (by the corpus reader's rules), rows numbered from 1 as lines."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from .corpus import record_from_fields

    fs, inner = pafs.FileSystem.from_uri(path) if "://" in path else (None, path)
    try:
        parquet = pq.ParquetFile(inner, filesystem=fs)
    except (OSError, ValueError) as exc:
        yield _rows_table([_row(path, None, error=f"cannot be read as Parquet ({_first_line(exc)})", fatal=True)])
        return
    number = 0
    for batch in parquet.iter_batches(batch_size=_ROWS_PER_BLOCK):
        rows = []
        for values in batch.to_pylist():
            number += 1
            try:
                record = record_from_fields(values, path, number, text_field=text_field, id_field=id_field)
            except InputError as error:
                rows.append(_row(path, None, error=f"row {number}: {error.reason}"))
                continue
            rows.append(_row(path, number, record=record))
        yield _rows_table(rows)


def _row(file: str, line: int | None, *, record: "Record | None" = None, error: str | None = None,
         fatal: bool = False) -> dict:
    if record is None:
        return {"file": file, "line": line, "id": None, "text": None, "meta": None, "error": error, "fatal": fatal}
    return {"file": file, "line": line, "id": record.id, "text": record.text,
            "meta": json.dumps(record.meta, ensure_ascii=False, default=str), "error": None, "fatal": False}


def _rows_table(rows: list[dict]):
    import pyarrow as pa

    schema = pa.schema([("file", pa.string()), ("line", pa.int64()), ("id", pa.string()), ("text", pa.string()),
                        ("meta", pa.string()), ("error", pa.string()), ("fatal", pa.bool_())])
    return pa.Table.from_pylist(rows, schema=schema)


# ----------------------------------------------------------------------------------------------- encoding
class _Embed:
    """A Ray Data actor: loads the encoder once and adds to each batch of records its vectors (``vectors``: one
    per passage, flattened) and the passages' spans (``spans``: flattened pairs; null for one passage, the whole
    text), cut as a local write cuts them (``chunking``; None: each text whole, truncated by the model)."""

    def __init__(self, model: str | None, spec: dict | None, backend: str, precision: str, batch_size: int,
                 threads: int, chunking: "Chunking | None" = None) -> None:
        import torch

        from .encoder import Encoder, EncoderSpec
        from .onnx_backend import THREADS_ENV

        # The CPUs Ray reserved for this actor, for either backend (onnxruntime would otherwise take every core
        # of the node, and each actor on a node would do the same).
        torch.set_num_threads(max(1, threads))
        os.environ[THREADS_ENV] = str(max(1, threads))
        if spec is not None:
            self.encoder = Encoder.from_spec(EncoderSpec.from_dict(spec), backend=backend)
        else:
            self.encoder = Encoder.load(model, backend=backend, precision=precision)
        self.batch_size = batch_size
        from .chunking import chunker_for

        self.chunker = chunker_for(self.encoder.spec, chunking)

    def __call__(self, batch):
        import pyarrow as pa

        from .chunking import passage_texts, passages_of

        _maybe_crash("embed")
        texts = batch.column("text").to_pylist()
        max_length = self.encoder.spec.max_length
        spans = [passages_of(self.chunker, t, max_length) if t is not None else None for t in texts]
        pieces = [[] if t is None else passage_texts(t, s) for t, s in zip(texts, spans)]
        counts = np.array([len(p) for p in pieces], dtype=np.int64)
        d = self.encoder.dimension
        started = time.perf_counter()
        flat = [piece for p in pieces for piece in p]
        vectors = (self.encoder.encode(flat, batch_size=self.batch_size, show_progress=False) if flat
                   else np.zeros((0, d), np.float32))
        seconds = (time.perf_counter() - started) / max(1, len(texts))  # per row: the column sums to actor time
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        passages = pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(vectors, np.float32).reshape(-1)), d)
        column = pa.ListArray.from_arrays(pa.array(offsets), passages)
        flat_spans = [None if s is None else [x for span in s for x in span] for s in spans]
        return (batch.append_column("vectors", column)
                .append_column("spans", pa.array(flat_spans, type=pa.list_(pa.int64())))
                .append_column("encode_s", pa.array(np.full(len(texts), seconds), type=pa.float64())))


def _maybe_crash(stage: str) -> None:
    path = os.environ.get(CRASH_FILE_ENV)
    if not path or not os.path.exists(path):
        return
    try:
        words = Path(path).read_text().split()
        if (words[:1] == ["add"]) != (stage == "add"):
            return
        always = "always" in words
        if not always:
            os.remove(path)  # only one actor wins the removal
    except OSError:
        return
    os._exit(1)


def _embedded_batches(dataset, *, model: str | None, spec: dict | None, backend: str, precision: str,
                      batch_size: int, workers: int | None, rows_per_batch: int, gpus: float,
                      chunking: "Chunking | None" = None) -> Iterator:
    """The dataset's batches, in input order, each with its vectors (passages cut by ``chunking``)."""
    ray = _ray()
    import warnings

    workers = workers or max(1, cluster_cpus() // 2)
    threads = 1 if gpus else max(1, cluster_cpus() // workers)
    with warnings.catch_warnings():
        # Ray 2.60 calls restart limits "ray_remote_args", deprecated for 2.64 with no replacement named yet;
        # without them a batch that kills its actor every time would be retried for ever.
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = dataset.map_batches(
            _Embed, fn_constructor_kwargs=dict(model=model, spec=spec, backend=backend, precision=precision,
                                               batch_size=batch_size, threads=threads, chunking=chunking),
            batch_size=rows_per_batch, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1 if gpus else threads, num_gpus=gpus or None, max_restarts=RETRIES,
            max_task_retries=RETRIES)
    # The dataset's own settings: blocks come back in input order (ids, row ids, "the last one wins"), quietly.
    encoded.context.execution_options.preserve_order = True
    encoded.context.enable_progress_bars = False
    _quiet_ray_data()
    try:
        yield from encoded.iter_batches(batch_size=None, batch_format="pyarrow")
    except SemsearchError:
        raise
    except Exception as exc:  # a Ray failure: actors that kept dying, a lost node, a bad file
        raise SemsearchError(f"the Ray run failed, nothing was written: {_ray_reason(exc)}") from None


def _quiet_ray_data() -> None:
    """Ray Data logs each run's plan and progress at INFO to the terminal: keep warnings only."""
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _batch_records(batch, skipped: list[InputError] | None) -> tuple[list["Record"], np.ndarray,
                                                                     list[list[tuple[int, int]] | None]]:
    """Records, vectors (one row per passage) and each record's passage spans (None: the whole text) of one
    encoded batch; an error row raises (or is collected in ``skipped``)."""
    from .corpus import Record
    from .index.writer import Given

    columns = {c: batch.column(c).to_pylist() for c in _COLUMNS}
    vectors = batch.column("vectors").combine_chunks()  # list<fixed_size_list<float32, d>>: passages per row
    d = vectors.type.value_type.list_size
    matrix = vectors.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, d)
    bounds = np.asarray(vectors.offsets)
    bounds = bounds - bounds[0]  # row i's passages: matrix[bounds[i]:bounds[i + 1]] (flatten() starts at the first)
    spans = [None if s is None else list(zip(s[::2], s[1::2])) for s in batch.column("spans").to_pylist()]
    keep: list[int] = []
    records: list[Record] = []
    for i, error in enumerate(columns["error"]):
        if error is not None:
            problem = InputError(columns["file"][i], error, columns["line"][i])
            if skipped is None or columns["fatal"][i]:
                raise problem
            skipped.append(problem)
            continue
        keep.append(i)
        records.append(Record(text=columns["text"][i], id=columns["id"][i], line=columns["line"][i],
                              meta=json.loads(columns["meta"][i])))
    kept = Given(matrix, spans, np.diff(bounds)).select(keep)
    return records, np.ascontiguousarray(kept.vectors, dtype=np.float32), kept.spans


# ----------------------------------------------------------------------------------------------- index
def index_corpus_ray(corpus: str | os.PathLike, index: str | os.PathLike | None = None, *,
                     model: str | None = None, format: str | None = None, text_field: str = "text",
                     id_field: str | None = "id", batch_size: int = 32, skip_invalid: bool = False,
                     index_type: str = "auto", precision: str | None = None, force: bool = False,
                     address: str | None = None,
                     workers: int | None = None, gpus_per_worker: float = 0,
                     rows_per_batch: int = ROWS_PER_BATCH, rows_per_segment: int = ROWS_PER_SEGMENT,
                     chunking: "Chunking | None" = Chunking(),
                     progress: Callable[[int], None] | None = None) -> "AddReport":
    """:func:`semsearch.api.index_corpus` with the encoding on a Ray cluster; the same index comes out (long
    texts cut into passages on the actors as ``chunking`` says, as a local write cuts them).

    The driver (this process) opens the writer, loads the encoder's spec, and writes the blocks the actors
    return, in input order, ``rows_per_segment`` records per ``add``; the index changes once, at the end. An
    IVF index is trained on the first vectors and filled by Ray tasks, ``rows_per_segment`` vectors each, whose
    parts FAISS merges into one on-disk segment (:meth:`~semsearch.index.IndexWriter.build_on_disk`).
    """
    from .encoder import default_backend
    from .index import AddReport, IndexWriter

    connect(address)
    source = str(corpus)
    started = time.perf_counter()
    dataset = _records_dataset(corpus, format=format, text_field=text_field, id_field=id_field)
    skipped: list[InputError] | None = [] if skip_invalid else None
    total = AddReport()
    expected = _count_rows(source, format)  # chooses "auto"'s type, sizes an IVF index trained before the end
    with IndexWriter(index, model=model, index_type=index_type, expected_count=expected, precision=precision,
                     force=force, chunking=chunking) as writer:
        spec = writer.encoder.spec  # the driver loads the model once too: the manifest records its spec
        _ = writer.chunker  # settings that cannot work with this model fail here, before any Ray work
        if expected is not None:  # an IVF index trained before the end needs its size
            writer.build_on_disk(_RayAdder(), rows_per_part=rows_per_segment, put=_ray().put)
        pending: list[Record] = []
        parts: list[np.ndarray] = []
        spans: list = []

        def flush() -> None:
            if pending:
                _merge(total, writer.add(list(pending), vectors=np.concatenate(parts), passages=list(spans),
                                         source=source))
                pending.clear()
                parts.clear()
                spans.clear()

        for batch in _embedded_batches(dataset, model=None, spec=spec.to_dict(), backend=default_backend(),
                                       precision=spec.precision, batch_size=batch_size, workers=workers,
                                       rows_per_batch=rows_per_batch, gpus=gpus_per_worker, chunking=chunking):
            records, vectors, cut = _batch_records(batch, skipped)
            pending.extend(records)
            parts.append(vectors)
            spans.extend(cut)
            if progress is not None:
                progress(len(batch))
            if len(pending) >= rows_per_segment:
                flush()
        flush()
        total.skipped = len(skipped or [])
        total.skipped_examples = [str(e) for e in (skipped or [])[:5]]
        if total.read == 0:
            raise InputError(source, "no valid records" if skipped else "no records: the file is empty")
    total.seconds = time.perf_counter() - started
    return total


class _RayAdder:
    """IVF parts filled by Ray tasks (one CPU each), retried like the encoding (see ondisk.PartAdder). Results
    are waited for only after the encoding ends: the actors may hold every CPU until then."""

    def __init__(self) -> None:
        self._task = _ray().remote(num_cpus=1, max_retries=RETRIES)(_fill_part)

    def submit(self, template, ids: np.ndarray, vectors: np.ndarray):
        return self._task.remote(template, ids, vectors)

    def ready(self, handle) -> bool:
        done, _ = _ray().wait([handle], timeout=0)
        return bool(done)

    def result(self, handle) -> np.ndarray:
        try:
            return _ray().get(handle)
        except Exception as exc:
            raise SemsearchError(f"the Ray run failed, nothing was written: {_ray_reason(exc)}") from None


def _fill_part(template: np.ndarray, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    import faiss

    from .index.ondisk import add_part

    faiss.omp_set_num_threads(1)  # the one CPU Ray reserved
    _maybe_crash("add")
    return add_part(template, ids, vectors)


def _count_rows(path: str, format: str | None = None) -> int | None:
    """Records in a corpus, an upper bound cheap to get (Parquet footers, or newlines), for ``auto``'s choice
    and an IVF index's size; None when it cannot be had (``auto`` then means flat, IVF is built on the driver)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    try:
        if (format or "").lower() == "parquet" or "://" in path or Path(path).suffix.lower() in PARQUET_SUFFIXES \
                or Path(path).is_dir():
            total = 0
            for name in _parquet_files(path):
                fs, inner = pafs.FileSystem.from_uri(name) if "://" in name else (None, name)
                total += pq.ParquetFile(inner, filesystem=fs).metadata.num_rows
            return total
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 22), b""))
    except (OSError, ValueError, SemsearchError):  # unreadable: the read itself will say so
        return None


def _merge(total: "AddReport", part: "AddReport") -> None:
    for name in ("read", "added", "updated", "unchanged", "repeated", "truncated", "chunked", "passages"):
        setattr(total, name, getattr(total, name) + getattr(part, name))


# ----------------------------------------------------------------------------------------------- dedupe
def embed_corpus(corpus: str | os.PathLike, *, model: str | None = None, format: str | None = None,
                 text_field: str = "text", id_field: str | None = "id", batch_size: int = 32,
                 workers: int | None = None, gpus_per_worker: float = 0,
                 rows_per_batch: int = ROWS_PER_BATCH) -> tuple[list["Document"], np.ndarray, float, str]:
    """:func:`semsearch.dedupe.corpus_vectors` on Ray: documents and vectors in corpus order.

    Identical texts share the vector of their first occurrence (locally they are embedded once), so they
    score exactly 1 with each other whichever batches they fell in.
    """
    from .dedupe import Document
    from .encoder import default_backend

    connect()
    source = str(corpus)
    dataset = _records_dataset(corpus, format=format, text_field=text_field, id_field=id_field)
    started = time.perf_counter()
    documents: list[Document] = []
    parts: list[np.ndarray] = []
    for batch in _embedded_batches(dataset, model=model, spec=None, backend=default_backend(), precision="fp32",
                                   batch_size=batch_size, workers=workers, rows_per_batch=rows_per_batch,
                                   gpus=gpus_per_worker):
        records, vectors, _ = _batch_records(batch, None)
        base = len(documents)
        documents.extend([Document(base + i, r.id, r.text, r.line) for i, r in enumerate(records)])
        parts.append(vectors)
    if not documents:
        raise InputError(source, "no records: the file is empty")
    vectors = np.concatenate(parts)
    first: dict[str, int] = {}
    same = np.array([first.setdefault(d.text, d.position) for d in documents], dtype=np.int64)
    if (same != np.arange(len(documents))).any():
        vectors = vectors[same]
    return documents, vectors, time.perf_counter() - started, source


def mine_pairs_ray(embeddings, threshold: float, *, top_k: int | None = None, chunk_size: int | None = None,
                   block_rows: int | None = None) -> "Pairs":
    """:func:`semsearch.mining.mine_pairs` as Ray tasks, one per pair of row blocks; the same pairs and scores."""
    from .mining import Pairs, _as_matrix, check_threshold, select_top_k

    ray = _ray()
    connect()
    threshold = check_threshold(threshold)
    matrix = _as_matrix(embeddings)
    n = len(matrix)
    if block_rows is None:  # about 4 tasks per CPU: blocks = √(8·CPUs)
        block_rows = max(1024, math.ceil(n / max(1, round(math.sqrt(8 * cluster_cpus())))))
    starts = list(range(0, n, block_rows))
    ref = ray.put(matrix)
    task = ray.remote(num_cpus=1, max_retries=RETRIES)(_mine_block_pair)
    futures = [task.remote(ref, (i, min(n, i + block_rows)), (j, min(n, j + block_rows)), threshold, chunk_size)
               for a, i in enumerate(starts) for j in starts[a:]]
    left, right, scores, candidates, dtypes, chunks = _gather(ray, futures)
    if top_k is not None:
        keep = select_top_k(left, right, scores, top_k)
        left, right, scores = left[keep], right[keep], scores[keep]
    order = np.lexsort((right, left, -scores))
    return Pairs(left[order], right[order], scores[order], threshold, n, top_k, candidates,
                 "/".join(sorted(dtypes)) or "float32", max(chunks, default=0))


def _mine_block_pair(matrix: np.ndarray, rows: tuple[int, int], columns: tuple[int, int], threshold: float,
                     chunk_size: int | None):
    from .mining import mine_pairs

    (r0, r1), (c0, c1) = rows, columns
    if rows == columns:
        found = mine_pairs(matrix[r0:r1], threshold, chunk_size=chunk_size, device="cpu")
        return found.left + r0, found.right + r0, found.scores, found.candidates, found.dtype, found.chunk_size
    found = mine_pairs(np.vstack([matrix[r0:r1], matrix[c0:c1]]), threshold, chunk_size=chunk_size, device="cpu",
                       split=r1 - r0)
    return (found.left + r0, found.right - (r1 - r0) + c0, found.scores, found.candidates, found.dtype,
            found.chunk_size)


def mine_partitioned_ray(embeddings, threshold: float, *, partitions: int | None = None,
                         spill: int | None = None, margin: float | None = None, seed: int = 0,
                         chunk_size: int | None = None, device: str | None = None,
                         progress: Callable[[int], None] | None = None) -> tuple["Pairs", "Partition"]:
    """:func:`semsearch.partitioned.mine_partitioned` with the cells mined as Ray tasks; the same result."""
    from .mining import _as_matrix, check_threshold
    from .partitioned import DEFAULT_MARGIN, _unique_pairs, ordered_pairs, partition

    ray = _ray()
    connect()
    threshold = check_threshold(threshold)
    matrix = _as_matrix(embeddings)
    n = len(matrix)
    cells = partition(matrix, threshold, partitions=partitions, spill=spill,
                      margin=DEFAULT_MARGIN if margin is None else margin, seed=seed)
    ref = ray.put(matrix)
    task = ray.remote(num_cpus=1, max_retries=RETRIES)(_mine_cell_group)
    futures = [task.remote(ref, group, homes, threshold, chunk_size)
               for group, homes in _groups(cells.cells, cells.homes, 4 * cluster_cpus())]
    left, right, scores, candidates, _, _ = _gather(ray, futures)
    left, right, scores = _unique_pairs(left * n + right, scores, n)
    if progress is not None:
        progress(cells.comparisons)
    return ordered_pairs(left, right, scores, threshold, n, candidates), cells


def _groups(cells: Sequence[np.ndarray], homes: Sequence[int], count: int) -> list[tuple[list[np.ndarray], list[int]]]:
    """Cells (and their home counts) dealt into at most ``count`` groups of similar cost (largest first, to the
    cheapest group)."""
    from .partitioned import cell_comparisons

    groups: list[tuple[list[np.ndarray], list[int]]] = [([], []) for _ in range(max(1, min(count, len(cells))))]
    cost = [0] * len(groups)
    for i in sorted(range(len(cells)), key=lambda i: cell_comparisons(len(cells[i]), homes[i]), reverse=True):
        g = cost.index(min(cost))
        groups[g][0].append(cells[i])
        groups[g][1].append(homes[i])
        cost[g] += cell_comparisons(len(cells[i]), homes[i])
    return [g for g in groups if g[0]]


def _mine_cell_group(matrix: np.ndarray, cells: list[np.ndarray], homes: list[int], threshold: float,
                     chunk_size: int | None):
    from .partitioned import mine_cells

    left, right, scores, candidates = mine_cells(matrix, cells, threshold, homes=homes, chunk_size=chunk_size,
                                                 device="cpu")
    return left, right, scores, candidates, "", 0


def _gather(ray, futures) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, set[str], list[int]]:
    try:
        results = ray.get(futures)
    except Exception as exc:
        raise SemsearchError(f"a Ray mining task failed: {_ray_reason(exc)}") from None
    left = np.concatenate([np.zeros(0, np.int64)] + [r[0] for r in results]).astype(np.int64)
    right = np.concatenate([np.zeros(0, np.int64)] + [r[1] for r in results]).astype(np.int64)
    scores = np.concatenate([np.zeros(0)] + [r[2] for r in results])
    return (left, right, scores, sum(r[3] for r in results), {r[4] for r in results if r[4]},
            [r[5] for r in results])


# ----------------------------------------------------------------------------------------------- errors
def _ray_reason(exc: BaseException) -> str:
    """The innermost cause of a Ray error, one line (a SemsearchError raised in a worker keeps its words)."""
    cause = exc
    while True:
        inner = getattr(cause, "cause", None) or cause.__cause__
        if inner is None or inner is cause:
            break
        cause = inner
    return _first_line(cause)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(exc).__name__


__all__ = ["connect", "index_corpus_ray", "embed_corpus", "mine_pairs_ray", "mine_partitioned_ray",
           "INSTALL_HINT", "CRASH_FILE_ENV"]
