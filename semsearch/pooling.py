"""Pooling: turn per-token embeddings into one sentence vector.

Pure functions of ``(token_embeddings, attention_mask)``; padding positions never change the result. Each mode
exists twice, once over torch tensors (training, the torch backends) and once over numpy arrays (the onnxruntime
backend, which must not import torch); a test holds the two equal.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

from .errors import UnsupportedModel, choice

if TYPE_CHECKING:
    import torch


class Pooling(str, Enum):
    """How token vectors become a sentence vector."""

    MEAN = "mean"
    MAX = "max"
    CLS = "cls"


def mean_pool(token_embeddings: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
    """Average of the token vectors that the mask marks as real."""
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    summed = (token_embeddings * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return summed / counts


def max_pool(token_embeddings: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
    """Element-wise maximum over the real tokens; padding is masked to a very low value first."""
    import torch

    mask = attention_mask.unsqueeze(-1).bool()
    lowest = torch.finfo(token_embeddings.dtype).min
    return token_embeddings.masked_fill(~mask, lowest).max(dim=1).values


def cls_pool(token_embeddings: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
    """The vector of the first token ([CLS] for BERT-style tokenizers)."""
    return token_embeddings[:, 0]


POOLERS = {Pooling.MEAN: mean_pool, Pooling.MAX: max_pool, Pooling.CLS: cls_pool}


def pool(mode: Pooling | str, token_embeddings: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
    """Apply the pooling ``mode`` (``"mean"``, ``"max"`` or ``"cls"``)."""
    return POOLERS[choice(Pooling, mode, "pooling")](token_embeddings, attention_mask)


def pool_numpy(mode: Pooling | str, token_embeddings: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """:func:`pool` over numpy arrays, ``(batch, length, dim)`` and ``(batch, length)``, with the same arithmetic."""
    mode = Pooling(mode)
    if mode is Pooling.CLS:
        return token_embeddings[:, 0]
    mask = attention_mask[..., None].astype(token_embeddings.dtype)
    if mode is Pooling.MAX:
        lowest = np.finfo(token_embeddings.dtype).min
        return np.where(mask > 0, token_embeddings, lowest).max(axis=1)
    return (token_embeddings * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)


_ST_MODES = {"pooling_mode_cls_token": Pooling.CLS, "pooling_mode_max_tokens": Pooling.MAX,
             "pooling_mode_mean_tokens": Pooling.MEAN}
_ST_UNSUPPORTED = {"pooling_mode_mean_sqrt_len_tokens": "mean-sqrt-len", "pooling_mode_weightedmean_tokens":
                   "weighted-mean", "pooling_mode_lasttoken": "last-token"}


def pooling_from_st_config(config: dict, source: str = "1_Pooling/config.json") -> Pooling:
    """Read the mode from a sentence-transformers ``1_Pooling/config.json`` (``source`` names it in errors).

    A mode semsearch does not implement, or several modes at once (sentence-transformers concatenates
    them), is an :class:`~semsearch.errors.UnsupportedModel`: other vectors than the model's are never given.
    """
    if not isinstance(config, dict):
        raise UnsupportedModel(f"{source}: expected a JSON object, got {type(config).__name__}")
    unsupported = [name for key, name in _ST_UNSUPPORTED.items() if config.get(key)]
    modes = [mode for key, mode in _ST_MODES.items() if config.get(key)]
    if unsupported:
        raise UnsupportedModel(f"{source}: {' + '.join(unsupported)} pooling is not supported "
                               "(semsearch pools with mean, max or cls; --pooling overrides the folder's)")
    if len(modes) > 1:
        raise UnsupportedModel(f"{source}: {' + '.join(m.value for m in modes)} pooling (concatenated) is not "
                               "supported; semsearch pools with one of mean, max or cls")
    if modes:
        return modes[0]
    if "pooling_mode_mean_tokens" not in config:
        return Pooling.MEAN  # nothing declared: sentence-transformers' default
    raise UnsupportedModel(f"{source}: no pooling mode is switched on")
