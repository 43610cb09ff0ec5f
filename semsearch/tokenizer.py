"""Tokenising for inference, straight from a model folder's ``tokenizer.json`` (no transformers import).

The Rust ``tokenizers`` library runs the same normaliser, pre-tokeniser, WordPiece/BPE model and special-token
template as transformers' "fast" tokenizers, which wrap it; what transformers adds on top (the padding token,
the length limit) comes from ``tokenizer_config.json``. Tests hold the token ids equal to transformers'.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ModelError

TOKENIZER_FILE = "tokenizer.json"


def has_fast_tokenizer(folder: Path) -> bool:
    return (folder / TOKENIZER_FILE).is_file()


class FastTokenizer:
    """The part of a transformers tokenizer that the encoders use, over ``tokenizers.Tokenizer``.

    Thread-safe: one lock around "set the truncation, encode", as the Rust tokenizer keeps truncation as state.
    """

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        except Exception as exc:  # a missing or malformed file: the library's own message, one line
            raise ModelError(f"{folder / TOKENIZER_FILE}: cannot read the tokenizer ({str(exc).splitlines()[0]})") from None
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._truncation: int | None = None
        self._lock = threading.Lock()
        config = {}
        if (folder / "tokenizer_config.json").is_file():
            config = json.loads((folder / "tokenizer_config.json").read_text())
        pad = config.get("pad_token", "[PAD]")
        pad = pad.get("content", "[PAD]") if isinstance(pad, dict) else pad
        self.pad_token_id = self._tokenizer.token_to_id(pad) or 0
        self.model_max_length = tokenizer_length_limit(config)

    def token_ids(self, texts: Sequence[str], max_length: int | None) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids and token type ids per text, truncated to ``max_length`` tokens (special tokens included)."""
        with self._lock:
            if max_length != self._truncation:
                if max_length is None:
                    self._tokenizer.no_truncation()
                else:
                    self._tokenizer.enable_truncation(max_length)
                self._truncation = max_length
            texts = list(texts)
            # One text: encode() on this thread; encode_batch() would hand it to the library's thread pool.
            encodings = [self._tokenizer.encode(texts[0])] if len(texts) == 1 else self._tokenizer.encode_batch(texts)
        return [e.ids for e in encodings], [e.type_ids for e in encodings]

    def __call__(self, texts, padding=False, truncation=False, max_length=None, return_attention_mask=True,
                 return_tensors=None, verbose=True):
        """transformers' calling convention, for the torch encoder: lists, or padded int64 tensors/arrays."""
        ids, types = self.token_ids(texts, max_length if truncation else None)
        out = {"input_ids": ids, "token_type_ids": types}
        if return_attention_mask and not padding:
            out["attention_mask"] = [[1] * len(row) for row in ids]
        if not padding:
            return out
        batch = pad_batch(ids, types, range(len(ids)), self.pad_token_id)
        if return_tensors == "pt":
            import torch

            return {k: torch.from_numpy(v) for k, v in batch.items()}
        return batch if return_tensors == "np" else {k: v.tolist() for k, v in batch.items()}


def tokenizer_length_limit(config: dict) -> int:
    """``model_max_length`` of a ``tokenizer_config.json``; 10**6 (no limit) when absent, as transformers reads it."""
    limit = config.get("model_max_length")
    return int(limit) if isinstance(limit, (int, float)) and limit < 1e9 else 10**6


def pad_batch(input_ids: Sequence[Sequence[int]], token_type_ids: Sequence[Sequence[int]] | None,
              rows: Sequence[int], pad_id: int) -> dict[str, np.ndarray]:
    """The ``rows`` of a tokenised set as one right-padded int64 batch with its attention mask."""
    width = max((len(input_ids[r]) for r in rows), default=0)
    batch = {"input_ids": np.full((len(rows), width), pad_id, dtype=np.int64),
             "attention_mask": np.zeros((len(rows), width), dtype=np.int64)}
    if token_type_ids is not None:
        batch["token_type_ids"] = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        n = len(input_ids[r])
        batch["input_ids"][i, :n] = input_ids[r]
        batch["attention_mask"][i, :n] = 1
        if token_type_ids is not None:
            batch["token_type_ids"][i, :n] = token_type_ids[r]
    return batch
