"""Folders of files (issue 14): what is read and how, what is passed over (named, never fatal, nothing lost),
re-indexing that skips unchanged files, and --sync."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from semsearch import folders
from semsearch.api import index_corpus, index_folder
from semsearch.cli import main
from semsearch.errors import InputError
from semsearch.folders import html_text, markdown_title, rst_title, walk_folder
from semsearch.index import Index
from semsearch.index.maintenance import check

READABLE = {
    "a.txt": "plain text about wind tunnels\nsecond line",
    "notes.md": "Intro line\n\n# Boundary layers\n\nText on laminar flow.",
    "guide.rst": "Shock waves\n===========\n\nOblique shocks on wedges.",
    "page.html": "<html><head><title>Heat transfer</title><style>p{color:red}</style>"
                 "<script>var secret = 1;</script></head><body><h1>Heading</h1><p>Stagnation &amp; heating.</p>"
                 "<p>Second paragraph</p></body></html>",
    "broken.html": "<html><body><p>Unclosed <b>bold <div>nested text</p> a &lt; b < c <p>still text",
    "sub/deep/report.txt": "a report on flutter of panels",
    "utf8-bom.txt": "\ufeffbyte order mark first",
}


def make_folder(root: Path) -> dict[str, str]:
    """A folder with readable files and every kind of trouble; returns the expected problems by path."""
    for name, text in READABLE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.txt").write_text("never read")
    (root / ".dotfile.txt").write_text("never read")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")  # not selected: no problem either
    (root / "binary.txt").write_bytes(b"text\0with\0nul bytes")
    (root / "latin1.md").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (root / "empty.md").write_text("   \n\n")
    (root / "empty.html").write_text("<html><script>only()</script></html>")
    os.mkfifo(root / "fifo.txt")  # opening it would block the walk forever
    os.symlink("missing-target.txt", root / "dangling.txt")
    os.symlink("selfloop.txt", root / "selfloop.txt")
    os.symlink(".", root / "sub" / "loop")  # a folder link back to its parent
    os.symlink(root / "sub", root / "sub" / "deep" / "up")  # a link to an ancestor, two levels up
    cwd = os.getcwd()
    os.chdir(root)  # a relative name keeps the socket's path short
    try:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind("sock.txt")
        server.close()
    finally:
        os.chdir(cwd)
    return {
        "binary.txt": "binary file (it holds NUL bytes)",
        "latin1.md": "not UTF-8 text (invalid byte at offset 3)",
        "empty.md": "no text",
        "empty.html": "no text",
        "fifo.txt": "not a regular file (a FIFO)",
        "sock.txt": "not a regular file (a socket)",
        "dangling.txt": "broken symbolic link (to missing-target.txt)",
        "selfloop.txt": "symbolic link loop",
        "sub/loop": "symbolic link loop (leads back to a folder that contains it); not followed",
        "sub/deep/up": "symbolic link loop (leads back to a folder that contains it); not followed",
    }


def texts_of(folder: Path) -> dict[str, dict]:
    with Index.open(folder) as index:
        return {d.id: {"text": d.text, **d.meta} for d in index.fetch_rowids(index.store.live_rowids()).values()}


def test_a_folder_is_indexed_with_every_problem_named_and_nothing_else_lost(tmp_path, fake_encoder):
    root = tmp_path / "files"
    root.mkdir()
    problems = make_folder(root)
    result = index_folder(root, tmp_path / "idx", encoder=fake_encoder)
    assert {p.path: p.reason for p in result.walk.problems} == problems
    assert result.add.added == len(READABLE) and result.walk.read == len(READABLE)
    stored = texts_of(tmp_path / "idx")
    assert set(stored) == set(READABLE)  # ids are relative paths, / separated
    assert stored["a.txt"]["text"] == READABLE["a.txt"] and stored["a.txt"]["title"] == "plain text about wind tunnels"
    assert stored["notes.md"]["title"] == "Boundary layers" and stored["guide.rst"]["title"] == "Shock waves"
    page = stored["page.html"]
    assert page["title"] == "Heat transfer" and page["text"] == "Heading\nStagnation & heating.\nSecond paragraph"
    assert "secret" not in page["text"] and "color" not in page["text"]
    assert stored["broken.html"]["text"] == "Unclosed bold\nnested text\na < b < c\nstill text"
    assert stored["utf8-bom.txt"]["text"] == "byte order mark first"
    meta = stored["sub/deep/report.txt"]
    assert meta["path"] == "sub/deep/report.txt" and meta["size"] == len(READABLE["sub/deep/report.txt"])
    assert meta["folder"] == str(root.resolve()) and meta["mtime"].endswith("+00:00")
    assert check(tmp_path / "idx").ok


def test_the_cli_names_what_it_passed_over(tmp_path, index_home, tiny_model_dir):
    root = tmp_path / "files"
    root.mkdir()
    problems = make_folder(root)
    result = CliRunner().invoke(main, ["index", str(root), "--index", "f", "--model", str(tiny_model_dir), "-q"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{index_home / 'f'}: {len(READABLE)} read, {len(READABLE)} added, 0 updated, "
                               "0 unchanged in ")
    assert lines[1] == f"{len(problems)} files passed over (nothing else was skipped):"
    assert sorted(lines[2:]) == sorted(f"  {path}: {reason}" for path, reason in problems.items())
    found = CliRunner().invoke(main, ["query", "Stagnation heating", "--index", "f", "--mode", "lexical", "--json"])
    assert json.loads(found.stdout.splitlines()[0])["id"] == "page.html"
    bad = CliRunner().invoke(main, ["index", str(root), "--index", "f", "--format", "csv"])
    assert bad.exit_code == 2 and "apply to a corpus file, not to a folder" in bad.stderr
    bad = CliRunner().invoke(main, ["index", str(root / "a.txt"), "--index", "f", "--sync"])
    assert bad.exit_code == 2 and "--glob and --sync apply to a folder" in bad.stderr


def test_reindexing_skips_unchanged_files_updates_changed_ones_and_sync_deletes_gone_ones(tmp_path, fake_encoder):
    root, idx = tmp_path / "files", tmp_path / "idx"
    (root / "keep").mkdir(parents=True)
    for name in ("a.txt", "b.md", "keep/c.txt", "d.txt"):
        (root / name).write_text(f"text of {name}")
    index_corpus(_jsonl(tmp_path / "other.jsonl", [{"id": "a.txt", "text": "same id, from elsewhere"}]), idx,
                 encoder=fake_encoder)
    first = index_folder(root, idx, encoder=fake_encoder)
    assert (first.add.added, first.add.updated) == (3, 1)  # a.txt replaces the other corpus's a.txt: one id
    again = index_folder(root, idx, encoder=fake_encoder)
    assert (again.add.added, again.add.updated, again.add.unchanged) == (0, 0, 4)
    (root / "b.md").write_text("new text of b")
    (root / "d.txt").unlink()
    (root / "keep" / "c.txt").write_bytes(b"now\0binary")  # still there, unreadable: kept
    index_corpus(_jsonl(tmp_path / "other.jsonl", [{"id": "z", "text": "not from the folder"}]), idx,
                 encoder=fake_encoder)
    plain = index_folder(root, idx, encoder=fake_encoder)
    assert (plain.add.updated, plain.add.unchanged, plain.deleted) == (1, 1, [])
    assert set(texts_of(idx)) == {"a.txt", "b.md", "keep/c.txt", "d.txt", "z"}  # without --sync nothing goes
    synced = index_folder(root, idx, encoder=fake_encoder, sync=True)
    assert synced.deleted == ["d.txt"]
    stored = texts_of(idx)
    assert set(stored) == {"a.txt", "b.md", "keep/c.txt", "z"} and stored["b.md"]["text"] == "new text of b"
    assert stored["keep/c.txt"]["text"] == "text of keep/c.txt"  # unreadable now, but its file exists
    narrowed = index_folder(root, idx, encoder=fake_encoder, sync=True, globs=["*.md"])
    assert narrowed.deleted == [] and set(texts_of(idx)) == set(stored)  # not selected is not gone
    for name in ("a.txt", "b.md"):
        (root / name).unlink()
    (root / "keep" / "c.txt").unlink()
    emptied = index_folder(root, idx, encoder=fake_encoder, sync=True)
    assert emptied.deleted == ["a.txt", "b.md", "keep/c.txt"] and set(texts_of(idx)) == {"z"}
    assert check(idx).ok


def test_globs_select_by_name_or_path_and_other_suffixes_read_as_text(tmp_path, fake_encoder):
    root = tmp_path / "files"
    (root / "docs" / "api").mkdir(parents=True)
    (root / "docs" / "api" / "x.rst").write_text("X\n===\n\nabout x")
    (root / "top.rst").write_text("top")
    (root / "script.py").write_text("print('code')")
    (root / "paper.pdf").write_bytes(b"%PDF-1.4 ...")
    walk = walk_folder(root, ["docs/*.rst", "*.py", "*.pdf"])
    records = {r.id: r for r in walk.records()}
    assert set(records) == {"docs/api/x.rst", "script.py"} and records["script.py"].text == "print('code')"
    assert [str(p) for p in walk.problems] == ["paper.pdf: PDF is not read (no PDF extractor is bundled); "
                                               "convert it to text first"]
    with pytest.raises(InputError, match="no such folder"):
        walk_folder(tmp_path / "missing")
    with pytest.raises(InputError, match="nothing to index: no file matches"):
        index_folder(root, tmp_path / "idx", encoder=fake_encoder, globs=["*.nothing"])
    assert not (tmp_path / "idx" / "manifest.json").exists()


def test_large_files_are_passed_over(tmp_path, fake_encoder, monkeypatch):
    monkeypatch.setattr(folders, "MAX_FILE_BYTES", 100)
    root = tmp_path / "files"
    root.mkdir()
    (root / "big.txt").write_text("x " * 100)
    (root / "small.txt").write_text("fine")
    walk = walk_folder(root)
    assert [r.id for r in walk.records()] == ["small.txt"]
    assert [str(p) for p in walk.problems] == ["big.txt: 200 bytes, over the 0 MiB limit"]


def test_titles_and_html_text():
    assert markdown_title("Setext title\n============\n\nbody") == "Setext title"
    assert markdown_title("no heading here\nsecond") == "no heading here"
    assert markdown_title("text\n\n## Second level ##\n") == "Second level"
    assert rst_title("=====\nTitle\n=====\n\nbody") == "Title"
    assert html_text("<h1>Only a heading</h1><p>and text</p>") == ("Only a heading\nand text", "Only a heading")
    assert html_text("no tags at all &amp; an entity") == ("no tags at all & an entity", "no tags at all & an entity")
    assert html_text("<p>a<!-- a comment -->b</p><template>hidden</template>") == ("ab", "ab")


def _jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
