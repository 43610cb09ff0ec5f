"""Our trainer and sentence-transformers' trainer on the same batches: the real model, STSb pairs.

tests/test_training_reference.py shows on a tiny random BERT that the regression recipe takes the same
steps in both trainers. This does it at full size: the bundled all-MiniLM-L6-v2 with dropout off, the first
``--pairs`` STSb training pairs, the paper's recipe (batch 16, AdamW 2e-5, weight decay 0.01, 10% warm-up,
clipping at 1), the batch order of our trainer's seed replayed in ``SentenceTransformerTrainer``. It prints
how far apart the two results are, next to what a real recipe difference (no weight decay) and another
seed's batch order do, the STSb dev Spearman of each, and both trainers' wall times.

With dropout off and the same batches, any gap beyond float rounding is a difference in the recipe; with
both on, what is left between the two trainers on one seed is the batch order and the dropout masks.

Usage::

    python benchmarks/st_replay.py | tee benchmarks/results/training-replay.log
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "stsb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=800, help="STSb training pairs used [800: 50 steps an epoch]")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs the shared STSb files in {DATA} (absent in this clone)")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    from semsearch.encoder import Encoder, bundled_model_path
    from semsearch.evaluation import cosine_scores, read_sts, spearman
    from semsearch.training import TrainConfig, fit
    from semsearch.training.data import DataKind, read_dataset
    from semsearch.training.losses import CosineSimilarityLoss
    from semsearch.training.trainer import epoch_orders
    from tests.test_training_reference import relative_gap, sentence_transformers_train

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    recipe = dict(batch_size=16, learning_rate=2e-5, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0)
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}  {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch thread(s), load {os.getloadavg()[0]:.2f}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"# all-MiniLM-L6-v2 without dropout; first {args.pairs} STSb train pairs, {args.epochs} epochs, "
          f"seed {args.seed}; recipe {recipe}")
    dev_pairs = read_sts(DATA / "stsb-en-dev.csv")
    gold = np.array([p.score for p in dev_pairs])

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = SentenceTransformer(str(bundled_model_path()), device="cpu",
                                    config_kwargs={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
        model.save(str(scratch / "model"))
        start = {k: v.clone() for k, v in model[0].auto_model.state_dict().items()}
        with (DATA / "stsb-en-train.csv").open(newline="", encoding="utf-8") as fh:
            rows = list(islice(csv.reader(fh), args.pairs))
        with (scratch / "train.csv").open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)
        data = read_dataset(scratch / "train.csv", DataKind.SCORED_PAIRS)

        def dev_spearman(state: dict) -> float:
            encoder = Encoder.load(scratch / "model", device="cpu", backend="transformers")
            encoder.model.load_state_dict(state)
            return 100 * spearman(cosine_scores(encoder, dev_pairs), gold)

        encoder = Encoder.load(scratch / "model", device="cpu", backend="transformers")
        started = time.perf_counter()
        fit(encoder, data, CosineSimilarityLoss(), scratch / "ours", progress=False,
            config=TrainConfig(epochs=args.epochs, seed=args.seed, keep_best=False, **recipe))
        ours_s = time.perf_counter() - started
        ours = {k: v.clone() for k, v in encoder.model.state_dict().items()}

        orders = list(islice(epoch_orders(len(data), args.seed), args.epochs))
        others = list(islice(epoch_orders(len(data), args.seed + 1), args.epochs))
        runs = {}
        for name, run_orders, overrides in (("same batches", orders, {}),
                                            ("same batches, no weight decay", orders, {"weight_decay": 0.0}),
                                            (f"batches of seed {args.seed + 1}", others, {})):
            started = time.perf_counter()
            state = sentence_transformers_train(scratch / "model", data, run_orders, scratch / "st", **(recipe | overrides))
            runs[name] = (state, time.perf_counter() - started)

        steps = args.epochs * -(-len(data) // recipe["batch_size"])
        print(f"\n{steps} steps. Gap: ‖ours − theirs‖ / ‖theirs − start‖ over all weights (0: identical).\n")
        print("| sentence-transformers run | gap to ours | largest weight difference | STSb dev Spearman | wall time |")
        print("|---|---|---|---|---|")
        print(f"| (ours) | – | – | {dev_spearman(ours):.2f} | {ours_s:.0f} s |")
        for name, (state, seconds) in runs.items():
            largest = max(float((ours[k] - state[k]).abs().max()) for k in state)
            print(f"| {name} | {relative_gap(ours, state, start):.1e} | {largest:.1e} | {dev_spearman(state):.2f} "
                  f"| {seconds:.0f} s |")
        print(f"\nbefore training: STSb dev Spearman {dev_spearman(start):.2f}; "
              f"wall time ours / sentence-transformers (same batches): {ours_s / runs['same batches'][1]:.2f}")


if __name__ == "__main__":
    main()
