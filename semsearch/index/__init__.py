"""The index folder: one SQLite file of documents written in place, immutable FAISS segments, a manifest.

- :mod:`.files`: the folder, its lock and journal, what belongs to it
- :mod:`.manifest`: the typed manifest (the commit point)
- :mod:`.docs`: the documents database (tombstones, lexical index, snapshots)
- :mod:`.segments`: vector segments, searched and merged
- :mod:`.ondisk`: IVF segments filled in parts (Ray tasks) and merged by FAISS into one lists file on disk
- :mod:`.reader`: :class:`Index`, an open snapshot
- :mod:`.writer`: :class:`IndexWriter` and compaction
- :mod:`.maintenance`: info, check, repair
"""

from __future__ import annotations

from .files import DEFAULT_INDEX, DEFAULT_ROOT, MANIFEST, index_path
from .manifest import FORMAT_VERSION, Manifest, Segment, current_generation
from .reader import QUERY_CACHE_SIZE, Hit, Index, check_same_encoder
from .writer import AddReport, CompactReport, IndexWriter, compact, compaction_due

__all__ = ["AddReport", "CompactReport", "DEFAULT_INDEX", "DEFAULT_ROOT", "FORMAT_VERSION", "Hit", "Index",
           "IndexWriter", "MANIFEST", "Manifest", "QUERY_CACHE_SIZE", "Segment", "check_same_encoder", "compact",
           "compaction_due", "current_generation", "index_path"]
