"""Careless use of the index folder loses nothing (issue 11, the storage items): foreign folders, a lost
manifest, damaged files, readers beside writers, full and read-only disks, one-line errors everywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch.api import delete_documents, index_corpus
from semsearch.cli import main
from semsearch.errors import IndexDamaged, IndexNotFoundError, SemsearchError
from semsearch.index import Index, IndexWriter
from semsearch.index.maintenance import check, repair

from .conftest import FakeEncoder


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def docs(start: int, stop: int, prefix: str = "d") -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": f"document {prefix} number {i}", "n": i} for i in range(start, stop)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def cli(index_home):
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, [str(a) for a in args])

    return run


@pytest.fixture
def fake(monkeypatch):
    """Every encoder the library loads is the fake one (CLI commands included)."""
    encoder = FakeEncoder(dimension=16)
    monkeypatch.setattr("semsearch.encoder.Encoder.from_spec", classmethod(lambda cls, spec, **kw: encoder))
    monkeypatch.setattr("semsearch.encoder.Encoder.load", classmethod(lambda cls, *a, **kw: encoder))
    return encoder


# ---------------------------------------------------------------- 1. a folder that holds the user's files
def test_a_folder_of_user_files_is_refused_and_never_touched(cli, tmp_path, fake):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "docs.md").write_text("notes\n")
    (folder / "vectors.py").write_text("print(1)\n")
    (folder / "manifest.json.bak").write_text("{}")
    (folder / "docs.d").mkdir()
    (folder / "docs.d" / "keep.txt").write_text("keep")
    user_files = snapshot(folder)
    corpus = write_jsonl(tmp_path / "c.jsonl", docs(0, 20))
    result = cli("index", corpus, "--index", folder, "-q")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {folder}: the folder holds other files and no index; refusing to write there "
                             "(choose an empty or new folder, or pass --force to add the index beside those files, "
                             "which stay untouched)\n")
    assert snapshot(folder) == user_files and sorted(p.name for p in folder.iterdir()) == sorted(
        ["docs.md", "vectors.py", "manifest.json.bak", "docs.d"])
    # --force: the index is written beside them; writes, deletes and compaction never touch them
    assert cli("index", corpus, "--index", folder, "-q", "--force").exit_code == 0
    assert cli("index", write_jsonl(tmp_path / "more.jsonl", docs(20, 30)), "--index", folder, "-q").exit_code == 0
    assert cli("delete", "--index", folder, "--id", "d3").exit_code == 0
    assert cli("compact", "--index", folder).exit_code == 0
    after = snapshot(folder)
    assert {name: after[name] for name in user_files} == user_files
    assert (folder / "docs.d" / "keep.txt").read_text() == "keep"
    with Index.open(folder) as index:
        assert len(index) == 29


def test_a_user_file_with_an_index_file_name_is_never_opened(cli, tmp_path, fake):
    folder = tmp_path / "q"
    folder.mkdir()
    (folder / "docs.db").write_bytes(b"my own database")
    result = cli("index", write_jsonl(tmp_path / "c.jsonl", docs(0, 3)), "--index", folder, "-q", "--force")
    assert result.exit_code == 1 and "holds docs.db, which an index would write; refusing to touch them" in result.stderr
    assert (folder / "docs.db").read_bytes() == b"my own database"


def test_index_pointing_at_a_regular_file(cli, tmp_path, fake):
    target = tmp_path / "afile"
    target.write_text("precious")
    result = cli("index", write_jsonl(tmp_path / "c.jsonl", docs(0, 3)), "--index", target, "-q")
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {target}: is a file")
    assert target.read_text() == "precious"
    for command in (["query", "x"], ["info"], ["check"], ["delete", "--id", "x"]):
        result = cli(*command, "--index", target)
        assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.output


# ---------------------------------------------------------------- 2. a lost manifest
def test_a_lost_manifest_refuses_writes_and_repair_rebuilds_it(cli, tmp_path, index_home, fake):
    index_corpus(write_jsonl(tmp_path / "a.jsonl", docs(0, 50)), "t")
    index_corpus(write_jsonl(tmp_path / "b.jsonl", docs(50, 52)), "t")
    delete_documents("t", ids=["d7"])
    folder = index_home / "t"
    (folder / "manifest.json").unlink()
    before = snapshot(folder)
    for command in (["index", write_jsonl(tmp_path / "c.jsonl", docs(100, 102)), "-q"], ["delete", "--id", "d1"],
                    ["query", "x"], ["compact"], ["check"]):
        result = cli(*command, "--index", "t")
        assert result.exit_code == 1, command
        assert result.stderr == (f"Error: {folder}: manifest.json is missing but the data files are there: the index "
                                 f"is damaged; run: semsearch check --repair --index {folder}\n")
    assert snapshot(folder) == before  # nothing deleted, nothing written
    result = cli("check", "--repair", "--index", "t")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{folder}: ok (51 documents, 51 vectors)\n"
    with Index.open("t") as index:
        index.use_encoder(fake)
        assert len(index) == 51 and index.generation == 3
        hits = index.search("document d number 51", k=51)[0]
        assert sorted(h.id for h in hits) == sorted(f"d{i}" for i in range(52) if i != 7)


# ---------------------------------------------------------------- 4. damaged vectors are never blessed
def test_a_damaged_segment_keeps_failing_check_and_never_scores_out_of_range(cli, tmp_path, index_home, fake):
    index_corpus(write_jsonl(tmp_path / "a.jsonl", docs(0, 50)), "t")
    segment = index_home / "t" / "seg.1.0.faiss"
    data = bytearray(segment.read_bytes())
    for offset in range(len(data) // 2, len(data) // 2 + 64, 4):
        data[offset:offset + 4] = np.array([3.0e37], dtype=np.float32).tobytes()
    segment.write_bytes(bytes(data))
    assert not check("t").ok
    index_corpus(write_jsonl(tmp_path / "b.jsonl", docs(50, 60)), "t")  # appends; builds on nothing old
    delete_documents("t", ids=["d51"])
    report = check("t")
    assert "seg.1.0.faiss: checksum differs from the manifest's" in report.problems  # the old checksum stands
    result = cli("query", "--index", "t", "--queries", write_lines(tmp_path / "q.txt", [f"q{i}" for i in range(20)]))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {segment}: scores outside [-1, 1]: its vectors are damaged; "
                             "run: semsearch check --repair\n")
    result = cli("compact", "--index", "t")  # compaction builds on the segment: it verifies it first
    assert result.exit_code == 1
    assert result.stderr == f"Error: {segment}: checksum differs from the manifest's; run: semsearch check --repair\n"
    assert cli("check", "--repair", "--index", "t").exit_code == 0
    with Index.open("t") as index:
        index.use_encoder(fake)
        for hits in index.search([f"q{i}" for i in range(20)], k=5):
            assert all(-1 <= h.score <= 1 for h in hits)
        assert len(index) == 59


def write_lines(path: Path, lines) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- 5. readers beside a writer
def test_readers_never_see_a_vanished_file_while_a_writer_commits(tmp_path, index_home, fake):
    index_corpus(write_jsonl(tmp_path / "a.jsonl", docs(0, 30)), "t")
    errors, opened = [], [0]
    stop = threading.Event()

    def read():
        while not stop.is_set():
            try:
                with Index.open("t") as index:
                    index.use_encoder(fake)
                    hits = index.search("document d number 3", k=3)[0]
                    assert hits and hits[0].id == "d3"
                    opened[0] += 1
            except Exception as exc:  # noqa: BLE001 - any failure is what the test looks for
                errors.append(repr(exc))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in readers:
        thread.start()
    try:
        for round_ in range(60):  # 60 commits: adds, deletes and, past 24 segments, automatic compactions
            index_corpus(write_jsonl(tmp_path / "r.jsonl", docs(1000 + round_, 1001 + round_, "r")), "t")
            if round_ % 7 == 3:
                delete_documents("t", ids=[f"r{1000 + round_ - 1}"])
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert errors == [] and opened[0] > 20
    assert check("t").ok


def test_an_open_reader_keeps_its_snapshot_through_a_compaction(tmp_path, index_home, fake):
    index_corpus(write_jsonl(tmp_path / "a.jsonl", docs(0, 40)), "t")
    for i in range(3):
        index_corpus(write_jsonl(tmp_path / f"b{i}.jsonl", docs(40 + i, 41 + i)), "t")
    delete_documents("t", ids=["d5", "d6"])
    with Index.open("t") as old:
        old.use_encoder(fake)
        before = [(h.id, h.score) for h in old.search("document d number 5", k=43)[0]]
        assert "d5" not in {i for i, _ in before} and len(before) == 41
        delete_documents("t", ids=[f"d{i}" for i in range(10, 30)])  # past 20 %: compacted, rows purged
        assert len(json.loads((index_home / "t" / "manifest.json").read_text())["segments"]) == 1
        assert not (index_home / "t" / "seg.1.0.faiss").exists()  # removed from the folder...
        assert [(h.id, h.score) for h in old.search("document d number 5", k=43)[0]] == before  # ...not from us
        assert old.get(["d12"])["d12"].text == "document d number 12"
    with Index.open("t") as new:
        assert len(new) == 21 and new.get(["d12"]) == {}


# ---------------------------------------------------------------- 6. damaged files: one line, never a traceback
@pytest.mark.parametrize("content", [[1, 2], {"format": 3}, {"format": 3, "generation": 1, "encoder": {},
                                                              "faiss": {}, "segments": "x"}, "not json"])
def test_a_damaged_manifest_is_one_line_in_every_command(cli, tmp_path, index_home, fake, content):
    index_corpus(write_jsonl(tmp_path / "a.jsonl", docs(0, 5)), "t")
    manifest = index_home / "t" / "manifest.json"
    manifest.write_text(content if isinstance(content, str) else json.dumps(content))
    for command in (["query", "x"], ["index", tmp_path / "a.jsonl", "-q"], ["delete", "--id", "d1"], ["info"],
                    ["check"], ["compact"], ["dedupe"]):
        result = cli(*command, "--index", "t")
        assert result.exit_code == 1, (command, result.output)
        assert result.stderr.startswith(f"Error: {manifest}: damaged manifest (") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated"])
def test_a_damaged_database_is_one_line_in_every_command(cli, tmp_path, index_home, fake, damage):
    index_corpus(write_jsonl(tmp_path / "a.jsonl", docs(0, 200)), "t")
    db = index_home / "t" / "docs.db"
    if damage == "missing":
        db.unlink()
    elif damage == "garbage":
        db.write_bytes(b"this is not a database" * 500)
    else:
        db.write_bytes(db.read_bytes()[:9000])
    for command in (["query", "x"], ["index", write_jsonl(tmp_path / "b.jsonl", docs(5, 7)), "-q"],
                    ["delete", "--id", "d1"], ["check", "--repair"], ["dedupe"], ["compact"]):
        result = cli(*command, "--index", "t")
        assert result.exit_code == 1, (command, result.output)
        lines = result.stderr.splitlines()
        if command[0] == "check":  # check lists what it found, then says it cannot mend it
            assert lines[0].startswith(f"{index_home / 't'}: docs.db: ") and len(lines) <= 3
        else:
            assert len(lines) == 1
        assert lines[-1].startswith("Error: ") and str(db) in lines[-1] and "Traceback" not in result.output


def test_a_segment_of_another_dimension_is_refused(cli, tmp_path, index_home, fake):
    import faiss

    index_corpus(write_jsonl(tmp_path / "a.jsonl", docs(0, 5)), "t")
    other = faiss.IndexIDMap2(faiss.IndexFlatIP(8))
    other.add_with_ids(np.eye(8, dtype=np.float32)[:5], np.arange(1, 6))
    faiss.write_index(other, str(index_home / "t" / "seg.1.0.faiss"))
    result = cli("query", "x", "--index", "t")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {index_home}/t/seg.1.0.faiss: holds 8-d vectors, the index's encoder gives "
                             "16-d; run: semsearch check --repair\n")
    assert cli("check", "--repair", "--index", "t").exit_code == 0
    with Index.open("t") as index:
        assert len(index) == 5


# ---------------------------------------------------------------- full and read-only disks (a real small tmpfs)
@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root ({made.stderr.decode().strip()[:80]})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)  # lazily: a test may still map a segment


def test_a_full_disk_leaves_the_index_as_it_was_and_no_partial_files(tmp_path, small_disk, fake):
    folder = small_disk / "idx"
    index_corpus(write_jsonl(tmp_path / "a.jsonl", docs(0, 20)), folder)
    before = snapshot(folder)
    big = [{"id": f"big{i}", "text": f"big document {i} " + "x" * 3000} for i in range(600)]
    with pytest.raises(SemsearchError, match=r"cannot write \(no space left on the device\); nothing was changed"):
        index_corpus(write_jsonl(tmp_path / "big.jsonl", big), folder)
    after = snapshot(folder)
    assert {k: v for k, v in after.items() if k != ".pending"} == {k: v for k, v in before.items() if k != ".pending"}
    with Index.open(folder) as index:
        assert len(index) == 20
    assert check(folder).ok
    free = shutil.disk_usage(small_disk).free
    assert free > 500_000  # the failed write's partial files are gone


def test_a_read_only_disk_is_one_line_and_queries_still_work(cli, tmp_path, small_disk, fake):
    folder = small_disk / "idx"
    index_corpus(write_jsonl(tmp_path / "a.jsonl", docs(0, 20)), folder)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        result = cli("index", write_jsonl(tmp_path / "b.jsonl", docs(20, 25)), "--index", folder, "-q")
        assert result.exit_code == 1 and "read-only file system" in result.stderr
        assert result.stderr.count("\n") == 1
        result = cli("delete", "--index", folder, "--id", "d1")
        assert result.exit_code == 1 and "read-only file system" in result.stderr
        with Index.open(folder) as index:
            index.use_encoder(fake)
            assert index.search("document d number 4", k=1)[0][0].id == "d4"
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)


# ---------------------------------------------------------------- 9. a failed first write
def test_a_failed_first_write_leaves_no_such_index(cli, tmp_path, index_home, fake):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"oops": 1}\n')
    assert cli("index", bad, "--index", "t", "-q").exit_code == 1
    result = cli("query", "x", "--index", "t")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {index_home}/t: no such index; build it with: semsearch index CORPUS "
                             "--index t\n")
    assert cli("index", write_jsonl(tmp_path / "ok.jsonl", docs(0, 3)), "--index", "t", "-q").exit_code == 0


def test_writer_busy_is_its_own_error(tmp_path, index_home, fake):
    from semsearch.errors import WriterBusy

    index_corpus(write_jsonl(tmp_path / "a.jsonl", docs(0, 3)), "t")
    with IndexWriter("t", fake):
        with pytest.raises(WriterBusy, match="another process is writing this index"):
            IndexWriter("t", fake, lock_timeout=0.1).__enter__()
    with pytest.raises(IndexNotFoundError):
        delete_documents("missing", ids=["x"])
    with pytest.raises(IndexDamaged):
        raise IndexDamaged("is a SemsearchError")


# ---------------------------------------------------------------- 7. filters that cannot mean what they say
def test_filters_of_the_wrong_type_fail_and_unknown_keys_warn(cli, tmp_path, index_home, fake):
    index_corpus(write_jsonl(tmp_path / "a.jsonl", [{"id": f"d{i}", "text": f"t {i}", "year": 2000 + i}
                                                    for i in range(10)]), "t")
    for flag in ("year>=abc", "year<=abc"):
        result = cli("query", "x", "--index", "t", "--filter", flag)
        assert result.exit_code == 1 and result.stderr.count("\n") == 1
        assert "year" in result.stderr and "abc" in result.stderr
        result = cli("delete", "--index", "t", "--where", flag)
        assert result.exit_code == 1 and "abc" in result.stderr
    result = cli("query", "x", "--index", "t", "--filter", "yeer>=2003")
    assert result.exit_code == 0 and result.stdout == "(no results)\n"
    assert result.stderr == "warning: no document has metadata key 'yeer'\n"
    result = cli("query", "x", "--index", "t", "--filter", "year>=2007", "--json")
    assert result.exit_code == 0 and sorted(json.loads(line)["id"] for line in result.stdout.splitlines()) == [
        "d7", "d8", "d9"]
    with Index.open("t") as index:
        index.use_encoder(fake)
        with pytest.raises(SemsearchError, match="threshold must be a number"):
            index.search("x", threshold=float("nan"))
