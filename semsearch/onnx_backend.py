"""Inference on onnxruntime: the encoder a query runs, without importing torch or transformers.

A model's transformer is exported to ONNX once per model fingerprint (:mod:`semsearch.onnx_export`, which
does need torch), checked against the torch encoder and kept in a cache folder::

    $SEMSEARCH_CACHE/onnx/<fingerprint hex>/        (default: $XDG_CACHE_HOME/semsearch, else ~/.cache/semsearch)
        model.onnx      the transformer: input_ids, attention_mask[, token_type_ids] -> token embeddings
        export.json     what was exported, from which weights, by which versions, and the probe's max difference
        refused.json    instead of the two above when the export failed or differed from torch

The graph stops at the token embeddings; pooling and normalisation run in numpy
(:func:`semsearch.pooling.pool_numpy`), so one graph serves every pooling of the same weights. Tokens come
from ``tokenizer.json`` through :class:`semsearch.tokenizer.FastTokenizer`.

Threads: one session with one intra-op thread. A single query (one batch) runs on one core, so it never
fights other work for cores; many sentences are split into batches that run in parallel, one per worker
thread (onnxruntime releases the GIL), up to the cores this process may use. ``$SEMSEARCH_THREADS`` or
``OnnxEncoder.load(..., threads=N)`` sets that number (1: everything on one core).
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from .encoder import Encoder, EncoderSpec, _progress_for, sorted_batches
from .errors import ModelError
from .pooling import pool_numpy
from .similarity import normalise_rows
from .tokenizer import FastTokenizer, pad_batch

CACHE_ENV = "SEMSEARCH_CACHE"
THREADS_ENV = "SEMSEARCH_THREADS"
MODEL_FILE = "model.onnx"
EXPORT_FILE = "export.json"
REFUSED_FILE = "refused.json"
OUTPUT_NAME = "token_embeddings"


# ---------------------------------------------------------------------------------------------- the cache
def cache_root() -> Path:
    """``$SEMSEARCH_CACHE``, else ``$XDG_CACHE_HOME/semsearch``, else ``~/.cache/semsearch``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "semsearch"


def export_dir(fingerprint: str) -> Path:
    """The cache folder of one model fingerprint (``sha256:HEX`` -> ``onnx/HEX``)."""
    key = fingerprint.split(":", 1)[-1]
    if not key or not all(c in "0123456789abcdef" for c in key):
        raise ModelError(f"not a model fingerprint: {fingerprint!r}")
    return cache_root() / "onnx" / key


def read_export(fingerprint: str) -> dict | None:
    """The export record of a fingerprint whose graph is in the cache, else None."""
    folder = export_dir(fingerprint)
    try:
        record = json.loads((folder / EXPORT_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    model = folder / MODEL_FILE
    if record.get("fingerprint") != fingerprint or not model.is_file() or model.stat().st_size != record.get("bytes"):
        return None
    return record


def export_refused(fingerprint: str) -> bool:
    """Whether an export of these weights failed or differed from torch (``backend="auto"`` then runs torch)."""
    folder = export_dir(fingerprint)
    return (folder / REFUSED_FILE).is_file() and read_export(fingerprint) is None


# ---------------------------------------------------------------------------------------------- threads
def default_threads() -> int:
    """Worker threads for large encodes: ``$SEMSEARCH_THREADS``, else the cores this process may run on."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ModelError(f"${THREADS_ENV}={value!r}: expected a whole number of threads, 1 or more")
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def open_session(model: Path):
    """An onnxruntime CPU session with one intra-op thread (see the module's note on threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise to a user
    try:
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for a damaged file
        raise ModelError(f"{model}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]}); "
                         "rebuild it with: semsearch model export --force") from None


# ---------------------------------------------------------------------------------------------- the encoder
class OnnxEncoder(Encoder):
    """The :class:`~semsearch.encoder.Encoder` interface for inference on onnxruntime (fp32, CPU).

    ``encode`` gives the torch encoder's vectors to 1e-5 (checked on a probe batch when the graph is
    exported, and on every STSb test sentence in the tests). It cannot train: ``forward`` refuses.
    """

    backend = "onnx"

    def __init__(self, session, tokenizer: FastTokenizer, spec: EncoderSpec, threads: int | None = None) -> None:
        self.model = session
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = "cpu"
        self.half = False
        self.threads = threads or default_threads()
        self._inputs = [i.name for i in session.get_inputs()]
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @classmethod
    def load(cls, spec: EncoderSpec, transformer_dir: Path, *, threads: int | None = None) -> "OnnxEncoder":
        """The encoder for ``spec``, from the cached graph of its fingerprint (exported first when missing)."""
        record = read_export(spec.fingerprint)
        if record is None:
            from .onnx_export import export_transformer  # torch and transformers: once per model

            export_transformer(transformer_dir, spec.fingerprint)
            record = read_export(spec.fingerprint)
            if record is None:
                raise ModelError(f"{export_dir(spec.fingerprint)}: the export left no usable graph")
        session = open_session(export_dir(spec.fingerprint) / MODEL_FILE)
        if not spec.dimension:
            from dataclasses import replace

            spec = replace(spec, dimension=int(record["dimension"]))
        return cls(session, FastTokenizer(transformer_dir), spec, threads=threads)

    # ------------------------------------------------------------------ running
    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """One padded int64 batch (numpy), as the graph takes it."""
        ids, types = self.tokenizer.token_ids(self._prepare(texts), self.spec.max_length)
        return pad_batch(ids, types, range(len(ids)), self.tokenizer.pad_token_id)

    def forward(self, features):
        raise ModelError(f"{self.spec.model}: the onnx backend is for inference; "
                         "load the encoder with backend='transformers' to train it or to take gradients")

    def embed_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Sentence vectors (float32) for one padded batch: the graph, then pooling and normalisation."""
        tokens = self.model.run([OUTPUT_NAME], {name: batch[name] for name in self._inputs})[0]
        vectors = pool_numpy(self.spec.pooling, tokens, batch["attention_mask"])
        return (normalise_rows(vectors, copy=False) if self.spec.normalize else vectors).astype(np.float32, copy=False)

    def encode(self, texts: Sequence[str] | str, *, batch_size: int = 32,
               show_progress: bool | None = None) -> np.ndarray:
        """Embed ``texts``: float32 vectors in input order, shape ``(len(texts), dimension)``.

        Sorted by token count, cut into batches of at most ``batch_size`` (fewer when that leaves a thread
        idle), and the batches run in parallel on :attr:`threads` workers; one batch runs on the caller's thread.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        ids, types = self.tokenizer.token_ids(self._prepare(texts), self.spec.max_length)
        per_batch = max(1, min(batch_size, -(-len(texts) // self.threads)))
        batches = sorted_batches([len(row) for row in ids], per_batch)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        pad_id = self.tokenizer.pad_token_id

        def run(rows: list[int]) -> list[int]:
            out[rows] = self.embed_batch(pad_batch(ids, types, rows, pad_id))
            return rows

        bar = _progress_for(len(texts), batch_size, show_progress)
        try:
            done = map(run, batches) if len(batches) == 1 or self.threads == 1 else self._workers().map(run, batches)
            for rows in done:
                if bar is not None:
                    bar.update(len(rows))
        finally:
            if bar is not None:
                bar.close()
        return out[0] if single else out

    def _workers(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="semsearch-onnx")
            return self._pool
