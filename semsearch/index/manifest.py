"""The manifest: the one typed description of an index generation, and its commit point.

Format 3 (segments), and format 4 when a segment keeps its inverted lists on disk (older readers refuse it)::

    {"format": 3, "generation": 7,
     "encoder": {model, fingerprint, pooling, normalize, dimension, max_length, lower_case, precision},
     "faiss": {"type": "flat", "factory": "IDMap2,Flat", "metric": "inner_product", "search": {...}, "build": {...},
               "dead": 12,                      # tombstones: vectors of deleted documents still in segments
               "trained": {"file": "trained.1.faiss", "sha256": "..."} or null},
     "segments": [{"file": "seg.1.0.faiss", "sha256": "...", "vectors": 1000, "kind": "flat", "generation": 1}],
                                                # format 4: an on-disk IVF segment adds "lists" (its
                                                # seg.<gen>.0.ivfdata) and "lists_sha256"
     "sqlite": {"file": "docs.db"},
     "lexical": true,                           # docs.db has the FTS5 table docs_fts
     "counts": {"documents": 988},             # and "vectors": 1204 when long documents are in passages
     "created": ..., "updated": ..., "versions": {...}}

Formats 1 and 2 (one copy of the database and one FAISS file per generation) are read as one segment, and a
writer migrates them to format 3.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from ..encoder import EncoderSpec
from ..errors import IndexDamaged, IndexFormatError
from ..atomic import write_json_atomic
from .files import MANIFEST, refuse_missing

FORMAT_VERSION = 4  # the newest format this version reads and writes
SEGMENTS_FORMAT = 3  # what an index without on-disk segments is written as (readers of format 3 read it)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict:
    import sqlite3

    from ..versions import package_versions

    return {"sqlite": sqlite3.sqlite_version,
            **package_versions(("semsearch", "faiss-cpu", "onnxruntime", "torch", "transformers", "numpy"))}


@dataclass(frozen=True)
class Segment:
    """One immutable FAISS file of vectors, ids = SQLite row ids."""

    file: str
    sha256: str
    vectors: int  # vectors in the file, tombstoned ones included
    kind: str = "flat"  # "flat", or the index's own type
    generation: int = 0
    lists: str | None = None  # on-disk IVF (format 4): the file of its inverted lists (see ondisk.py)
    lists_sha256: str | None = None
    rows: list[int] | None = None  # on-disk IVF: [first, last] row id; it holds every vector of those rows

    def files(self) -> dict[str, str]:
        """The segment's files and their checksums."""
        found = {self.file: self.sha256}
        if self.lists:
            found[self.lists] = self.lists_sha256 or ""
        return found

    def to_dict(self) -> dict:
        data = asdict(self)
        if not self.lists:  # format 3 readers know no such keys
            del data["lists"], data["lists_sha256"], data["rows"]
        return data


