"""Training and evaluation data: labelled pairs, scored pairs, duplicate pairs and triplets.

Files are CSV, TSV or JSONL (by suffix, or ``format``). A CSV/TSV file may start with a header row that
names the columns; without one, the columns are taken by position in the order the kind lists them (the
STS benchmark CSV has no header: ``sentence1,sentence2,score``). A bad row is an
:class:`~semsearch.errors.InputError` naming the file and line, or, with ``skip_invalid``, skipped and
counted in :attr:`Dataset.skipped`.

Nothing here imports torch.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterator, Sequence

from ..corpus import Format, guess_format, json_objects
from ..errors import InputError, choice


class DataKind(str, Enum):
    """What one row holds."""

    LABELLED_PAIRS = "labelled-pairs"  # sentence1, sentence2, class label (e.g. NLI)
    SCORED_PAIRS = "scored-pairs"  # sentence1, sentence2, similarity score (e.g. STSb 0-5)
    DUPLICATE_PAIRS = "duplicate-pairs"  # label (0/1), sentence1, sentence2
    TRIPLETS = "triplets"  # anchor, positive, negative


DEFAULT_COLUMNS: dict[DataKind, tuple[str, ...]] = {
    DataKind.LABELLED_PAIRS: ("sentence1", "sentence2", "label"),
    DataKind.SCORED_PAIRS: ("sentence1", "sentence2", "score"),
    DataKind.DUPLICATE_PAIRS: ("label", "sentence1", "sentence2"),
    DataKind.TRIPLETS: ("anchor", "positive", "negative"),
}
# Which of the columns hold text; the others hold the label or score.
_TEXT_POSITIONS: dict[DataKind, tuple[int, ...]] = {
    DataKind.LABELLED_PAIRS: (0, 1),
    DataKind.SCORED_PAIRS: (0, 1),
    DataKind.DUPLICATE_PAIRS: (1, 2),
    DataKind.TRIPLETS: (0, 1, 2),
}
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}
_PROBLEMS_KEPT = 5


@dataclass(frozen=True)
class Example:
    """One row: its texts in column order, its label (class index, scaled score, 0/1) or ``None``."""

    texts: tuple[str, ...]
    label: int | float | None
    line: int


@dataclass
class Dataset:
    """The valid rows of one file, and what was skipped."""

    path: str
    kind: DataKind
    examples: list[Example]
    labels: tuple[str, ...] = ()  # class names of labelled pairs; a label is an index into this
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # the first few skipped rows, "file:line: reason"

    def __len__(self) -> int:
        return len(self.examples)


def parse_columns(spec: str | Sequence[str] | None, kind: DataKind) -> tuple[str, ...]:
    """Column names from ``"a,b,c"`` (or a sequence); the kind's defaults for ``None``."""
    if spec is None:
        return DEFAULT_COLUMNS[kind]
    names = tuple(c.strip() for c in (spec.split(",") if isinstance(spec, str) else spec))
    expected = len(DEFAULT_COLUMNS[kind])
    if len(names) != expected or not all(names):
        raise InputError("--columns", f"{kind.value} need {expected} column names "
                         f"({', '.join(DEFAULT_COLUMNS[kind])}); got {','.join(names) or 'none'!r}")
    return names


def read_dataset(path: str | Path, kind: DataKind | str, *, columns: str | Sequence[str] | None = None,
                 format: str | None = None, skip_invalid: bool = False,
                 score_range: tuple[float, float] | None = (0.0, 5.0),
                 labels: Sequence[str] | None = None) -> Dataset:
    """Read the rows of ``path`` as ``kind``.

    ``score_range`` (scored pairs): the gold scale; scores are mapped linearly onto [0, 1]. ``None`` keeps
    every finite score as it is (evaluation: correlations do not depend on the scale).
    ``labels`` (labelled pairs): the known class names, in class order (for evaluation with a trained head);
    without it the classes are the distinct labels of the file, in numeric order when all are integers.
    """
    kind = choice(DataKind, kind, "data kind")
    path = Path(path)
    names = parse_columns(columns, kind)
    low, high = score_range if score_range is not None else (-math.inf, math.inf)
    if kind is DataKind.SCORED_PAIRS and not high > low:
        raise InputError(path, f"score range {low:g}..{high:g} is empty")
    out = Dataset(str(path), kind, [])
    raw: list[tuple[int, tuple[str, ...], str]] = []

    def reject(line: int, reason: str) -> None:
        if not skip_invalid:
            raise InputError(path, reason, line)
        out.skipped += 1
        if len(out.problems) < _PROBLEMS_KEPT:
            out.problems.append(f"{path}:{line}: {reason}")

    for line, values, problem, hint in _rows(path, names, format):
        if problem is None:
            problem, example = _parse(kind, names, values, line, low, high, labels)
        if problem is not None:
            reject(line, problem + hint)
        elif kind is DataKind.LABELLED_PAIRS:
            raw.append((line, example.texts, example.label))
        else:
            out.examples.append(example)

    if kind is DataKind.LABELLED_PAIRS:
        out.labels = tuple(labels) if labels is not None else _class_names({name for _, _, name in raw})
        index = {name: i for i, name in enumerate(out.labels)}
        out.examples = [Example(texts, index[name], line) for line, texts, name in raw]
        if len(out.labels) < 2 and labels is None and out.examples:
            raise InputError(path, f"only one label ({out.labels[0]!r}); classification needs at least two")
    if not out.examples:
        raise InputError(path, "no valid rows" + (f" ({out.skipped} skipped)" if out.skipped else ""))
    return out


