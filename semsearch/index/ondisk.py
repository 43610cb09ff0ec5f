"""On-disk IVF segments: trained once on a sample, filled in parts (on Ray workers or here), merged by FAISS.

A corpus too large for one process's memory is written like this (``semsearch index --engine ray`` with an IVF
type whose top level is FAISS's ``IndexIVF``: ``ivf``, or a factory string such as ``IVF4096,PQ48``):

1. **Train on a sample.** The first vectors of the write (64 per inverted list, at least 20,000, the rule of
   :mod:`semsearch.vectors`) train an empty index; a new index keeps it as ``trained.<gen>.faiss``, and a write
   to an existing IVF index uses the one it has.
2. **Add in parts.** Each block of vectors is added to a copy of that empty index by a :class:`PartAdder`
   (Ray tasks in :mod:`semsearch.distributed`, or in this process) and comes back as a FAISS file:
   ``part.<gen>.<i>.faiss``, journalled like every file a writer creates.
3. **Merge on disk.** FAISS's ``OnDiskInvertedLists.merge_from_multiple`` copies the parts' memory-mapped lists
   into one file of inverted lists, ``seg.<gen>.0.ivfdata``, beside a small ``seg.<gen>.0.faiss`` (quantizer and
   list offsets). The manifest names both, with their checksums; the parts go when it is committed.

Readers map the lists file read-only. FAISS stores the lists file's absolute path in the segment; it is read
here from the segment's own folder instead, so an index folder can be moved or copied. The automatic
compaction policy leaves an on-disk segment alone; ``semsearch compact`` rewrites it as an ordinary segment,
in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from ..errors import IndexDamaged, SemsearchError
from ..atomic import fsync_file
from ..vectors import VectorStore, _factory_for, _new_index, training_points_for
from . import passages as P
from .files import add_pending, os_error, sha256
from .manifest import Segment
from .segments import TYPED_SEGMENT_MIN, faiss_write_error, segment_name

if TYPE_CHECKING:
    import faiss


#: What the last merge child of this process reported: ``total`` vectors, its ``VmHWM`` and ``RssAnon`` in MB
#: (for benchmarks/ondisk_ivf.py).
LAST_MERGE: dict = {}


def lists_name(generation: int, number: int = 0) -> str:
    return f"seg.{generation}.{number}.ivfdata"


def part_name(generation: int, number: int) -> str:
    return f"part.{generation}.{number}.faiss"


def mergeable(index: "faiss.Index") -> bool:
    """Whether FAISS's on-disk merge takes this index: an ``IndexIVF`` at the top (it keeps the row ids itself),
    on a POSIX system with a FAISS that has ``OnDiskInvertedLists``. ``ivfpq`` (an ID map over a re-ranked
    IVF-PQ) and graph or flat types do not."""
    import faiss

    if os.name != "posix" or not hasattr(faiss, "OnDiskInvertedLists"):
        return False
    return isinstance(faiss.downcast_index(index), faiss.IndexIVF)


def mergeable_type(kind: str, dimension: int) -> bool:
    """:func:`mergeable` for an index type not built yet."""
    try:
        index, _ = _new_index(dimension, _factory_for(kind, dimension, 100_000), kind)
    except SemsearchError:
        return False
    return mergeable(index)




# ------------------------------------------------------------------------------------------- parts
def serialize(store: VectorStore) -> np.ndarray:
    import faiss

    return faiss.serialize_index(store.index)


def add_part(template: np.ndarray, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """A copy of the empty trained index (serialised) holding these vectors, serialised: one part."""
    import faiss

    index = faiss.deserialize_index(np.asarray(template))
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
    return faiss.serialize_index(index)


class PartAdder(Protocol):
    """Where parts are filled: ``submit`` starts one, ``ready`` says without waiting whether it is done,
    ``result`` waits for its serialised index."""

    def submit(self, template: Any, ids: np.ndarray, vectors: np.ndarray) -> Any: ...

    def ready(self, handle: Any) -> bool: ...

    def result(self, handle: Any) -> np.ndarray: ...


class LocalAdder:
    """Parts filled in this process, one at a time (tests, and a machine without Ray)."""

    def submit(self, template: Any, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        return add_part(template, ids, vectors)

    def ready(self, handle: np.ndarray) -> bool:
        return True

    def result(self, handle: np.ndarray) -> np.ndarray:
        return handle


# ------------------------------------------------------------------------------------------- writing
class OnDiskBuilder:
    """Takes a write's vectors in row-id order (``add``; ``remove`` for ones replaced within the write) in place
    of the writer's in-memory segment, and at commit builds one on-disk segment (:meth:`finish`).

    ``template``: the index's trained empty IVF index (None for a new index: trained here on the first
    :func:`~semsearch.vectors.training_points` vectors, sized for ``expected`` records). ``rows_per_part``:
    vectors per part.
    """

    def __init__(self, folder: Path, generation: int, dimension: int, kind: str, adder: PartAdder, *,
                 template: VectorStore | None = None, expected: int | None = None, rows_per_part: int = 65536,
                 put: Callable[[np.ndarray], Any] | None = None) -> None:
        self.folder = folder
        self.generation = generation
        self.dimension = dimension
        self.kind = kind
        self.adder = adder
        self.template = template
        self.fresh = template is None
        self.expected = expected
        self.rows_per_part = max(1, rows_per_part)
        self._put = put or (lambda data: data)  # how the template reaches the adder (Ray: the object store)
        self._shared = None
        self._ids: list[np.ndarray] = []  # vectors not handed to a part yet
        self._vectors: list[np.ndarray] = []
        self._buffered = 0
        self._parts: list[tuple[Any, np.ndarray]] = []  # (handle, ids) per part, in order; handle None: written
        self._written: list[str] = []  # part files written, in order
        self._removed: list[np.ndarray] = []  # ids replaced within this write after their part was started
        self._count = 0
        self._seen_vectors = self._seen_records = 0

    def __len__(self) -> int:
        return self._count

    @property
    def _hold(self) -> int:
        """Vectors buffered before the first part starts: the training sample, or (existing index) enough to
        prove the write large enough for a segment of the index's type."""
        if self.template is None:
            return training_points_for(self.kind, self.dimension, self._expected_vectors())
        return TYPED_SEGMENT_MIN if not self._parts else self.rows_per_part

    def _expected_vectors(self) -> int:
        """The vectors the write is expected to bring: ``expected`` records times the passages per record seen
        so far (long texts are several vectors)."""
        per_record = self._seen_vectors / self._seen_records if self._seen_records else 1.0
        return max(self._buffered, round((self.expected or 0) * per_record))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids):
            return
        self._ids.append(np.asarray(ids, dtype=np.int64))
        self._vectors.append(np.ascontiguousarray(vectors, dtype=np.float32))
        self._buffered += len(ids)
        self._count += len(ids)
        self._seen_vectors += len(ids)
        self._seen_records += len(np.unique(P.rowids_of(ids)))  # a record's passages come in one call
        if self._buffered >= self._hold:
            if self.template is None:
                self._train(done=False)
            while self._buffered >= self.rows_per_part:
                self._start_part(self.rows_per_part)

    def remove(self, ids: np.ndarray) -> int:
        """Forget vectors added earlier in this write (their documents were replaced again)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return 0
        removed = 0
        buffered = np.zeros(len(ids), dtype=bool)
        for n, part in enumerate(self._ids):
            keep = ~np.isin(part, ids)
            removed += int(np.count_nonzero(~keep))
            buffered |= np.isin(ids, part[~keep])
            self._ids[n], self._vectors[n] = part[keep], self._vectors[n][keep]
        self._buffered -= removed
        started = ids[~buffered]  # every id given was added in this write: the rest are in parts
        if len(started):
            self._removed.append(started)
        self._count -= removed + len(started)
        return removed + len(started)

    def _take(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        ids, vectors = self._joined()
        self._ids, self._vectors = [ids[count:]], [vectors[count:]]
        self._buffered = len(ids) - count
        return ids[:count], vectors[:count]

    def _joined(self) -> tuple[np.ndarray, np.ndarray]:
        """The buffered vectors as one array (and their ids), kept so for the next part."""
        if len(self._ids) != 1:
            self._ids, self._vectors = [np.concatenate(self._ids)], [np.concatenate(self._vectors)]
        return self._ids[0], self._vectors[0]

    def _train(self, *, done: bool) -> None:
        """Train the empty index on the buffered vectors (all of the write when ``done``), sized for the
        expected count (the real one when the write is complete)."""
        ids, vectors = self._joined()
        count = len(ids) if done else self._expected_vectors()
        store = VectorStore.create(self.dimension, self.kind)
        store.train_empty(vectors, count)
        self.template = store

    def _start_part(self, count: int) -> None:
        if self._shared is None:
            self._shared = self._put(serialize(self.template))
        ids, vectors = self._take(count)
        self._parts.append((self.adder.submit(self._shared, ids, vectors), ids))
        while len(self._written) < len(self._parts) and self.adder.ready(self._parts[len(self._written)][0]):
            self._write_part(len(self._written))  # what is done goes to disk now, in order

    def finish(self) -> tuple[np.ndarray, np.ndarray] | Segment:
        """The on-disk segment, its parts merged; or, for a write to an existing index too small for a segment
        of its type (or left with no vector), the buffered ``(ids, vectors)`` for the writer's flat segment."""
        if self._count == 0:  # nothing, or everything removed again: no segment (parts go with the journal)
            return np.zeros(0, np.int64), np.zeros((0, self.dimension), np.float32)
        if not self._parts and (not self._buffered or not self.fresh and self._buffered < TYPED_SEGMENT_MIN):
            if not self._buffered:
                return np.zeros(0, np.int64), np.zeros((0, self.dimension), np.float32)
            return self._take(self._buffered)
        if self.template is None:
            self._train(done=True)
        while self._buffered:
            self._start_part(min(self._buffered, self.rows_per_part))
        names = self._write_parts()
        return self._merge(names)

    def _write_parts(self) -> list[str]:
        """Wait for the parts not written yet, in order, and write them; then take the documents replaced later
        in this write out of the parts that hold them. The names of all part files."""
        import faiss

        while len(self._written) < len(self._parts):
            self._write_part(len(self._written))
        removed = np.concatenate(self._removed) if self._removed else np.zeros(0, np.int64)
        for (_, ids), name in zip(self._parts, self._written):
            if len(removed) and np.isin(ids, removed).any():
                index = faiss.read_index(str(self.folder / name))
                index.remove_ids(removed[np.isin(removed, ids)])
                self._save_part(faiss.serialize_index(index), name)
        return self._written

    def _write_part(self, number: int) -> None:
        """Write part ``number`` (the next in order) to its journalled file."""
        handle, ids = self._parts[number]
        name = part_name(self.generation, number)
        self._claim(name)
        self._save_part(self.adder.result(handle), name)
        self._parts[number] = (None, ids)
        self._written.append(name)

    def _save_part(self, data: np.ndarray, name: str) -> None:
        try:
            with open(self.folder / name, "wb") as fh:
                fh.write(memoryview(np.ascontiguousarray(data)))
            fsync_file(self.folder / name)
        except OSError as exc:
            raise os_error(self.folder, exc) from None

    def _claim(self, name: str) -> None:
        """Journal a file this builder is about to create; one already there is not ours (a writer clears its
        own leftovers first) and is never overwritten."""
        if (self.folder / name).exists():
            raise SemsearchError(f"{self.folder / name}: exists but no index names it; refusing to touch it")
        add_pending(self.folder, [name])

    def _merge(self, parts: list[str]) -> Segment:
        """FAISS's on-disk merge of the parts into ``seg.<gen>.0.faiss`` + ``seg.<gen>.0.ivfdata``, in a child
        process: FAISS fills the lists file through a memory map, and a disk that fills meanwhile kills the
        process that writes it (SIGBUS); here that is the child, and the writer rolls back with one line."""
        import signal
        import subprocess

        import faiss

        name, lists = segment_name(self.generation), lists_name(self.generation)
        for claimed in (name, lists):
            self._claim(claimed)
        ivf = faiss.extract_index_ivf(self.template.index)
        needed = self._count * (ivf.code_size + 8) + (64 << 20)  # codes and ids, and room for the quantizer
        if shutil.disk_usage(self.folder).free < needed:
            raise os_error(self.folder, OSError(28, "No space left on device"))
        header = json.dumps({"parts": [str(self.folder / p) for p in parts], "lists": str(self.folder / lists),
                             "segment": str(self.folder / name), "parent": os.getpid()}).encode() + b"\n"
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), *filter(None, [os.environ.get("PYTHONPATH")])])}
        done = subprocess.run([sys.executable, "-c", "from semsearch.index.ondisk import merge_main; merge_main()"],
                              input=header + bytes(serialize(self.template)), capture_output=True, env=environment)
        if done.returncode == -signal.SIGBUS:
            raise os_error(self.folder, OSError(28, "No space left on device"))
        lines = done.stdout.decode(errors="replace").strip().splitlines()
        answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        if done.returncode != 0 or "total" not in answer:
            reason = answer.get("error") or (f"killed by signal {-done.returncode}" if done.returncode < 0 else
                                             (done.stderr.decode(errors="replace").strip().splitlines()
                                              or ["no message"])[-1][:300])
            raise faiss_write_error(self.folder, reason) or SemsearchError(
                f"{self.folder / lists}: merging the parts failed ({reason}); nothing was changed")
        total = int(answer["total"])
        LAST_MERGE.clear()
        LAST_MERGE.update(answer)
        rows = P.rowids_of(np.concatenate([ids for _, ids in self._parts]))
        return Segment(name, sha256(self.folder / name), total, self.template.kind, self.generation,
                       lists=lists, lists_sha256=sha256(self.folder / lists),
                       rows=[int(rows.min()), int(rows.max())])


