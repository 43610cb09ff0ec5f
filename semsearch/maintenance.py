"""Looking after an index: what it holds (``info``), whether it is whole (``check``), mending it (``repair``)."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .index import MANIFEST, IndexWriter, _sha256, index_path, read_manifest
from .errors import SemsearchError


@dataclass
class CheckReport:
    path: Path
    documents: int = 0
    vectors: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def info(name_or_path: str | os.PathLike | None = None) -> dict:
    """The manifest of an index, with the size of each of its files in bytes."""
    path = index_path(name_or_path)
    manifest = read_manifest(path)
    sizes = {}
    for name in (MANIFEST, manifest["faiss"]["file"], manifest["sqlite"]["file"]):
        file = path / name
        sizes[name] = file.stat().st_size if file.exists() else None
    return {"path": str(path), **manifest, "sizes": sizes}


def check(name_or_path: str | os.PathLike | None = None) -> CheckReport:
    """Verify checksums, and that FAISS ids and SQLite row ids are the same set, one vector per document."""
    from .vectors import VectorStore

    path = index_path(name_or_path)
    manifest = read_manifest(path)
    report = CheckReport(path)
    files = {"faiss": path / manifest["faiss"]["file"], "sqlite": path / manifest["sqlite"]["file"]}
    for kind, file in files.items():
        if not file.is_file():
            report.problems.append(f"{file.name}: missing")
        elif manifest[kind].get("sha256") and _sha256(file) != manifest[kind]["sha256"]:
            report.problems.append(f"{file.name}: checksum differs from the manifest's")
    rowids = None
    if files["sqlite"].is_file():
        try:
            conn = sqlite3.connect(f"file:{files['sqlite']}?mode=ro", uri=True)
            rowids = np.array([r[0] for r in conn.execute("select rowid from docs order by rowid")], dtype=np.int64)
            integrity = conn.execute("pragma integrity_check").fetchone()[0]
            conn.close()
            report.documents = len(rowids)
            if integrity != "ok":
                report.problems.append(f"{files['sqlite'].name}: SQLite integrity check: {integrity}")
        except sqlite3.DatabaseError as exc:
            report.problems.append(f"{files['sqlite'].name}: unreadable SQLite database ({exc})")
    if files["faiss"].is_file():
        try:
            store = VectorStore.load(files["faiss"], manifest["faiss"]["factory"])
            report.vectors = len(store)
            ids, _ = store.vectors()
            if store.dimension != manifest["encoder"]["dimension"]:
                report.problems.append(f"vectors are {store.dimension}-d, the encoder's are "
                                       f"{manifest['encoder']['dimension']}-d")
            if rowids is not None and not np.array_equal(ids, rowids):
                missing = len(np.setdiff1d(rowids, ids))
                extra = len(np.setdiff1d(ids, rowids))
                report.problems.append(f"{missing} documents have no vector and {extra} vectors have no document")
        except RuntimeError as exc:
            report.problems.append(f"{files['faiss'].name}: unreadable FAISS file ({str(exc).splitlines()[0][:120]})")
    expected = manifest.get("counts", {}).get("documents")
    if rowids is not None and expected is not None and expected != report.documents:
        report.problems.append(f"manifest counts {expected} documents, the database holds {report.documents}")
    return report


def repair(name_or_path: str | os.PathLike | None = None, batch_size: int = 32) -> CheckReport:
    """Rebuild every vector from the stored texts (with the index's own encoder), then check again."""
    path = index_path(name_or_path)
    manifest = read_manifest(path)
    if not (path / manifest["sqlite"]["file"]).is_file():
        raise SemsearchError(f"{path}: the documents database is missing; nothing to rebuild from: re-index the corpus")
    with IndexWriter(path, rebuild=True) as writer:
        writer.rebuild_vectors(batch_size=batch_size)
    return check(path)
