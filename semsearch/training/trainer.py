"""The fit loop: one siamese encoder, one objective, AdamW with linear warm-up, best-on-dev checkpoints.

Defaults are the paper's: batch 16, AdamW at 2e-5, linear warm-up over 10% of the steps then linear decay,
mean pooling (the model's own), gradient norm clipped at 1. Every column of a batch goes through the same
encoder weights. With an STS dev file the encoder is scored (Spearman x100) every ``eval_steps`` steps and
at the end of each epoch, and the best one is written to the output folder as soon as it is found.

A seeded regression run on a CPU is sentence-transformers' trainer's run with the same seed and recipe, weight
for weight: the same batches, dropout masks and AdamW kernel (tests/test_training_reference.py).
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..errors import InferenceOnly, SemsearchError, choice
from .data import Dataset, read_dataset
from .save import check_output, save_model

if TYPE_CHECKING:
    import torch

    from ..encoder import Encoder
    from ..evaluation import ScoredPair


@dataclass
class TrainConfig:
    """Training settings; ``epochs=None`` takes the objective's default (1 for NLI and triplets, 4 for STS)."""

    epochs: int | None = None
    batch_size: int = 16
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    eval_steps: int = 0  # evaluate on the dev file every this many steps (0: only at the end of each epoch)
    keep_best: bool = True  # keep the best dev checkpoint; False: the last one
    amp: bool | None = None  # mixed precision; None: on when training on CUDA

    def check(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise SemsearchError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise SemsearchError(f"batch size must be at least 1, got {self.batch_size}")
        if not 0 <= self.warmup_ratio <= 1:
            raise SemsearchError(f"warm-up ratio must be within 0..1, got {self.warmup_ratio}")
        if not 0 < self.learning_rate < math.inf:  # nan too
            raise SemsearchError(f"learning rate must be positive, got {self.learning_rate}")


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation on the dev file."""

    step: int
    epoch: float
    train_loss: float | None  # mean training loss since the previous evaluation
    dev_spearman: float  # x100


@dataclass
class TrainReport:
    """What a training run did and where the model went."""

    output: Path
    objective: str
    examples: int
    skipped: int
    steps: int
    epochs: int
    seconds: float
    final_loss: float | None
    initial: EvalPoint | None = None  # the dev score before training
    best: EvalPoint | None = None  # the checkpoint saved (None without a dev file: the last one)
    history: list[EvalPoint] = field(default_factory=list)
    device: str = "cpu"
    amp: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["output"] = str(self.output)
        return data


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``report.best`` says which checkpoint, if any, the output folder holds."""

    def __init__(self, report: TrainReport) -> None:
        super().__init__()
        self.report = report


def linear_warmup(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor at a step: 0 -> 1 over the warm-up, then linearly down to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    """The order of the examples in ``epoch`` (from 0): a permutation seeded with ``seed + epoch``.

    Each epoch's order can be recomputed on its own, and it is the order sentence-transformers' trainer
    (through accelerate's seedable sampler) uses for the same seed.
    """
    import torch

    return torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


def _dataloader_draw() -> None:
    """Take one number from torch's global generator, as each pass over a torch DataLoader does.

    Iterating a DataLoader draws its workers' base seed from the global generator, the one dropout uses.
    sentence-transformers' trainer does so as each epoch starts and at each evaluation (an empty eval
    loader); we draw at the same points, so a seeded run gets the same dropout masks as that trainer's run
    with the same seed, and the same weights (tests/test_training_reference.py).
    """
    import torch

    torch.empty((), dtype=torch.int64).random_()


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _parameter_groups(modules: Sequence["torch.nn.Module"], weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (as BERT and SBERT train)."""
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for name, parameter in module.named_parameters():
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            lowered = name.lower()
            (no_decay if "bias" in lowered or "layernorm" in lowered or "layer_norm" in lowered else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _adamw(groups: list[dict], learning_rate: float, device: "torch.device") -> "torch.optim.Optimizer":
    """AdamW, fused into one kernel where torch has one for the device.

    The default single-tensor AdamW on a CPU loops over the ~100 weight tensors in Python: 100 MiniLM steps
    took 55 s with it and 47 s fused (benchmarks/results/training-same-seed.log). The fused kernel computes the
    same update up to rounding, and sentence-transformers uses it too.
    """
    import torch

    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(groups, lr=learning_rate, fused=True)
        except (RuntimeError, ValueError):  # an older torch without the fused CPU kernel
            pass
    return torch.optim.AdamW(groups, lr=learning_rate)


def _state(module: "torch.nn.Module") -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _dev_score(encoder: "Encoder", pairs: "list[ScoredPair]") -> float:
    from ..evaluation import cosine_scores, spearman

    gold = np.array([p.score for p in pairs])
    return 100 * spearman(cosine_scores(encoder, pairs), gold)


def fit(encoder: "Encoder", dataset: Dataset, loss: "torch.nn.Module", output: str | os.PathLike, *,
        config: TrainConfig | None = None, dev: str | os.PathLike | None = None, objective: str = "",
        progress: bool | None = None, log: Callable[[str], None] | None = None,
        record: dict | None = None) -> TrainReport:
    """Train ``encoder`` (in place) and ``loss`` on ``dataset``; write the model folder to ``output``.

    With ``dev`` and ``config.keep_best``, the folder holds the checkpoint with the best dev Spearman and the
    encoder ends holding those weights too; otherwise the last weights. Either way the encoder ends as the
    saved model, its spec naming ``output``.
    """
    import torch
    from tqdm.auto import tqdm

    from ..encoder import model_fingerprint
    from ..evaluation import read_sts
    from .losses import SoftmaxLoss

    config = config or TrainConfig()
    config.check()
    if not isinstance(encoder.model, torch.nn.Module) or not hasattr(encoder.model, "save_pretrained"):
        raise InferenceOnly(f"{encoder.spec.model}: this encoder runs an inference-only backend; "
                             "load it with Encoder.load(..., backend='transformers') to train it")
    epochs = config.epochs or 1
    output = check_output(output)
    dev_pairs = read_sts(dev) if dev is not None else None
    seed_everything(config.seed)

    device = encoder.device
    amp = (device.type == "cuda") if config.amp is None else (config.amp and device.type == "cuda")
    loss.to(device)
    modules = [encoder.model, loss]
    parameters = [p for m in modules for p in m.parameters() if p.requires_grad]
    optimizer = _adamw(_parameter_groups(modules, config.weight_decay), config.learning_rate, device)
    steps_per_epoch = math.ceil(len(dataset) / config.batch_size)
    total_steps = steps_per_epoch * epochs
    warmup_steps = math.ceil(total_steps * config.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup(warmup_steps, total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    head = loss if isinstance(loss, SoftmaxLoss) else None
    wanted = getattr(loss, "normalize", None)
    view = encoder if wanted is None else encoder.with_options(normalize=wanted)  # same weights
    float_labels = dataset.examples[0].label is not None and isinstance(dataset.examples[0].label, float)

    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=total_steps, desc="training", unit="step", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    say = (lambda text: bar.write(text, file=sys.stderr)) if progress else (log or (lambda text: None))

    report = TrainReport(output=output, objective=objective, examples=len(dataset), skipped=dataset.skipped,
                         steps=0, epochs=epochs, seconds=0.0, final_loss=None, device=str(device), amp=amp)
    best_state: tuple[dict, dict] | None = None
    window: deque[float] = deque(maxlen=50)
    since_eval: list[float] = []
    started = time.perf_counter()

    def save(step: int) -> None:
        save_model(encoder, output, head=head, record={
            "objective": objective, "data": str(Path(dataset.path).resolve()), "examples": len(dataset),
            "dev": str(Path(dev).resolve()) if dev else None,
            "step": step, "total_steps": total_steps, "config": asdict(config) | {"epochs": epochs},
            "history": [asdict(p) for p in report.history], **(record or {}),
        })

    def evaluate(step: int) -> None:
        nonlocal best_state
        score = _dev_score(encoder, dev_pairs)
        point = EvalPoint(step, round(step / steps_per_epoch, 3),
                          float(np.mean(since_eval)) if since_eval else None, score)
        since_eval.clear()
        if step == 0:
            report.initial = point
            say(f"dev Spearman before training: {score:.2f}")
            return
        _dataloader_draw()  # sentence-transformers' evaluation loop opens an (empty) DataLoader here
        report.history.append(point)
        improved = report.best is None or score > report.best.dev_spearman
        note = ""
        if config.keep_best and improved:
            report.best = point
            best_state = (_state(encoder.model), _state(loss))
            save(step)
            note = " (best so far, saved)"
        say(f"step {step}/{total_steps} (epoch {point.epoch:g}): loss {point.train_loss or 0:.4f}, "
            f"dev Spearman {score:.2f}{note}")

    try:
        if dev_pairs is not None:
            evaluate(0)
        step = 0
        for epoch in range(epochs):
            _dataloader_draw()
            order = epoch_order(len(dataset), config.seed, epoch)
            for start in range(0, len(order), config.batch_size):
                batch = [dataset.examples[i] for i in order[start:start + config.batch_size]]
                encoder.model.train()
                loss.train()
                labels = None
                if batch[0].label is not None:
                    labels = torch.tensor([e.label for e in batch],
                                          dtype=torch.float32 if float_labels else torch.long, device=device)
                with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                    embeddings = [view.forward(view.tokenize([e.texts[c] for e in batch]))
                                  for c in range(len(batch[0].texts))]
                value = loss([e.float() for e in embeddings], labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(value).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                current = float(value.detach())
                if not math.isfinite(current) and not amp:
                    raise SemsearchError(f"the loss became {current} at step {step}; "
                                         "try a lower --lr (nothing better than the last saved checkpoint was kept)")
                window.append(current)
                since_eval.append(current)
                bar.set_postfix(loss=f"{np.mean(window):.4f}", epoch=epoch + 1, refresh=False)
                bar.update(1)
                if dev_pairs is not None and config.eval_steps and step % config.eval_steps == 0 \
                        and step % steps_per_epoch != 0:
                    evaluate(step)
            if dev_pairs is not None:
                evaluate(step)
        report.steps = step
        report.final_loss = float(np.mean(window)) if window else None
    except KeyboardInterrupt:
        raise TrainingInterrupted(report) from None
    finally:
        bar.close()
        encoder.model.eval()
        loss.eval()

    if config.keep_best and best_state is not None:
        encoder.model.load_state_dict(best_state[0])
        loss.load_state_dict(best_state[1])
    else:
        save(report.steps)
    # the encoder in memory now is the saved model: say so, so an index built with it names that folder
    encoder.spec = replace(encoder.spec, model=str(output.resolve()), fingerprint=model_fingerprint(output))
    report.seconds = time.perf_counter() - started
    return report


def train_model(data: str | os.PathLike, output: str | os.PathLike, *, objective: str,
                model: str | os.PathLike | None = None, dev: str | os.PathLike | None = None,
                config: TrainConfig | None = None, columns: str | Sequence[str] | None = None,
                format: str | None = None, skip_invalid: bool = False,
                score_range: tuple[float, float] = (0.0, 5.0), margin: float = 1.0, pooling: str | None = None,
                max_length: int | None = None, device: str | None = None, progress: bool | None = None,
                log: Callable[[str], None] | None = None, encoder: "Encoder | None" = None) -> TrainReport:
    """Read ``data``, load the encoder, train it with ``objective`` and save it to ``output``.

    >>> train_model("stsb-train.csv", "models/sts", objective="regression", dev="stsb-dev.csv")
    """
    from ..encoder import Encoder
    from .losses import DATA_KIND, DEFAULT_EPOCHS, Objective, make_loss

    objective = choice(Objective, objective, "objective")
    config = config or TrainConfig()
    if config.epochs is None:
        config = TrainConfig(**{**asdict(config), "epochs": DEFAULT_EPOCHS[objective]})
    config.check()
    check_output(output)
    dataset = read_dataset(data, DATA_KIND[objective], columns=columns, format=format,
                           skip_invalid=skip_invalid, score_range=score_range)
    if dev is not None:
        from ..evaluation import read_sts

        read_sts(dev)  # a bad dev file should fail before the model loads, not after an epoch
    if log is not None:
        from .data import describe

        log(describe(dataset))
    if encoder is None:
        encoder = Encoder.load(model, pooling=pooling, max_length=max_length, device=device)
    seed_everything(config.seed)  # the softmax head's initial weights too
    loss = make_loss(objective, encoder.dimension, labels=dataset.labels, margin=margin)
    extra = {"labels": list(dataset.labels)} if dataset.labels else {}
    if objective is Objective.TRIPLET:
        extra["margin"] = margin
    if objective is Objective.REGRESSION:
        extra["score_range"] = list(score_range)
    return fit(encoder, dataset, loss, output, config=config, dev=dev, objective=objective.value,
               progress=progress, log=log, record=extra)
