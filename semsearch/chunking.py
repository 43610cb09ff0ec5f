"""Long texts as overlapping passages of the model's own tokens, so nothing past the model's max length is lost.

A text that fits the window is one passage (the whole text, embedded as before). A longer one is cut into
windows of ``tokens`` word pieces that overlap by ``overlap``; windows start and end on word boundaries (a word
split into pieces is never cut), and each passage is the text between its first and last token's character
offsets. The tokenizer is the model folder's ``tokenizer.json`` read with the ``tokenizers`` library, whose
offsets point into the original text.

>>> chunker = Chunker.for_model(folder, max_length=256)
>>> chunker.split(long_text)
[(0, 1173), (1021, 2210), (2050, 2873)]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelError, SemsearchError

if TYPE_CHECKING:
    from .encoder import EncoderSpec

DEFAULT_OVERLAP_SHARE = 8  # default overlap: an eighth of the window


class ChunkingError(SemsearchError):
    """Chunk settings that cannot work with this model."""


@dataclass(frozen=True)
class Chunking:
    """How to cut long texts. ``tokens``: the window (default: the model's max length less its special
    tokens); ``overlap``: tokens shared by neighbouring windows (default: an eighth of the window).
    ``explicit``: asked for by the user, so a model without a ``tokenizer.json`` is an error, not a fallback."""

    tokens: int | None = None
    overlap: int | None = None
    explicit: bool = False


class Chunker:
    """Cuts texts into windows of a tokenizer's tokens; :meth:`split` gives character offsets."""

    def __init__(self, tokenizer, tokens: int, overlap: int) -> None:
        if tokens < 1:
            raise ChunkingError(f"chunk size must be at least 1 token, got {tokens}")
        if not 0 <= overlap < tokens:
            raise ChunkingError(f"chunk overlap must be at least 0 and less than the chunk size ({tokens}), "
                                f"got {overlap}")
        self.tokenizer = tokenizer
        self.tokens = tokens
        self.overlap = overlap

    @classmethod
    def for_model(cls, tokenizer_json: str | Path, max_length: int, chunking: Chunking = Chunking()) -> "Chunker":
        """A chunker for the model whose ``tokenizer.json`` this is, windows fitting ``max_length``."""
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_json))
        except Exception as exc:  # the tokenizers library raises its own exception type
            raise ModelError(f"{tokenizer_json}: cannot read the tokenizer ({str(exc).splitlines()[0][:120]})") \
                from None
        tokenizer.no_truncation()
        tokenizer.no_padding()
        room = max_length - len(tokenizer.encode("").ids)  # the special tokens ([CLS], [SEP]) take their share
        tokens = chunking.tokens if chunking.tokens is not None else room
        if tokens > room:
            raise ChunkingError(f"chunk size {tokens} tokens does not fit the model's max length ({max_length} "
                                f"tokens, {max_length - room} of them special): use at most {room}")
        overlap = chunking.overlap if chunking.overlap is not None else tokens // DEFAULT_OVERLAP_SHARE
        return cls(tokenizer, tokens, overlap)

    def count(self, text: str) -> int:
        """Tokens of ``text`` without special tokens."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def split(self, text: str) -> list[tuple[int, int]]:
        """Character offsets ``(start, end)`` of the passages of ``text``: ``[(0, len(text))]`` when it fits."""
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        return windows(encoding.offsets, encoding.word_ids, self.tokens, self.overlap, len(text))


def windows(offsets: list[tuple[int, int]], words: list[int | None], size: int, overlap: int,
            length: int) -> list[tuple[int, int]]:
    """Character spans of overlapping token windows (pure: tokens are given as offsets and word numbers).

    Every window holds at most ``size`` tokens, starts and ends on a word boundary when the word is shorter
    than the window, and the next one starts ``overlap`` tokens before this one ends (rounded back to the start
    of a word), so every token is in some window and the windows move forward. The last window is a full one
    that ends with the text (overlapping its neighbour more), not a short tail: a few tokens alone make a vector
    that matches queries too easily, and a document scores as its best passage.
    """
    total = len(offsets)
    if total <= size:
        return [(0, length)]

    def same_word(position: int) -> bool:
        return words[position] is not None and words[position] == words[position - 1]

    def boundary(position: int, floor: int) -> int:
        # the first piece of the word at ``position``; ``position`` itself when that word began before ``floor``
        # (a word longer than the window is cut, as it must be)
        found = position
        while found > floor and same_word(found):
            found -= 1
        return position if same_word(found) else found

    def next_word(position: int) -> int:
        # the first piece of the next word at or after ``position``
        while position < total - 1 and same_word(position):
            position += 1
        return position

    spans, start = [], 0
    while True:
        end = min(start + size, total)
        if end < total:
            end = boundary(end, start + 1)  # end before a word the window cannot hold whole
        spans.append((offsets[start][0], offsets[end - 1][1]))
        if end >= total:
            return spans
        following = boundary(max(end - overlap, start + 1), start + 1)
        if following + size >= total:  # the last window: a full one ending with the text, not a short tail
            anchored = next_word(total - size)
            if start < anchored < following:
                following = anchored
        start = following


def tokenizer_file(spec: "EncoderSpec") -> Path | None:
    """The ``tokenizer.json`` of the model a spec names, None when there is none (or the model is not here)."""
    from .encoder import read_st_config, resolve_model

    try:
        folder = resolve_model(spec.model)
        path = read_st_config(folder).transformer_dir / "tokenizer.json"
    except SemsearchError:
        return None
    return path if path.is_file() else None


def chunker_for(spec: "EncoderSpec", chunking: Chunking | None) -> Chunker | None:
    """The chunker an index write uses: None when ``chunking`` is None (truncation) or, for the default
    chunking, when the model has no ``tokenizer.json`` (its texts are truncated, as before passages)."""
    if chunking is None:
        return None
    path = tokenizer_file(spec)
    if path is None:
        if chunking.explicit:
            raise ChunkingError(f"model {spec.model!r} has no tokenizer.json, so its texts cannot be cut into "
                                "passages; use --no-chunk")
        return None
    return Chunker.for_model(path, spec.max_length, chunking)


def passages_of(chunker: Chunker | None, text: str, max_length: int) -> list[tuple[int, int]] | None:
    """How an index write cuts ``text``: its passages' spans, or None when it is one passage, the whole text
    (it fits the model's ``max_length``, there is no chunker, or the chunker makes one window of it). A word
    piece covers at least one character, so only texts longer than the limit in characters are tokenised."""
    if chunker is None or len(text) <= max_length - 2:
        return None
    spans = chunker.split(text)
    return spans if len(spans) > 1 else None


def passage_texts(text: str, spans: list[tuple[int, int]] | None) -> list[str]:
    """The texts to embed for a document cut into ``spans`` (None: the whole text)."""
    return [text] if not spans else [text[start:end] for start, end in spans]
