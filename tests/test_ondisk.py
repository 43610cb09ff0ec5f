"""On-disk IVF segments (semsearch/index/ondisk.py): trained on a sample, filled in parts, merged by FAISS.

The parts are filled in this process here (LocalAdder); tests/test_ray.py fills them on Ray workers. The oracle
is the IVF index the ordinary writer builds from the same vectors with the same quantizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from semsearch.corpus import Record
from semsearch.errors import IndexDamaged, IndexFormatError, SemsearchError
from semsearch.index import Index, IndexWriter, compact
from semsearch.index.maintenance import check, repair
from semsearch.index.ondisk import LocalAdder, OnDiskBuilder, mergeable_type
from semsearch.vectors import nlist_for, training_points_for

from .conftest import FakeEncoder

N = 3000


def records(n: int = N, prefix: str = "d", start: int = 0) -> list[Record]:
    return [Record(text=f"text {prefix}{i} " + "x" * (i % 7), id=f"{prefix}{i}", line=i + 1)
            for i in range(start, start + n)]


def build(path, encoder, batches: list[list[Record]], *, rows_per_part: int = 700, **writer) -> None:
    with IndexWriter(path, encoder, **writer) as w:
        assert w.build_on_disk(LocalAdder(), rows_per_part=rows_per_part)
        for batch in batches:
            w.add(batch)


def top_ids(path, encoder, queries: list[str], k: int = 10) -> list[list[str]]:
    with Index.open(path) as index:
        index._encoder = encoder
        return [[h.id for h in hits] for hits in index.search(queries, k=k)]


def ivf_index(path, encoder, n: int = 500):
    """An IVF index written the ordinary way: its trained template is what later writes build on."""
    with IndexWriter(path, encoder, index_type="ivf") as w:
        w.add(records(n))
    return path


def stored(path) -> tuple[np.ndarray, np.ndarray]:
    with Index.open(path) as index:
        return index.stored_vectors()


@pytest.mark.parametrize("kind", ["ivf", "IVF16,SQ8"])
def test_parts_merged_on_disk_are_the_ivf_index_of_one_write(tmp_path, capfd, kind):
    encoder = FakeEncoder()
    docs = records()
    with IndexWriter(tmp_path / "oracle", encoder, index_type=kind) as w:
        w.add(docs)
    capfd.readouterr()
    build(tmp_path / "disk", encoder, [docs[:1234], docs[1234:]], index_type=kind)
    assert capfd.readouterr().out == ""  # FAISS's "resizing ..." lines do not reach standard output
    names = sorted(p.name for p in (tmp_path / "disk").iterdir())
    assert names == [".lock", ".pending", "docs.db", "manifest.json", "seg.1.0.faiss", "seg.1.0.ivfdata",
                     "trained.1.faiss"]  # the five parts are gone
    manifest = json.loads((tmp_path / "disk" / "manifest.json").read_text())
    assert manifest["format"] == 4
    [segment] = manifest["segments"]
    assert (segment["lists"], segment["vectors"], segment["kind"]) == ("seg.1.0.ivfdata", N, kind)
    assert manifest["faiss"]["build"] == json.loads((tmp_path / "oracle" / "manifest.json").read_text())["faiss"][
        "build"]  # trained on the same vectors: the same lists
    ids, vectors = stored(tmp_path / "disk")
    want_ids, want_vectors = stored(tmp_path / "oracle")
    assert np.array_equal(ids, want_ids) and np.array_equal(vectors, want_vectors)
    # the folder moves (FAISS recorded the lists file's absolute path): searched from where it is now
    shutil.move(tmp_path / "disk", tmp_path / "moved")
    queries = [d.text for d in docs[::7]]
    assert top_ids(tmp_path / "moved", encoder, queries) == top_ids(tmp_path / "oracle", encoder, queries)
    assert check(tmp_path / "moved").ok


def test_writes_and_compaction_after_an_on_disk_segment(tmp_path):
    encoder = FakeEncoder()
    path = tmp_path / "t"
    build(path, encoder, [records()], index_type="ivf")
    with IndexWriter(path, encoder) as w:  # an ordinary write: a flat segment beside it
        w.add([Record(text="brand new", id="new", line=1)])
        w.delete(["d5"])
    assert top_ids(path, encoder, ["brand new"], k=1) == [["new"]]
    assert check(path).ok and json.loads((path / "manifest.json").read_text())["format"] == 4
    report = compact(path)
    assert (report.segments_before, report.segments_after, report.vectors) == (2, 1, N)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == 3 and "lists" not in manifest["segments"][0]  # merged in memory again
    assert not list(path.glob("*.ivfdata")) and check(path).ok
    assert "d5" not in top_ids(path, encoder, ["text d5 xxxxx"])[0]


def test_readers_count_the_tombstones_of_an_on_disk_segment_without_reading_its_ids(tmp_path, monkeypatch):
    from semsearch.vectors import VectorStore

    encoder = FakeEncoder()
    path = tmp_path / "t"
    build(path, encoder, [records()], index_type="ivf")
    with IndexWriter(path, encoder) as w:
        w.add([Record(text="brand new", id="new", line=1), Record(text="changed", id="d7", line=2)])
        w.delete(["d5", "d6"])
    assert json.loads((path / "manifest.json").read_text())["segments"][0]["rows"] == [1, N]
    counted = []
    original = VectorStore.stored_ids
    monkeypatch.setattr(VectorStore, "stored_ids", lambda self: counted.append(len(self)) or original(self))
    with Index.open(path) as index:
        assert len(index.segments) == N + 2 - 3  # the new ones live, d5, d6 and the old d7 tombstoned
    assert counted == [2]  # only the small flat segment's ids were read
    assert top_ids(path, encoder, ["changed", "text d5 xxxxx"], k=1)[0] == ["d7"]
    assert "d5" not in top_ids(path, encoder, ["text d5 xxxxx"])[0]


def test_a_write_to_an_existing_ivf_index_uses_its_trained_template(tmp_path):
    encoder = FakeEncoder()
    path = ivf_index(tmp_path / "t", encoder)
    small = records(50, prefix="s")
    build(path, encoder, [small])  # too small for a segment of the index's type: a flat one, as always
    manifest = json.loads((path / "manifest.json").read_text())
    assert [s["kind"] for s in manifest["segments"]] == ["ivf", "flat"] and manifest["format"] == 3
    large = records(10_000, prefix="l")
    build(path, encoder, [large[:4000], large[4000:]], rows_per_part=3000)
    manifest = json.loads((path / "manifest.json").read_text())
    assert [s.get("lists") for s in manifest["segments"]] == [None, None, "seg.3.0.ivfdata"]
    assert manifest["faiss"]["trained"]["file"] == "trained.1.faiss"  # the same quantizer for every segment
    assert top_ids(path, encoder, [large[1234].text, small[3].text], k=1) == [["l1234"], ["s3"]]
    assert check(path).ok and len(stored(path)[0]) == 10_550


def test_documents_replaced_within_the_write_leave_their_part(tmp_path):
    encoder = FakeEncoder()
    path = ivf_index(tmp_path / "t", encoder)
    docs = records(12_500, prefix="l")
    again = [Record(text=f"changed {i}", id=f"l{i}", line=i) for i in (3, 11_999, 12_400)]  # in parts, buffered
    build(path, encoder, [docs, again], rows_per_part=3000)
    ids, _ = stored(path)
    assert len(ids) == 13_000 and len(np.unique(ids)) == 13_000 and check(path).ok
    assert top_ids(path, encoder, ["changed 3", "changed 11999", "changed 12400"], k=1) == [["l3"], ["l11999"],
                                                                                            ["l12400"]]


def test_no_room_for_the_merged_lists_fails_before_the_merge_and_changes_nothing(tmp_path, monkeypatch):
    import semsearch.index.ondisk as ondisk

    encoder = FakeEncoder()
    path = ivf_index(tmp_path / "t", encoder)
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.name != ".lock"}
    monkeypatch.setattr(ondisk.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(1 << 40, 1 << 40, 1000))
    with pytest.raises(SemsearchError, match=r"cannot write \(no space left on the device\); nothing was changed"):
        build(path, encoder, [records(10_000, prefix="l")], rows_per_part=3000)
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.name != ".lock"} == {**before, ".pending": b""}
    assert len(stored(path)[0]) == 500


def test_a_write_that_removes_all_it_added_leaves_no_segment(tmp_path):
    encoder = FakeEncoder()
    path = ivf_index(tmp_path / "t", encoder)
    added = records(12_000, prefix="l")
    with IndexWriter(path, encoder) as w:
        assert w.build_on_disk(LocalAdder(), rows_per_part=3000)
        w.add(added)  # parts are filled and written
        assert w.delete([r.id for r in added]) == 12_000
    assert len(json.loads((path / "manifest.json").read_text())["segments"]) == 1
    assert not list(path.glob("part.*")) and len(stored(path)[0]) == 500 and check(path).ok


def test_a_file_of_a_name_the_write_would_take_is_left_alone(tmp_path):
    encoder = FakeEncoder()
    path = ivf_index(tmp_path / "t", encoder)
    theirs = path / "part.2.0.faiss"
    theirs.write_text("not ours")
    with pytest.raises(SemsearchError, match=r"part\.2\.0\.faiss: exists but no index names it"):
        build(path, encoder, [records(12_000, prefix="l")], rows_per_part=3000)
    assert theirs.read_text() == "not ours" and len(stored(path)[0]) == 500


def test_long_documents_size_the_index_by_their_passages():
    rng = np.random.default_rng(0)
    builder = OnDiskBuilder(Path("/nonexistent"), 1, 16, "ivf", LocalAdder(), expected=1_000_000,
                            rows_per_part=1 << 30)
    rows = np.repeat(np.arange(40_000), 3)  # three passages per record
    ids = rows | (np.tile(np.arange(3), 40_000) << 40)
    vectors = rng.standard_normal((len(ids), 16)).astype(np.float32)
    for start in range(0, len(ids), 6000):
        builder.add(ids[start:start + 6000], vectors[start:start + 6000])
    assert builder.template is not None and builder.template.build["nlist"] == nlist_for(3_000_000)
    assert builder.template.build["trained_on"] == training_points_for("ivf", 16, 3_000_000)


def test_a_merge_that_dies_of_a_full_disk_is_one_line_and_changes_nothing(tmp_path, monkeypatch):
    import signal
    import subprocess

    encoder = FakeEncoder()
    path = ivf_index(tmp_path / "t", encoder)
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.name != ".lock"}
    # FAISS fills the lists file through a memory map: a disk that fills meanwhile kills the merge with SIGBUS
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: subprocess.CompletedProcess(args, -signal.SIGBUS))
    with pytest.raises(SemsearchError, match=r"cannot write \(no space left on the device\); nothing was changed"):
        build(path, encoder, [records(10_000, prefix="l")], rows_per_part=3000)
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.name != ".lock"} == {**before, ".pending": b""}


def test_a_new_index_trains_on_the_first_vectors_sized_for_the_expected_count(tmp_path):
    encoder = FakeEncoder()
    builder = OnDiskBuilder(tmp_path, 1, 16, "ivf", LocalAdder(), expected=1_000_000, rows_per_part=5000)
    assert training_points_for("ivf", 16, 1_000_000) == 64_000
    vectors = encoder.encode([f"t{i}" for i in range(70_000)])
    builder.add(np.arange(70_000), vectors)
    assert builder.template is not None and builder.template.build["nlist"] == 1000  # sqrt(1M), not sqrt(64k)
    assert builder.template.build["trained_on"] == 64_000
    assert len(builder._parts) == 14 and builder._buffered == 0  # added in parts as soon as it was trained


def test_only_ivf_types_are_merged_on_disk():
    assert mergeable_type("ivf", 16) and mergeable_type("IVF64,PQ4", 16)
    assert not mergeable_type("ivfpq", 16)  # an ID map over re-ranking: kept on the driver
    assert not mergeable_type("hnsw", 16) and not mergeable_type("flat", 16)


def test_a_damaged_or_missing_lists_file_is_named(tmp_path):
    encoder = FakeEncoder()
    path = tmp_path / "t"
    build(path, encoder, [records(1000)], index_type="ivf")
    lists = path / "seg.1.0.ivfdata"
    data = lists.read_bytes()
    lists.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexDamaged, match=r"seg\.1\.0\.ivfdata: holds \d+ bytes, its segment needs \d+"):
        Index.open(path)
    assert "seg.1.0.ivfdata: checksum differs from the manifest's" in check(path).problems
    lists.unlink()
    with pytest.raises(IndexDamaged, match=r"seg\.1\.0\.ivfdata: missing"):
        Index.open(path)
    assert check(path).problems == ["seg.1.0.ivfdata: missing"]
    flipped = bytearray(data)
    flipped[100] ^= 0xFF
    lists.write_bytes(bytes(flipped))
    with IndexWriter(path, encoder) as w:
        w.add(records(1, prefix="n"))
    with pytest.raises(IndexDamaged, match=r"seg\.1\.0\.ivfdata: checksum differs"):
        compact(path)  # what a writer builds on is verified first


def test_repair_rebuilds_a_lost_lists_file_from_the_texts(tmp_path, tiny_model_dir):
    path = tmp_path / "t"
    with IndexWriter(path, model=str(tiny_model_dir), index_type="ivf") as w:
        assert w.build_on_disk(LocalAdder(), rows_per_part=100)
        w.add(records(300))
    (path / "seg.1.0.ivfdata").unlink()
    report = repair(path)
    assert report.ok and len(stored(path)[0]) == 300
    with Index.open(path) as index:
        assert [h.id for h in index.search([records(300)[42].text], k=1)[0]] == ["d42"]


def test_older_readers_refuse_an_index_with_on_disk_segments(tmp_path, monkeypatch):
    import semsearch.index.manifest as manifest_module

    path = tmp_path / "t"
    build(path, FakeEncoder(), [records(500)], index_type="ivf")
    monkeypatch.setattr(manifest_module, "FORMAT_VERSION", 3)
    with pytest.raises(IndexFormatError, match="index format 4 is newer than this semsearch reads"):
        Index.open(path)
