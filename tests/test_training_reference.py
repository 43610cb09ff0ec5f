"""Our trainer against sentence-transformers' own trainer: the same recipe must take the same steps.

With dropout off and both trainers fed the same batch order, nothing random is left: the weights after
training must agree to float rounding. This is what makes a seed-to-seed comparison of the two on STSb
(benchmarks/results/training.md) a comparison of seeds and not of recipes.
"""

from __future__ import annotations

import math
from itertools import islice

import pytest

from .test_training import scored_csv

RECIPE = dict(batch_size=16, learning_rate=1e-3, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0)


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_dropout_model(tmp_path, tiny_model_dir):
    """The tiny BERT with every dropout at 0, so a training step depends only on the batch."""
    from transformers import AutoTokenizer, BertModel

    from .conftest import write_st_folder

    model = BertModel.from_pretrained(str(tiny_model_dir), hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    return write_st_folder(tmp_path / "no-dropout", model, tokenizer)


def sentence_transformers_train(model_dir, data, orders, output, **overrides):
    """Train with SentenceTransformerTrainer on ``data``, one epoch per order given; return its weights.

    ``overrides`` change the recipe (``RECIPE``); the batches are ``orders[epoch]`` cut into batch-size runs.
    """
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from sentence_transformers.losses import CosineSimilarityLoss

    recipe = RECIPE | overrides
    epochs = len(orders)

    class Replay(DefaultBatchSampler):  # the trainer calls set_epoch before each epoch
        def __iter__(self):
            order = orders[self.epoch]
            for start in range(0, len(order), self.batch_size):
                yield order[start:start + self.batch_size]

        def __len__(self):
            return math.ceil(len(orders[0]) / self.batch_size)

    model = SentenceTransformer(str(model_dir), device="cpu")
    train = Dataset.from_dict({"sentence1": [e.texts[0] for e in data.examples],
                               "sentence2": [e.texts[1] for e in data.examples],
                               "score": [e.label for e in data.examples]})
    total = len(Replay(train, recipe["batch_size"], False)) * epochs
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output), num_train_epochs=epochs, per_device_train_batch_size=recipe["batch_size"],
        learning_rate=recipe["learning_rate"], weight_decay=recipe["weight_decay"],
        warmup_steps=math.ceil(recipe["warmup_ratio"] * total), lr_scheduler_type="linear",
        max_grad_norm=recipe["max_grad_norm"], seed=0, save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=True, logging_strategy="no", batch_sampler=Replay)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=CosineSimilarityLoss(model)).train()
    return {k: v.detach().clone() for k, v in model[0].auto_model.state_dict().items()}


def relative_gap(ours, theirs, start):
    """‖ours − theirs‖ / ‖theirs − start‖ over all weights: 0 when identical, 1 when as far apart as training moved."""
    gap = sum(float((ours[k] - theirs[k]).double().norm() ** 2) for k in theirs)
    moved = sum(float((theirs[k] - start[k]).double().norm() ** 2) for k in theirs)
    return math.sqrt(gap / moved)


def test_regression_recipe_matches_sentence_transformers_trainer(tmp_path, no_dropout_model):
    from transformers import BertModel

    from semsearch.encoder import Encoder
    from semsearch.training import TrainConfig, fit
    from semsearch.training.data import DataKind, read_dataset
    from semsearch.training.losses import CosineSimilarityLoss
    from semsearch.training.trainer import epoch_orders

    epochs, seed = 2, 5  # two epochs: the second has a new order and the learning rate decaying
    data = read_dataset(scored_csv(tmp_path / "sts.csv", rows=40), DataKind.SCORED_PAIRS)  # batches 16, 16, 8
    encoder = Encoder.load(no_dropout_model, device="cpu")
    fit(encoder, data, CosineSimilarityLoss(), tmp_path / "ours", progress=False,
        config=TrainConfig(epochs=epochs, seed=seed, keep_best=False, **RECIPE))
    ours = encoder.model.state_dict()
    orders = list(islice(epoch_orders(len(data), seed), epochs))
    start = BertModel.from_pretrained(str(no_dropout_model)).state_dict()

    same = relative_gap(ours, sentence_transformers_train(no_dropout_model, data, orders, tmp_path / "st"), start)
    # What a recipe difference looks like at this scale: no weight decay, or another seed's batches.
    no_decay = relative_gap(ours, sentence_transformers_train(no_dropout_model, data, orders, tmp_path / "st-wd0",
                                                              weight_decay=0.0), start)
    reordered = relative_gap(ours, sentence_transformers_train(
        no_dropout_model, data, list(islice(epoch_orders(len(data), seed + 1), epochs)), tmp_path / "st-order"), start)
    assert same < 1e-5, same  # float rounding (measured 4e-7)
    assert no_decay > 1e-4, no_decay  # measured 2e-3
    assert reordered > 1e-2, reordered  # measured 0.19
