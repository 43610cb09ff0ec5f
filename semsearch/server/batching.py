"""Concurrent queries encoded in one forward pass.

Each search request becomes a :class:`SearchJob` on a queue. One worker thread takes the first waiting job and
every job queued behind it, up to ``max_batch`` query texts; when requests have been arriving together (the
previous batch held several, or more are queued) it also waits up to ``max_wait`` seconds (a few
milliseconds) for more. It embeds all their texts with one encoder call (through the index's query cache) and
searches them, one FAISS call per group of jobs that asked for the same ``k``, threshold, filters and knobs.
Under load the encoder runs once per batch instead of once per request; a lone client never waits.

Results are those of :meth:`Index.search` on each request alone: the vectors of a text do not depend on the
other texts in its batch (the encoder pads per batch and masks the padding), and an exact scan scores a batch
with one matrix product, then each candidate again in float64, so no score depends on its batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import SemsearchError

if TYPE_CHECKING:
    from .snapshots import Snapshots

log = logging.getLogger("semsearch.server")


@dataclass
class SearchJob:
    """One request's queries and search settings; its future receives one hit list per query."""

    texts: Sequence[str]
    k: int = 10
    threshold: float | None = None
    filters: tuple[str, ...] = ()
    nprobe: int | None = None
    ef_search: int | None = None
    mode: str = "dense"
    alpha: float | None = None
    future: Future = field(default_factory=Future)
    generation: int | None = None  # set by the worker: the generation that answered

    @property
    def settings(self) -> tuple:
        return (self.k, self.threshold, self.filters, self.nprobe, self.ef_search, self.mode, self.alpha)


class QueryBatcher:
    """A queue of search jobs and the thread that answers them in batches."""

    def __init__(self, snapshots: "Snapshots", *, max_wait: float = 0.002, max_batch: int = 64) -> None:
        self.snapshots = snapshots
        self.max_wait = max_wait
        self.max_batch = max_batch
        self._queue: queue.Queue[SearchJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._last_jobs = 0  # jobs in the previous batch
        self.batches = 0  # encoder calls made (for /info and tests)
        self.queries = 0

    def submit(self, job: SearchJob) -> Future:
        """Queue a job; its future resolves to ``list[list[Hit]]`` or to the error that stopped it."""
        if self._thread is None or not self._thread.is_alive():
            raise SemsearchError("the query batcher is not running")
        self._queue.put(job)
        return job.future

    @property
    def pending(self) -> int:
        """Jobs waiting for the worker."""
        return self._queue.qsize()

    # ----------------------------------------------------------------- worker
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="semsearch-queries", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            try:
                self._answer([job for job in batch if job.future.set_running_or_notify_cancel()])
            except BaseException as exc:  # never let the worker die: fail this batch, keep serving
                log.error("query batch failed", exc_info=exc)
                for job in batch:
                    if job.future.running():
                        job.future.set_exception(exc)
            if stop:
                return

    def _collect(self, first: SearchJob) -> tuple[list[SearchJob], bool]:
        batch, size = [first], len(first.texts)
        # Wait for company only when requests have been arriving together: a lone client pays nothing.
        wait = self.max_wait if (self._last_jobs > 1 or not self._queue.empty()) else 0.0
        deadline = time.monotonic() + wait
        while size < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
            size += len(job.texts)
        self._last_jobs = len(batch)
        return batch, False

    def _answer(self, batch: list[SearchJob]) -> None:
        if not batch:
            return
        try:
            with self.snapshots.lease() as index:
                self._answer_from(index, batch)
        except Exception as exc:  # no index, or the encoder failed: every job still waiting gets the error
            for job in batch:
                if job.future.running():
                    job.future.set_exception(exc)

    def _answer_from(self, index, batch: list[SearchJob]) -> None:
        from .snapshots import generation_of

        generation = generation_of(index)
        self.snapshots.encoder()  # loads the model once; later generations reuse it
        vectors = index.embed_queries([text for job in batch for text in job.texts])
        self.batches += 1
        self.queries += len(vectors)
        rows, start = [], 0
        for job in batch:
            rows.append(slice(start, start + len(job.texts)))
            start += len(job.texts)
        groups: dict[tuple, list[int]] = {}
        for position, job in enumerate(batch):
            groups.setdefault(job.settings, []).append(position)
        for (k, threshold, filters, nprobe, ef_search, mode, alpha), members in groups.items():
            try:
                hits = index.search_vectors(np.concatenate([vectors[rows[p]] for p in members]), k=k,
                                            threshold=threshold, filters=list(filters), nprobe=nprobe,
                                            ef_search=ef_search, texts=[t for p in members for t in batch[p].texts],
                                            mode=mode, alpha=alpha)
            except Exception as exc:  # a bad filter fails its own group only
                for p in members:
                    batch[p].future.set_exception(exc)
                continue
            offset = 0
            for p in members:
                job = batch[p]
                job.generation = generation
                job.future.set_result(hits[offset:offset + len(job.texts)])
                offset += len(job.texts)
