"""sentence-transformers' own trainer on a semsearch dataset: the reference our trainer is checked against.

Used by tests/test_training_reference.py and benchmarks/st_same_seed.py. Needs the test extra (datasets and
accelerate come with it).
"""

from __future__ import annotations

import math

RECIPE = dict(batch_size=16, learning_rate=1e-3, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0)


def sentence_transformers_train(model_dir, data, *, seed, epochs, output, dev=None, **overrides):
    """Train with ``SentenceTransformerTrainer`` on a semsearch ``Dataset`` of scored pairs; return its weights.

    ``overrides`` change the recipe (``RECIPE``); with ``dev`` (a list of ScoredPair) the dev set is scored
    after every epoch, as ``semsearch train --dev`` does.
    """
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.losses import CosineSimilarityLoss

    recipe = RECIPE | overrides
    model = SentenceTransformer(str(model_dir), device="cpu")
    train = Dataset.from_dict({"sentence1": [e.texts[0] for e in data.examples],
                               "sentence2": [e.texts[1] for e in data.examples],
                               "score": [e.label for e in data.examples]})
    total = math.ceil(len(train) / recipe["batch_size"]) * epochs
    evaluator = None
    if dev is not None:
        evaluator = EmbeddingSimilarityEvaluator([p.sentence1 for p in dev], [p.sentence2 for p in dev],
                                                 [p.score for p in dev], similarity_fn_names=["cosine"])
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output), num_train_epochs=epochs, per_device_train_batch_size=recipe["batch_size"],
        learning_rate=recipe["learning_rate"], weight_decay=recipe["weight_decay"],
        warmup_steps=math.ceil(recipe["warmup_ratio"] * total), lr_scheduler_type="linear",
        max_grad_norm=recipe["max_grad_norm"], seed=seed, eval_strategy="epoch" if dev else "no",
        save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, logging_strategy="no")
    SentenceTransformerTrainer(model=model, args=args, train_dataset=train, evaluator=evaluator,
                               loss=CosineSimilarityLoss(model)).train()
    return {k: v.detach().clone() for k, v in model[0].auto_model.state_dict().items()}


def relative_gap(ours, theirs, start):
    """‖ours − theirs‖ / ‖theirs − start‖ over all weights: 0 when identical, 1 when as far apart as training moved."""
    gap = sum(float((ours[k] - theirs[k]).double().norm() ** 2) for k in theirs)
    moved = sum(float((theirs[k] - start[k]).double().norm() ** 2) for k in theirs)
    return math.sqrt(gap / moved)