def merge_main() -> None:
    """The merge child: standard input holds a JSON line (part files, lists file, segment file) and then the
    serialised empty trained index; prints ``{"total": n}``, or ``{"error": reason}`` and exits 1."""
    import faiss

    header = json.loads(sys.stdin.buffer.readline())
    _die_with_parent(header["parent"])
    result = os.dup(1)
    os.dup2(2, 1)  # FAISS prints "resizing <file> to <n> bytes" on standard output: to standard error with it
    index = faiss.deserialize_index(np.frombuffer(sys.stdin.buffer.read(), dtype=np.uint8))
    try:
        readers = [faiss.read_index(part, faiss.IO_FLAG_MMAP) for part in header["parts"]]
        ivf = faiss.extract_index_ivf(index)
        on_disk = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, header["lists"])
        sources = faiss.InvertedListsPtrVector()
        for reader in readers:
            sources.push_back(faiss.extract_index_ivf(reader).invlists)
        total = on_disk.merge_from_multiple(sources.data(), sources.size(), False)
        index.ntotal = ivf.ntotal = total
        ivf.replace_invlists(on_disk, True)
        on_disk.this.disown()  # the index owns the lists now
        faiss.write_index(index, header["segment"])
        fsync_file(Path(header["segment"]))
        fsync_file(Path(header["lists"]))  # the pages written through the map
    except (RuntimeError, OSError) as exc:
        os.write(result, json.dumps({"error": " ".join(str(exc).split())[:300]}).encode() + b"\n")
        sys.exit(1)
    os.write(result, json.dumps({"total": int(total), **_memory()}).encode() + b"\n")


