"""The reference for issue 4's Must show 1: sentence-transformers' own trainer on the same STSb recipe.

Same model (the bundled all-MiniLM-L6-v2), same data, same recipe as ``benchmarks/training.sh stsb``:
``CosineSimilarityLoss`` (MSE between the cosine and the gold score / 5), batch 16, AdamW at 2e-5 with
weight decay 0.01 (none on biases and LayerNorm), linear warm-up over 10% of the steps then linear decay,
gradient norm clipped at 1, 4 epochs, the STSb dev set scored after each epoch and the best epoch kept,
then scored on STSb test. It runs ``SentenceTransformerTrainer`` (what ``SentenceTransformer.fit`` calls
since v3) with the seed given, so several seeds of both tools can be compared.

Needs the ``test`` extra (which brings datasets and accelerate, imported by the sentence-transformers
trainer). One torch thread unless OMP_NUM_THREADS says otherwise.

Usage::

    python benchmarks/st_training.py --seed 42 | tee benchmarks/results/training-st-reference-seed42.log
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "stsb"


def read(split: str) -> tuple[list[str], list[str], list[float]]:
    with (DATA / f"stsb-en-{split}.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return [r[0] for r in rows], [r[1] for r in rows], [float(r[2]) / 5.0 for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N pairs only (a smoke test)")
    parser.add_argument("--output", type=Path, default=None, help="where the best model goes [default: a temp folder]")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs the shared STSb files in {DATA} (absent in this clone)")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_DISABLED", "true")
    import torch
    import transformers
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers import __version__ as st_version
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.losses import CosineSimilarityLoss

    from semsearch.encoder import bundled_model_path

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}  {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch thread(s), load {os.getloadavg()[0]:.2f}")
    print(f"# sentence-transformers {st_version}, transformers {transformers.__version__}, torch {torch.__version__}; "
          f"seed {args.seed}")
    model = SentenceTransformer(str(bundled_model_path()), device="cpu")
    a, b, score = (column[:args.limit] for column in read("train"))
    train = Dataset.from_dict({"sentence1": a, "sentence2": b, "score": score})
    dev = EmbeddingSimilarityEvaluator(*read("dev"), name="sts-dev", similarity_fn_names=["cosine"])
    test = EmbeddingSimilarityEvaluator(*read("test"), name="sts-test", similarity_fn_names=["cosine"])
    print(f"dev Spearman before training: {100 * dev(model)['sts-dev_spearman_cosine']:.2f}")
    total_steps = math.ceil(len(train) / 16) * args.epochs
    with tempfile.TemporaryDirectory() as scratch:
        training_args = SentenceTransformerTrainingArguments(
            output_dir=scratch, num_train_epochs=args.epochs, per_device_train_batch_size=16,
            learning_rate=2e-5, weight_decay=0.01, warmup_steps=math.ceil(0.1 * total_steps),
            lr_scheduler_type="linear", max_grad_norm=1.0, seed=args.seed, eval_strategy="epoch", save_strategy="epoch",
            load_best_model_at_end=True, metric_for_best_model="eval_sts-dev_spearman_cosine",
            greater_is_better=True, save_total_limit=1, report_to="none", disable_tqdm=True, use_cpu=True,
            logging_strategy="no")
        trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=train,
                                             loss=CosineSimilarityLoss(model), evaluator=dev)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        for entry in trainer.state.log_history:
            if "eval_sts-dev_spearman_cosine" in entry:
                print(f"epoch {entry['epoch']:g}: dev Spearman {100 * entry['eval_sts-dev_spearman_cosine']:.2f}")
        best = 100 * trainer.state.best_metric
        print(f"trained {args.epochs} epochs in {seconds:.0f} s; best dev Spearman {best:.2f} (kept)")
        print(f"STSb test Spearman {100 * test(model)['sts-test_spearman_cosine']:.2f}")
        if args.output is not None:
            model.save(str(args.output))


if __name__ == "__main__":
    main()
