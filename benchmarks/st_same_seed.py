"""Our trainer and sentence-transformers' trainer, same seed, real model: the same weights, and their speed.

tests/test_training_reference.py shows on a tiny random BERT that a seeded ``semsearch train`` run of the
regression objective is sentence-transformers' ``SentenceTransformerTrainer`` run with that seed: the same
batch order, dropout masks and AdamW kernel, so identical weights. This checks it at full size, dropout on:
the bundled all-MiniLM-L6-v2, the first ``--pairs`` STSb training pairs, the paper's recipe (batch 16,
AdamW 2e-5, weight decay 0.01, 10% warm-up, clipping at 1). It prints how far apart the results are, next
to what another seed and a recipe without weight decay give, the STSb dev Spearman of each, and both
trainers' wall times for the same steps, and the same semsearch run with torch's single-tensor AdamW (what the
trainer used before the fused kernel) for the time and rounding that kernel accounts for.

Usage::

    python benchmarks/st_same_seed.py | tee benchmarks/results/training-same-seed.log
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch

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
    from sentence_transformers import __version__ as st_version

    from semsearch.encoder import Encoder, bundled_model_path
    from semsearch.evaluation import cosine_scores, read_sts, spearman
    from semsearch.training import TrainConfig, fit
    from semsearch.training.data import DataKind, read_dataset
    from semsearch.training import trainer
    from semsearch.training.losses import CosineSimilarityLoss
    from tests.st_reference import relative_gap, sentence_transformers_train

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    recipe = dict(batch_size=16, learning_rate=2e-5, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0)
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}  {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch thread(s), load {os.getloadavg()[0]:.2f}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, sentence-transformers {st_version}")
    print(f"# all-MiniLM-L6-v2, dropout on; first {args.pairs} STSb train pairs, {args.epochs} epochs, "
          f"seed {args.seed}; recipe {recipe}")
    dev_pairs = read_sts(DATA / "stsb-en-dev.csv")
    gold = np.array([p.score for p in dev_pairs])
    model_dir = bundled_model_path()

    scorer = Encoder.load(model_dir, device="cpu", backend="transformers")

    def dev_spearman(state: dict) -> float:
        scorer.model.load_state_dict(state)
        return 100 * spearman(cosine_scores(scorer, dev_pairs), gold)

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        full = read_dataset(DATA / "stsb-en-train.csv", DataKind.SCORED_PAIRS)
        data = replace(full, examples=full.examples[:args.pairs])

        encoder = Encoder.load(model_dir, device="cpu", backend="transformers")
        start = {k: v.clone() for k, v in encoder.model.state_dict().items()}
        report = fit(encoder, data, CosineSimilarityLoss(), scratch / "ours", progress=False,
                     config=TrainConfig(epochs=args.epochs, seed=args.seed, keep_best=False, **recipe))
        ours = {k: v.clone() for k, v in encoder.model.state_dict().items()}

        # The same run with torch's default single-tensor AdamW, which the trainer used before: what the fused
        # kernel changes, in weights (float rounding) and in time.
        encoder = Encoder.load(model_dir, device="cpu", backend="transformers")
        single = lambda groups, learning_rate, device: torch.optim.AdamW(groups, lr=learning_rate)  # noqa: E731
        with patch.object(trainer, "_adamw", single):
            single_report = fit(encoder, data, CosineSimilarityLoss(), scratch / "single", progress=False,
                                config=TrainConfig(epochs=args.epochs, seed=args.seed, keep_best=False, **recipe))
        unfused = {k: v.clone() for k, v in encoder.model.state_dict().items()}

        runs = {}
        for name, seed, overrides in ((f"seed {args.seed}", args.seed, {}),
                                      (f"seed {args.seed + 1}", args.seed + 1, {}),
                                      (f"seed {args.seed}, no weight decay", args.seed, {"weight_decay": 0.0})):
            started = time.perf_counter()
            state = sentence_transformers_train(model_dir, data, seed=seed, epochs=args.epochs,
                                                output=scratch / "st", **(recipe | overrides))
            runs[name] = (state, time.perf_counter() - started)

        print(f"\n{report.steps} steps. Gap: ‖ours − theirs‖ / ‖theirs − start‖ over all weights (0: identical).\n")
        print("| run | gap to ours | largest weight difference | STSb dev Spearman | wall time |")
        print("|---|---|---|---|---|")
        print(f"| semsearch, seed {args.seed} | – | – | {dev_spearman(ours):.2f} | {report.seconds:.0f} s |")
        print(f"| semsearch, seed {args.seed}, single-tensor AdamW | {relative_gap(ours, unfused, start):.1e} "
              f"| {max(float((ours[k] - unfused[k]).abs().max()) for k in ours):.1e} | {dev_spearman(unfused):.2f} "
              f"| {single_report.seconds:.0f} s |")
        for name, (state, seconds) in runs.items():
            largest = max(float((ours[k] - state[k]).abs().max()) for k in state)
            print(f"| sentence-transformers, {name} | {relative_gap(ours, state, start):.1e} | {largest:.1e} "
                  f"| {dev_spearman(state):.2f} | {seconds:.0f} s |")
        ratio = report.seconds / runs[f"seed {args.seed}"][1]
        print(f"\nbefore training: STSb dev Spearman {dev_spearman(start):.2f}. Wall time semsearch / "
              f"sentence-transformers, seed {args.seed}: {ratio:.2f} (semsearch's includes writing the model folder).")


if __name__ == "__main__":
    main()
