"""The built-in demo corpus: the first sentence of the docstrings of Python's standard library.

Every machine with Python has it, so the demo needs no download and no data files.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import warnings
from pathlib import Path
from typing import Iterator

MODULES = (
    "builtins argparse array base64 bisect calendar codecs collections concurrent.futures configparser "
    "contextlib copy csv dataclasses datetime decimal difflib email.utils enum filecmp fileinput fnmatch "
    "fractions functools getpass glob gzip hashlib heapq hmac html http.client http.server inspect io "
    "ipaddress itertools json linecache locale logging lzma math mimetypes operator os os.path pathlib pickle "
    "platform pprint queue random re secrets shelve shlex shutil signal smtplib socket sqlite3 statistics "
    "string struct subprocess tarfile tempfile textwrap threading time timeit traceback unicodedata "
    "urllib.parse urllib.request uuid warnings weakref xml.etree.ElementTree zipfile zlib"
).split()

DEMO_QUERIES = (
    "read a file line by line",
    "parse a date from a string",
    "copy a directory tree",
    "compute the md5 hash of bytes",
    "sort items with a priority queue",
    "run a shell command and capture its output",
)

_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]]{2})[.!?](?=\s+[A-Z]|\s*$)")


def first_sentence(doc: str | None) -> str | None:
    """The first prose sentence of a docstring (signature lines skipped), or None when it has none."""
    for paragraph in (doc or "").strip().split("\n\n")[:2]:
        text = " ".join(line.strip() for line in paragraph.splitlines())
        match = _SENTENCE_END.search(text)
        sentence = text[: match.start() + 1] if match else text
        words = sentence.split()
        if len(words) >= 4 and "(" not in words[0] and "->" not in sentence[:40]:
            return sentence
    return None


def _own(value, module_name: str) -> bool:
    """Whether ``value`` is defined by the module (or its C accelerator), not re-exported from another."""
    owner = getattr(value, "__module__", None) or module_name
    leaf = module_name.split(".")[-1]
    return owner == module_name or owner.lstrip("_") == leaf or (leaf == "os" and owner == "posix")


def _members(module) -> Iterator[tuple[str, str, object]]:
    for name, value in sorted(vars(module).items()):
        if name.startswith("_") or not callable(value) or not _own(value, module.__name__):
            continue
        if inspect.isclass(value):
            yield name, "class", value
            for attr, member in sorted(vars(value).items()):
                if not attr.startswith("_") and callable(member):
                    yield f"{name}.{attr}", "method", member
        else:
            yield name, "function", value


def stdlib_corpus() -> Iterator[dict]:
    """Records ``{"id", "text", "module", "kind"}``, one per documented public function, class or method."""
    seen: set[str] = set()
    for module_name in MODULES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
        for name, kind, value in _members(module):
            sentence = first_sentence(inspect.getdoc(value))
            if sentence is None or sentence in seen:
                continue
            seen.add(sentence)
            yield {"id": f"{module_name}.{name}", "text": sentence, "module": module_name, "kind": kind}


def write_demo_corpus(path: str | Path) -> int:
    """Write the demo corpus as JSONL to ``path``; returns the number of records."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in stdlib_corpus():
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count
