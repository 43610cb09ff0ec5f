"""Pooling: turn per-token embeddings into one sentence vector.

Pure functions of ``(token_embeddings, attention_mask)``; padding positions never change the result.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

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


def pooling_from_st_config(config: dict) -> Pooling:
    """Read the mode from a sentence-transformers ``1_Pooling/config.json``."""
    if config.get("pooling_mode_cls_token"):
        return Pooling.CLS
    if config.get("pooling_mode_max_tokens"):
        return Pooling.MAX
    if config.get("pooling_mode_mean_tokens", True):
        return Pooling.MEAN
    raise ValueError(f"unsupported pooling configuration: {config}")
