"""Looking after an index: what it holds (``info``), whether it is whole (``check``), mending it (``repair``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import IndexDamaged, SemsearchError
from .docs import DocStore
from .files import DOCS_DB, MANIFEST, WriterLock, folder_state, index_path, refuse_missing, sha256
from .manifest import Manifest
from .segments import load_segment


@dataclass
class CheckReport:
    path: Path
    documents: int = 0
    vectors: int = 0
    problems: list[str] = field(default_factory=list)
    manifest_rebuilt: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def info(name_or_path: str | os.PathLike | None = None) -> dict:
    """The manifest of an index as JSON, with the size of each file in bytes and the compaction outlook."""
    from .writer import compaction_due

    path = index_path(name_or_path)
    manifest = Manifest.load(path)
    sizes = {}
    for name in sorted({MANIFEST, *manifest.files()}):
        file = path / name
        if file.exists() or not name.endswith(("-wal", "-shm")):
            sizes[name] = file.stat().st_size if file.exists() else None
    data = manifest.to_dict() if not manifest.legacy else {"format": manifest.format, "generation": manifest.generation,
                                                           "encoder": manifest.encoder.to_dict(),
                                                           "faiss": manifest.faiss,
                                                           "counts": {"documents": manifest.documents},
                                                           "created": manifest.created, "updated": manifest.updated}
    data["format"] = manifest.format
    return {"path": str(path), **data, "sizes": sizes, "compaction": compaction_due(manifest)}


def check(name_or_path: str | os.PathLike | None = None) -> CheckReport:
    """Verify checksums, SQLite's and the lexical index's integrity, and one live vector per visible document."""
    path = index_path(name_or_path)
    manifest = Manifest.load(path)
    report = CheckReport(path)
    db_file = path / manifest.sqlite
    live = dead = None
    if not db_file.is_file():
        report.problems.append(f"{db_file.name}: missing")
    else:
        try:
            store = DocStore.open_reader(db_file, manifest.generation, legacy=manifest.legacy)
            try:
                report.problems.extend(f"{db_file.name}: {p}" for p in store.integrity_problems())
                live = store.live_vector_ids()  # every passage of every visible document
                dead = store.dead_vector_ids()
                report.documents = store.count()
            finally:
                store.close()
        except IndexDamaged as exc:
            report.problems.append(f"{db_file.name}: {str(exc).split(': ', 1)[-1]}")
        except Exception as exc:  # a stale snapshot or anything else SQLite says: the file is not usable
            report.problems.append(f"{db_file.name}: unreadable ({exc})")
        expected = manifest.faiss.get("legacy_sqlite_sha256")
        if manifest.legacy and expected and sha256(db_file) != expected:
            report.problems.append(f"{db_file.name}: checksum differs from the manifest's")
    stored = []
    files = list(manifest.segments)
    for segment in files:
        absent = [name for name in segment.files() if not (path / name).is_file()]
        if absent:
            report.problems.extend(f"{name}: missing" for name in absent)
            continue
        report.problems.extend(f"{name}: checksum differs from the manifest's"
                               for name, digest in segment.files().items() if digest and sha256(path / name) != digest)
        try:
            vectors = load_segment(path, manifest, segment, mmap=True)
            ids = vectors.stored_ids()
            stored.append(ids)
            report.vectors += len(ids)
        except IndexDamaged as exc:  # the message names the file at fault (the segment or its lists file)
            where, _, detail = str(exc).partition(": ")
            report.problems.append(f"{Path(where).name}: {detail}")
        except RuntimeError as exc:
            report.problems.append(f"{segment.file}: unreadable FAISS file ({str(exc).splitlines()[0][:120]})")
    if manifest.trained and not (path / manifest.trained["file"]).is_file():
        report.problems.append(f"{manifest.trained['file']}: missing")
    if live is not None and len(stored) == len(files):
        ids = np.sort(np.concatenate(stored)) if stored else np.zeros(0, np.int64)
        if len(np.unique(ids)) != len(ids):
            report.problems.append(f"{len(ids) - len(np.unique(ids))} row ids have more than one vector")
        # every visible document has a vector per passage; every vector is a passage of a document, visible or
        # deleted (a tombstone); a tombstone whose vectors compaction already dropped waits for its row to be purged
        known = np.union1d(live, dead) if dead is not None else live
        absent = np.setdiff1d(live, ids)
        extra = len(np.setdiff1d(ids, known))
        if len(absent) or extra:
            from .passages import rowids_of

            lacking = len(np.unique(rowids_of(absent)))
            report.problems.append(f"{lacking} documents have no vector and {extra} vectors have no document"
                                   if not manifest.has_passages else
                                   f"{lacking} documents lack {len(absent)} passage vectors and {extra} vectors have "
                                   "no document")
        report.vectors -= len(np.intersect1d(ids, dead)) if dead is not None else 0
    if live is not None and manifest.documents != report.documents:
        report.problems.append(f"manifest counts {manifest.documents} documents, the database holds {report.documents}")
    elif live is not None and manifest.live_vectors != len(live):
        report.problems.append(f"manifest counts {manifest.live_vectors} vectors, the documents have {len(live)} "
                               "passages")
    return report


def repair(name_or_path: str | os.PathLike | None = None, batch_size: int = 32) -> CheckReport:
    """Mend what :func:`check` finds: a lost manifest is rebuilt from the newest complete generation recorded in
    the database; damaged or missing vectors are embedded again from the stored texts (with the index's own
    encoder) into one fresh segment. Then check again."""
    from .writer import IndexWriter

    path = index_path(name_or_path)
    rebuilt = False
    if folder_state(path) == "damaged":
        rebuild_manifest(path)
        rebuilt = True
    manifest = Manifest.load(path)
    if not (path / manifest.sqlite).is_file():
        raise IndexDamaged(f"{path / manifest.sqlite}: missing; the documents are lost, nothing to rebuild the "
                           "index from: re-index the corpus")
    report = check(path)
    if not report.ok:
        if any(manifest.sqlite in p and "unreadable" in p for p in report.problems):
            raise IndexDamaged(f"{path / manifest.sqlite}: the documents database is unreadable; nothing to rebuild "
                               "from: re-index the corpus")
        with IndexWriter(path, rebuild=True, create=False, auto_compact=False) as writer:
            writer.rebuild_vectors(batch_size=batch_size)
        report = check(path)
    report.manifest_rebuilt = rebuilt
    return report


def rebuild_manifest(path: Path) -> Manifest:
    """Write manifest.json again from the newest generation recorded in docs.db whose segment files are whole."""
    db_file = path / DOCS_DB
    if not db_file.is_file():
        raise IndexDamaged(f"{path}: no {MANIFEST} and no {DOCS_DB}: nothing to rebuild the index from")
    with WriterLock(path, 60.0):
        store = DocStore.open_writer(db_file, create=False)
        try:
            for generation, body in store.recorded_manifests():
                manifest = Manifest.from_dict(body, db_file)
                whole = all((path / name).is_file() and sha256(path / name) == digest
                            for s in manifest.segments for name, digest in s.files().items())
                if whole:
                    store.begin()
                    store.roll_back_to(generation)
                    store.commit()
                    manifest.save(path)
                    return manifest
        finally:
            store.close()
    raise IndexDamaged(f"{path}: no complete generation is recorded in {DOCS_DB}; re-index the corpus")
