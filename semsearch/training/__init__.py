"""Fine-tuning an encoder with the three SBERT objectives.

- :mod:`.data`: readers for labelled pairs, scored pairs, duplicate pairs and triplets (no torch);
- :mod:`.losses`: one small class per objective, computing the loss from embeddings;
- :mod:`.trainer`: the fit loop (AdamW, warm-up, clipping, best-on-dev checkpoints) and :func:`train_model`;
- :mod:`.save`: the model folder that semsearch and sentence-transformers both load.

>>> from semsearch.training import train_model
>>> report = train_model("stsb-en-train.csv", "models/sts", objective="regression", dev="stsb-en-dev.csv")

Names load lazily so that importing this package does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "DataKind": "data", "Dataset": "data", "Example": "data", "read_dataset": "data",
    "Objective": "losses", "SoftmaxLoss": "losses", "CosineSimilarityLoss": "losses", "TripletLoss": "losses",
    "make_loss": "losses",
    "TrainConfig": "trainer", "TrainReport": "trainer", "EvalPoint": "trainer", "fit": "trainer",
    "train_model": "trainer",
    "save_model": "save", "load_head": "save",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'semsearch.training' has no attribute {name!r}")


if TYPE_CHECKING:
    from .data import DataKind, Dataset, Example, read_dataset
    from .losses import CosineSimilarityLoss, Objective, SoftmaxLoss, TripletLoss, make_loss
    from .save import load_head, save_model
    from .trainer import EvalPoint, TrainConfig, TrainReport, fit, train_model
