"""A folder of files as a corpus: each text, Markdown, reStructuredText or HTML file one document.

The walk goes through sub-folders (following symbolic links, each real folder once, so a link back to a parent
is reported, not followed forever), in name order, passing over hidden files and folders (``.git``). Each file
selected by the glob patterns becomes a :class:`~semsearch.corpus.Record` whose id is its path relative to the
folder (``/``-separated) and whose metadata is ``path``, ``size`` (bytes), ``mtime`` (UTC, ISO 8601),
``title`` and ``folder`` (the absolute folder walked, which ``--sync`` uses to find the documents of this walk).

HTML is read with the standard library's ``html.parser`` (lenient: broken markup still gives its text), without
scripts and styles; the title is the ``<title>`` or the first heading. PDF is not read (no extractor is
bundled). A file that cannot become text is a :class:`FileProblem` (named with its reason), never an error that
stops the walk: an unreadable file, a broken or looping link, a FIFO or socket, a binary file, text that is not
UTF-8, a file over :data:`MAX_FILE_BYTES`, or one with no text at all.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator, Sequence

from .corpus import Record
from .errors import InputError

DEFAULT_GLOBS = ("*.txt", "*.md", "*.markdown", "*.rst", "*.html", "*.htm")
MAX_FILE_BYTES = 32 << 20
FOLDER_KEY = "folder"  # the metadata field naming the folder a document was read from
_HTML = {".html", ".htm", ".xhtml"}
_MARKDOWN = {".md", ".markdown"}
_NOT_READ = {".pdf": "PDF is not read (no PDF extractor is bundled); convert it to text first"}
TITLE_CHARS = 200


@dataclass(frozen=True)
class FileProblem:
    """A file the walk passed over, and why."""

    path: str  # relative to the folder
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class FolderWalk:
    """What one walk found: the files it selected (read or not) and the problems it passed over."""

    root: Path
    globs: tuple[str, ...]
    selected: set[str] = field(default_factory=set)  # relative paths of every selected file, readable or not
    problems: list[FileProblem] = field(default_factory=list)
    read: int = 0

    @property
    def folder_value(self) -> str:
        return str(self.root)

    def records(self) -> Iterator[Record]:
        """The documents of the folder, one per readable selected file (problems are collected on the way)."""
        for relative, path in self._files(self.root, "", {_identity(self.root)}):
            self.selected.add(relative)
            record = self._record(relative, path)
            if record is not None:
                self.read += 1
                yield record

    # ------------------------------------------------------------------ walking
    def _files(self, folder: Path, prefix: str, ancestors: set[tuple[int, int]]) -> Iterator[tuple[str, Path]]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            self.problems.append(FileProblem(prefix.rstrip("/") or ".", f"folder cannot be read ({_reason(exc)})"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative = prefix + entry.name
            path = Path(entry.path)
            try:
                info = path.stat()  # follows links
            except OSError as exc:  # named whatever its name: a broken or looping link may have been a folder
                self.selected.add(relative)
                self.problems.append(FileProblem(relative, _link_reason(path, exc)))
                continue
            if stat.S_ISDIR(info.st_mode):
                identity = (info.st_dev, info.st_ino)
                if identity in ancestors:
                    self.problems.append(FileProblem(relative, "symbolic link loop (leads back to a folder that "
                                                               "contains it); not followed"))
                    continue
                yield from self._files(path, relative + "/", ancestors | {identity})
            elif self._wanted(relative):
                if not stat.S_ISREG(info.st_mode):
                    self.selected.add(relative)
                    self.problems.append(FileProblem(relative, f"not a regular file ({_kind(info.st_mode)})"))
                    continue
                yield relative, path

    def _wanted(self, relative: str) -> bool:
        name = relative.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(relative if "/" in g else name, g) for g in self.globs)

    # ------------------------------------------------------------------ reading
    def _record(self, relative: str, path: Path) -> Record | None:
        def problem(reason: str) -> None:
            self.problems.append(FileProblem(relative, reason))

        suffix = path.suffix.lower()
        if suffix in _NOT_READ:
            return problem(_NOT_READ[suffix])
        try:
            with open(path, "rb") as fh:
                info = os.fstat(fh.fileno())
                if info.st_size > MAX_FILE_BYTES:
                    return problem(f"{info.st_size:,} bytes, over the {MAX_FILE_BYTES >> 20} MiB limit")
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            return problem(f"cannot be read ({_reason(exc)})")
        if b"\0" in data[:8192]:
            return problem("binary file (it holds NUL bytes)")
        try:
            raw = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return problem(f"not UTF-8 text (invalid byte at offset {exc.start})")
        if suffix in _HTML:
            text, title = html_text(raw)
        else:
            text = raw.strip()
            title = markdown_title(text) if suffix in _MARKDOWN else rst_title(text) if suffix == ".rst" \
                else first_line(text)
        if not text.strip():
            return problem("no text")
        mtime = datetime.fromtimestamp(info.st_mtime, timezone.utc).isoformat(timespec="seconds")
        meta = {"path": relative, "size": info.st_size, "mtime": mtime, "title": title[:TITLE_CHARS],
                FOLDER_KEY: self.folder_value}
        return Record(text=text, id=relative, line=1, meta=meta)


def walk_folder(folder: str | os.PathLike, globs: Sequence[str] | None = None) -> FolderWalk:
    """A walk of ``folder`` selecting the files that match ``globs`` (default :data:`DEFAULT_GLOBS`).

    A pattern without ``/`` matches the file name (``*.md``), one with ``/`` the relative path (``docs/*.rst``;
    ``*`` crosses folders there). Call :meth:`FolderWalk.records` to read.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "no such folder" if not root.exists() else "not a folder")
    patterns = tuple(g.strip() for g in (globs or DEFAULT_GLOBS) if g.strip())
    if not patterns:
        raise InputError(root, "no glob patterns given")
    return FolderWalk(root.resolve(), patterns)


# ---------------------------------------------------------------------------------------- text and titles
class _HTMLText(HTMLParser):
    """Visible text of an HTML page, blocks on lines of their own; the title and the first heading."""

    _SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    _BLOCK = {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header", "footer", "h1",
              "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "dd", "dt", "hr", "main", "nav", "aside", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping: list[str] = []
        self.title: list[str] = []
        self.heading: list[str] = []
        self._in_title = False
        self._in_heading = False
        self._heading_done = False

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self.skipping.append(tag)
        elif tag in ("h1", "h2") and not self._heading_done:
            self._in_heading = True
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP and tag in self.skipping:
            while self.skipping and self.skipping.pop() != tag:
                pass
        elif tag in ("h1", "h2") and self._in_heading:
            self._in_heading, self._heading_done = False, True
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data) -> None:
        if self._in_title:
            self.title.append(data)
            return
        if self.skipping:
            return
        if self._in_heading:
            self.heading.append(data)
        self.parts.append(data)


def html_text(markup: str) -> tuple[str, str]:
    """``(text, title)`` of an HTML page; broken markup gives what text it has."""
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(parser.parts).split("\n"))
    text = "\n".join(line for line in lines if line)
    title = " ".join("".join(parser.title).split()) or " ".join("".join(parser.heading).split())
    return text, title or first_line(text)


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def markdown_title(text: str) -> str:
    """The first ``# heading`` (or a Setext heading underlined with ``=``), else the first line."""
    lines = text.splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match and match.group(1):
            return match.group(1)
        if line.strip() and number + 1 < len(lines) and re.fullmatch(r"\s{0,3}=+\s*", lines[number + 1]):
            return line.strip()
    return first_line(text)


def rst_title(text: str) -> str:
    """The first line underlined with punctuation (``=====``), else the first line."""
    lines = text.splitlines()
    for number, line in enumerate(lines[:-1]):
        under = lines[number + 1].strip()
        if line.strip() and len(under) >= 3 and len(set(under)) == 1 and not under[0].isalnum() \
                and not re.fullmatch(r"[=\-~^\"'`#*+<>:._]{3,}", line.strip()):
            return line.strip()
    return first_line(text)


# ---------------------------------------------------------------------------------------- reasons
def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _link_reason(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if path.is_symlink() and exc.errno == errno.ENOENT:
        try:
            return f"broken symbolic link (to {os.readlink(path)})"
        except OSError:
            return "broken symbolic link"
    return f"cannot be read ({_reason(exc)})"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a file"
