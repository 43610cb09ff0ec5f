"""The three SBERT training objectives, each computing its loss from sentence embeddings.

Running the encoder is the trainer's job; a loss sees only the embeddings of each column of a batch (the
same siamese weights made all of them) and the batch's labels. This keeps every objective testable on
hand-made vectors.
"""

from __future__ import annotations

from enum import Enum
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidArgument, choice
from .data import DataKind


class Objective(str, Enum):
    """The objectives of Reimers & Gurevych (2019), section 3."""

    CLASSIFICATION = "classification"  # softmax over W·[u; v; |u−v|], cross-entropy (NLI)
    REGRESSION = "regression"  # cosine(u, v) against the gold score in [0, 1], mean squared error (STS)
    TRIPLET = "triplet"  # max(‖a−p‖ − ‖a−n‖ + ε, 0)


DATA_KIND = {Objective.CLASSIFICATION: DataKind.LABELLED_PAIRS, Objective.REGRESSION: DataKind.SCORED_PAIRS,
             Objective.TRIPLET: DataKind.TRIPLETS}
# The paper trains 1 epoch on NLI and 4 on STSb; triplets (its Wikipedia sections) 1.
DEFAULT_EPOCHS = {Objective.CLASSIFICATION: 1, Objective.REGRESSION: 4, Objective.TRIPLET: 1}


class SoftmaxLoss(nn.Module):
    """Classification: ``softmax(W·[u; v; |u−v|])`` with cross-entropy over ``num_labels`` classes.

    ``W`` (``classifier``) is trained with the encoder but is not part of it: it is saved beside the model.
    As in the paper, ``u`` and ``v`` are the pooled embeddings before any L2 normalisation: on unit vectors
    the features are so small that the head, at the encoder's learning rate, barely learns.
    """

    normalize = False  # what the trainer feeds this loss (None: the encoder's own output)

    def __init__(self, dimension: int, num_labels: int, labels: Sequence[str] | None = None) -> None:
        super().__init__()
        self.dimension = dimension
        self.num_labels = num_labels
        self.labels = tuple(labels) if labels is not None else tuple(str(i) for i in range(num_labels))
        if len(self.labels) != num_labels:
            raise InvalidArgument(f"{len(self.labels)} label names for {num_labels} labels")
        self.classifier = nn.Linear(3 * dimension, num_labels)

    @staticmethod
    def features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``[u; v; |u−v|]``, the concatenation the paper found best."""
        return torch.cat([u, v, (u - v).abs()], dim=1)

    def logits(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(u, v))

    def forward(self, embeddings: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        u, v = embeddings
        return F.cross_entropy(self.logits(u, v), labels.long())


class CosineSimilarityLoss(nn.Module):
    """Regression: mean squared error between ``cos(u, v)`` and the gold score scaled to [0, 1]."""

    normalize = None  # cosine does not care

    def forward(self, embeddings: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        u, v = embeddings
        return F.mse_loss(F.cosine_similarity(u, v, dim=1), labels.to(u.dtype))


class TripletLoss(nn.Module):
    """Triplet: ``max(‖a−p‖ − ‖a−n‖ + margin, 0)`` with Euclidean distance, averaged over the batch.

    ``margin`` defaults to the paper's ε = 1 (sentence-transformers defaults to 5). As in the paper, the
    distances are between pooled embeddings before any L2 normalisation: on unit vectors (distances 0..2) a
    margin of 1 pushes every negative far away. Measured with all-MiniLM-L6-v2 on the SNLI triplets
    (benchmarks/results/training.md): test triplet accuracy 94.1 -> 95.5 and STSb 82.0 -> 81.3 this way,
    94.1 -> 92.2 and 82.0 -> 70.7 on unit vectors.
    """

    normalize = False

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: Sequence[torch.Tensor], labels: torch.Tensor | None = None) -> torch.Tensor:
        anchor, positive, negative = embeddings
        # pairwise_distance adds 1e-6 to the difference, so identical texts do not make the gradient NaN.
        gap = F.pairwise_distance(anchor, positive) - F.pairwise_distance(anchor, negative)
        return F.relu(gap + self.margin).mean()


def make_loss(objective: Objective | str, dimension: int, *, labels: Sequence[str] = (),
              margin: float = 1.0) -> nn.Module:
    """The loss of ``objective`` for embeddings of size ``dimension`` (``labels``: the class names)."""
    objective = choice(Objective, objective, "objective")
    if objective is Objective.CLASSIFICATION:
        return SoftmaxLoss(dimension, len(labels), labels)
    if objective is Objective.REGRESSION:
        return CosineSimilarityLoss()
    return TripletLoss(margin)