def _die_with_parent(parent: int) -> None:
    """Linux: this child gets SIGKILL when the writer that started it dies (a killed write must not leave a
    merge running that creates files after the next writer cleared the journal)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the writer died before the request took effect
        os._exit(1)


def _memory() -> dict:
    """This process's peak resident memory (VmHWM, mapped file pages included) and its anonymous resident
    memory now (RssAnon), MB: what the merge child reports (see :data:`LAST_MERGE`)."""
    found = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key = line.split(":")[0]
                if key in ("VmHWM", "RssAnon"):
                    found[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return found


# ------------------------------------------------------------------------------------------- reading
def read_segment(path: Path, lists: Path, meta: dict) -> VectorStore:
    """An on-disk segment with its lists file mapped read-only, from the segment's own folder (FAISS's stored
    path is where it was built). A lists file shorter than its offsets say is damage, not a crash later."""
    import faiss

    index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
    ivf = faiss.extract_index_ivf(index) if mergeable(index) else None
    on_disk = faiss.downcast_InvertedLists(ivf.invlists) if ivf is not None else None
    if not isinstance(on_disk, faiss.OnDiskInvertedLists):
        raise IndexDamaged(f"{path}: the manifest names a lists file for it, but it is not an on-disk IVF index; "
                           "run: semsearch check --repair")
    try:
        size = lists.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(lists) from None
    if size < on_disk.totsize:
        raise IndexDamaged(f"{lists}: holds {size} bytes, its segment needs {on_disk.totsize}; "
                           "run: semsearch check --repair")
    on_disk.filename = str(lists)
    try:
        on_disk.do_mmap()
    except RuntimeError as exc:
        raise IndexDamaged(f"{lists}: cannot be mapped ({' '.join(str(exc).split())[:160]}); "
                           "run: semsearch check --repair") from None
    on_disk.prefetch_nthread = 0  # its prefetch threads cost ~4 ms a query; the page cache does better
    return VectorStore(index, meta.get("factory"), meta.get("type", "ivf"), search=meta.get("search"),
                       build=meta.get("build"))
