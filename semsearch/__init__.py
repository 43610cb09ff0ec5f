"""semsearch: semantic search, near-duplicate mining and training with Sentence-BERT.

The package imports nothing heavy: torch, transformers and faiss load when first needed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "Encoder": "encoder", "EncoderSpec": "encoder", "DEFAULT_MODEL": "encoder",
    "Pooling": "pooling",
    "Index": "index", "IndexWriter": "index", "Hit": "index", "AddReport": "index", "compact": "index",
    "Record": "corpus", "read_records": "corpus",
    "index_corpus": "api", "search": "api",
    "evaluate_sts": "evaluation", "StsResult": "evaluation",
    "evaluate_pairs": "evaluation", "evaluate_triplets": "evaluation", "evaluate_nli": "evaluation",
    "evaluate_retrieval": "retrieval", "RetrievalResult": "retrieval", "RetrievalMetrics": "metrics",
    "train_model": "training.trainer", "TrainConfig": "training.trainer", "TrainReport": "training.trainer",
    "save_model": "training.save", "Objective": "training.losses",
    "SemsearchError": "errors", "InputError": "errors", "ModelError": "errors",
    "IndexNotFoundError": "errors", "IndexFormatError": "errors", "IndexDamaged": "errors", "WriterBusy": "errors",
    "InvalidArgument": "errors", "UnsupportedModel": "errors", "InferenceOnly": "errors",
    "mine_pairs": "mining", "plan_keep": "mining", "find_clusters": "mining", "Pairs": "mining",
    "KeepPlan": "mining", "Keep": "mining", "DEFAULT_THRESHOLD": "mining",
    "dedupe": "dedupe", "DedupeResult": "dedupe",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'semsearch' has no attribute {name!r}")


if TYPE_CHECKING:  # every name of _EXPORTS, for type checkers and IDEs (a test keeps the two in step)
    from .api import index_corpus, search
    from .corpus import Record, read_records
    from .dedupe import DedupeResult, dedupe
    from .encoder import DEFAULT_MODEL, Encoder, EncoderSpec
    from .errors import (IndexDamaged, IndexFormatError, IndexNotFoundError, InferenceOnly, InputError,
                         InvalidArgument, ModelError, SemsearchError, UnsupportedModel, WriterBusy)
    from .evaluation import StsResult, evaluate_nli, evaluate_pairs, evaluate_sts, evaluate_triplets
    from .index import AddReport, Hit, Index, IndexWriter, compact
    from .metrics import RetrievalMetrics
    from .mining import DEFAULT_THRESHOLD, Keep, KeepPlan, Pairs, find_clusters, mine_pairs, plan_keep
    from .pooling import Pooling
    from .retrieval import RetrievalResult, evaluate_retrieval
    from .training.losses import Objective
    from .training.save import save_model
    from .training.trainer import TrainConfig, TrainReport, train_model