def _parse(kind: DataKind, names: tuple[str, ...], values: list, line: int, low: float, high: float,
           labels: Sequence[str] | None) -> tuple[str | None, Example | None]:
    """``(problem, None)`` for a bad row, else ``(None, example)``; labelled pairs keep the label name."""
    text_positions = _TEXT_POSITIONS[kind]
    for i in text_positions:
        if not isinstance(values[i], str):
            return f"{names[i]} is {'missing' if values[i] is None else 'not text'}", None
        if not values[i].strip():
            return f"{names[i]} is empty", None
    texts = tuple(values[i] for i in text_positions)
    if kind is DataKind.TRIPLETS:
        return None, Example(texts, None, line)
    position = next(i for i in range(len(names)) if i not in text_positions)
    column, value = names[position], values[position]
    if kind is DataKind.SCORED_PAIRS:
        score = _number(value)
        if score is None:
            return f"{column} {value!r} is not a number", None
        if not low <= score <= high:
            return f"{column} {score:g} is outside {low:g}..{high:g} (set the scale with --score-range)", None
        return None, Example(texts, score if math.isinf(high - low) else (score - low) / (high - low), line)
    if kind is DataKind.DUPLICATE_PAIRS:
        flag = str(value).strip().lower() if value is not None else ""
        if flag not in _TRUE | _FALSE:
            return f"{column} {value!r} is not 0/1 (or true/false)", None
        return None, Example(texts, 1 if flag in _TRUE else 0, line)
    name = _label_name(value)
    if name is None:
        return f"{column} {value!r} is not a label", None
    if labels is not None and name not in labels:
        return f"{column} {name!r} is not one of the known labels ({', '.join(labels)})", None
    return None, Example(texts, name, line)  # the name becomes a class index once all labels are known


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _label_name(value) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    name = str(value).strip()
    return name or None


def _class_names(names: set[str]) -> tuple[str, ...]:
    try:
        return tuple(sorted(names, key=int))
    except ValueError:
        return tuple(sorted(names))


def _format(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in ("csv", "tsv", "jsonl"):
            raise InputError(path, f"unknown format {format!r} (csv, tsv or jsonl)")
        return format
    fmt = guess_format(path, default=Format.CSV)
    return Format.CSV.value if fmt is Format.TEXT else fmt.value  # rows of texts: a .txt is read as CSV


def _rows(path: Path, names: tuple[str, ...], format: str | None) -> Iterator[tuple[int, list, str | None, str]]:
    """``(line, values in the order of names, problem or None, hint for a problem)`` for each non-blank row."""
    if not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "is not a file")
    fmt = _format(path, format)
    with path.open(newline="", encoding="utf-8") as fh:
        try:
            if fmt == "jsonl":
                yield from _jsonl_rows(fh, names)
            else:
                yield from _table_rows(fh, names, "\t" if fmt == "tsv" else ",")
        except UnicodeDecodeError as exc:
            raise InputError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start} of a block)") from None


def _jsonl_rows(fh, names: tuple[str, ...]) -> Iterator[tuple[int, list, str | None, str]]:
    for line, obj, problem in json_objects(enumerate(fh, start=1)):
        if problem:
            yield line, [], problem, ""
            continue
        missing = [n for n in names if n not in obj]
        if missing:
            yield line, [], f"no field {', '.join(missing)} (fields: {', '.join(obj) or 'none'}; name yours with --columns)", ""
            continue
        yield line, [obj[n] for n in names], None, ""


def _table_rows(fh, names: tuple[str, ...], delimiter: str) -> Iterator[tuple[int, list, str | None, str]]:
    reader = csv.reader(fh, delimiter=delimiter)
    positions: list[int] | None = None
    hint = ""
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if positions is None:
            lowered = [cell.strip().lower() for cell in row]
            if all(n.lower() in lowered for n in names):
                positions = [lowered.index(n.lower()) for n in names]
                continue
            positions = list(range(len(names)))  # no header: by position
            hint = f" (if line {line} is a header, it lacks the columns {', '.join(names)}: name yours with --columns)"
        if len(row) <= max(positions):
            yield line, [], f"expected {max(positions) + 1} fields ({', '.join(names)}), got {len(row)}", hint
        else:
            yield line, [row[p] for p in positions], None, hint
        hint = ""


def describe(dataset: Dataset) -> str:
    """One line: how many rows were read and skipped, with the first problem."""
    text = f"{dataset.path}: {len(dataset)} {dataset.kind.value.replace('-', ' ')}"
    if dataset.skipped:
        text += f", {dataset.skipped} invalid rows skipped (first: {dataset.problems[0]})"
    return text
