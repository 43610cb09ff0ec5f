"""Pooling: turn per-token embeddings into one sentence vector.

Pure functions of ``(token_embeddings, attention_mask)``; padding positions never change the result. Each mode
exists twice, once over torch tensors (training, the torch backends) and once over numpy arrays (the onnxruntime
backend, which must not import torch); a test holds the two equal.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

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
    return POOLERS[Pooling(mode)](token_embeddings, attention_mask)


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


def normalize_numpy(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 length, as ``torch.nn.functional.normalize`` (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, eps)


def pooling_from_st_config(config: dict) -> Pooling:
    """Read the mode from a sentence-transformers ``1_Pooling/config.json``."""
    if config.get("pooling_mode_cls_token"):
        return Pooling.CLS
    if config.get("pooling_mode_max_tokens"):
        return Pooling.MAX
    if config.get("pooling_mode_mean_tokens", True):
        return Pooling.MEAN
    raise ValueError(f"unsupported pooling configuration: {config}")