@dataclass
class Manifest:
    format: int
    generation: int
    encoder: EncoderSpec
    faiss: dict  # type, factory, metric, search, build, dead, trained
    segments: list[Segment]
    sqlite: str
    documents: int
    lexical: bool = True
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)
    versions: dict = field(default_factory=dict)
    legacy: bool = False  # formats 1/2: the database is a per-generation copy without tombstone columns
    vectors: int | None = None  # live vectors (one per passage); None: one per document

    @property
    def live_vectors(self) -> int:
        return self.documents if self.vectors is None else self.vectors

    @property
    def has_passages(self) -> bool:
        """Whether some document is several vectors (passages)."""
        return self.live_vectors != self.documents

    # ------------------------------------------------------------------ properties
    @property
    def dead(self) -> int:
        return int(self.faiss.get("dead", 0))

    @property
    def trained(self) -> dict | None:
        return self.faiss.get("trained")

    @property
    def vector_total(self) -> int:
        return sum(s.vectors for s in self.segments)

    def files(self) -> set[str]:
        """Every file this generation needs."""
        names = {self.sqlite, *(name for s in self.segments for name in s.files())}
        if not self.legacy:  # SQLite's own companions of a database written in place
            names.update({self.sqlite + "-wal", self.sqlite + "-shm"})
        if self.trained:
            names.add(self.trained["file"])
        return names

    # ------------------------------------------------------------------ reading, writing
    def to_dict(self) -> dict:
        if self.legacy:
            raise IndexFormatError("a format 1/2 manifest is migrated, never written")
        written = FORMAT_VERSION if any(s.lists for s in self.segments) else SEGMENTS_FORMAT
        return {"format": written, "generation": self.generation, "encoder": self.encoder.to_dict(),
                "faiss": self.faiss, "segments": [s.to_dict() for s in self.segments],
                "sqlite": {"file": self.sqlite}, "lexical": self.lexical,
                "counts": self._counts(), "created": self.created, "updated": self.updated,
                "versions": self.versions}

    def _counts(self) -> dict:
        counts = {"documents": self.documents}
        if self.has_passages:  # written only when it says something: an index without passages reads as before
            counts["vectors"] = self.live_vectors
        return counts

    @classmethod
    def from_dict(cls, data, where: Path | str) -> "Manifest":
        """Validate and type a manifest's JSON; anything missing or mistyped is one IndexDamaged naming the file."""
        if not isinstance(data, dict):
            raise IndexDamaged(f"{where}: damaged manifest (a JSON object expected, got {type(data).__name__}); "
                               "run: semsearch check --repair")
        version = data.get("format")
        if not isinstance(version, int) or isinstance(version, bool):
            raise IndexDamaged(f"{where}: damaged manifest (no format number); run: semsearch check --repair")
        if version > FORMAT_VERSION:
            raise IndexFormatError(
                f"{where}: index format {version} is newer than this semsearch reads ({FORMAT_VERSION}); "
                "upgrade: pip install -U semsearch")
        try:
            encoder = EncoderSpec.from_dict(data["encoder"])
            faiss = dict(data["faiss"])
            generation = int(data["generation"])
            documents = int(data["counts"]["documents"])
            vectors = int(data["counts"].get("vectors", documents))
            if version >= 3:
                segments = [Segment(**s) for s in data["segments"]]
                sqlite = str(data["sqlite"]["file"])
                lexical = bool(data.get("lexical", False))
                legacy = False
            else:  # one database copy and one FAISS file per generation
                segments = [Segment(file=faiss["file"], sha256=faiss.get("sha256", ""),
                                    vectors=documents + int(faiss.get("dead", 0)),
                                    kind=faiss.get("type", "flat"), generation=generation)]
                sqlite = str(data["sqlite"]["file"])
                faiss = {k: v for k, v in faiss.items() if k not in ("file", "sha256")}
                faiss["legacy_sqlite_sha256"] = data["sqlite"].get("sha256")
                lexical, legacy = False, True
            for name in [sqlite, *(name for s in segments for name in s.files())]:
                if not isinstance(name, str) or "/" in name or name.startswith("."):
                    raise IndexDamaged(f"{where}: damaged manifest (bad file name {name!r}); "
                                       "run: semsearch check --repair")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise IndexDamaged(f"{where}: damaged manifest ({detail}); run: semsearch check --repair") from None
        return cls(format=version, generation=generation, encoder=encoder, faiss=faiss, segments=segments,
                   sqlite=sqlite, documents=documents, lexical=lexical, created=str(data.get("created", now())),
                   updated=str(data.get("updated", now())), versions=dict(data.get("versions") or {}),
                   legacy=legacy, vectors=vectors)

    @classmethod
    def load(cls, folder: Path) -> "Manifest":
        """The current manifest of the index in ``folder``; one-line errors for every way it can be missing."""
        path = folder / MANIFEST
        try:
            text = path.read_text()
        except FileNotFoundError:
            refuse_missing(folder)
            raise
        except NotADirectoryError:
            refuse_missing(folder)
            raise
        except (OSError, UnicodeDecodeError) as exc:
            raise IndexDamaged(f"{path}: unreadable manifest ({exc}); run: semsearch check --repair") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IndexDamaged(f"{path}: damaged manifest ({exc.msg} at line {exc.lineno}); "
                               "run: semsearch check --repair") from None
        return cls.from_dict(data, path)

    def save(self, folder: Path) -> None:
        """Atomically make this the current generation."""
        write_json_atomic(folder / MANIFEST, self.to_dict())

    def next(self, **changes) -> "Manifest":
        """The manifest of the next generation (a copy with ``changes``)."""
        fields = {"generation": self.generation + 1, "updated": now(), "versions": library_versions(),
                  "faiss": dict(self.faiss), "segments": list(self.segments), **changes}
        return replace(self, **fields)


def current_generation(folder: str | Path) -> int | None:
    """The committed generation of the index in ``folder`` (reads manifest.json only), None when there is none.

    Cheap enough to call per request: a long-lived reader reopens when it changes.
    """
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
        return int(data["generation"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
