"""``semsearch train``: fine-tune a model with one of the three SBERT objectives (issue 4)."""

from __future__ import annotations

import sys

import click

from . import main
from ._options import POOLING_CHOICE, Finite, columns_option, model_option, skip_invalid_option

OBJECTIVE_CHOICE = click.Choice(["classification", "regression", "triplet"])
DATA_FORMAT_CHOICE = click.Choice(["csv", "tsv", "jsonl"])


def _score_range(ctx, param, value):
    if value[0] >= value[1]:
        raise click.BadParameter(f"MIN must be below MAX, got {value[0]:g} {value[1]:g}")
    return value


@main.command("train")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--objective", "-o", type=OBJECTIVE_CHOICE, required=True,
              help="classification: labelled pairs (NLI); regression: scored pairs (STS); triplet: triplets.")
@click.option("--output", "-O", required=True, type=click.Path(file_okay=False),
              help="Model folder to write (replaced if it holds a model).")
@model_option
@click.option("--dev", type=click.Path(dir_okay=False), default=None,
              help="STS dev file (sentence1,sentence2,score): evaluate on it and keep the best checkpoint.")
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="[default: 1 for classification and triplet, 4 for regression]")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option("--lr", "learning_rate", default=2e-5, show_default=True, type=Finite(min=0, min_open=True),
              help="AdamW learning rate.")
@click.option("--warmup", default=0.1, show_default=True, type=Finite(0, 1),
              help="Share of the steps with a linear learning-rate warm-up.")
@click.option("--weight-decay", default=0.01, show_default=True, type=Finite(min=0))
@click.option("--max-grad-norm", default=1.0, show_default=True, type=Finite(min=0, min_open=True),
              help="Clip the gradient norm to this.")
@click.option("--seed", default=42, show_default=True, type=int,
              help="Seeds the batch order, dropout and the softmax head; on a CPU the regression objective then "
                   "trains exactly as sentence-transformers' trainer with the same seed.")
@click.option("--eval-steps", default=0, show_default=True, type=click.IntRange(0),
              help="Also evaluate on --dev every this many steps (0: at the end of each epoch only).")
@click.option("--keep-last", is_flag=True, help="Save the last weights, not the best on --dev.")
@click.option("--margin", default=1.0, show_default=True, type=Finite(min=0),
              help="Triplet margin (Euclidean).")
@click.option("--score-range", nargs=2, type=Finite(), default=(0.0, 5.0), show_default=True, metavar="MIN MAX",
              callback=_score_range,
              help="Scale of the gold scores (regression); mapped onto 0..1.")
@columns_option("sentence1,sentence2,label | sentence1,sentence2,score | anchor,positive,negative")
@click.option("--format", "fmt", type=DATA_FORMAT_CHOICE, default=None, help="[default: from the suffix]")
@skip_invalid_option
@click.option("--pooling", type=POOLING_CHOICE, default=None, help="Override the model's pooling.")
@click.option("--max-length", type=click.IntRange(1), default=None, help="Truncate inputs to this many tokens.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [default: cuda when present]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train_cmd(data, objective, output, model, dev, epochs, batch_size, learning_rate, warmup, weight_decay,
              max_grad_norm, seed, eval_steps, keep_last, margin, score_range, columns, fmt, skip_invalid, pooling,
              max_length, device, quiet) -> None:
    """Fine-tune a model on DATA with one of the three SBERT objectives; write it to --output."""
    from ..training import TrainConfig, train_model
    from ..training.trainer import TrainingInterrupted

    config = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, warmup_ratio=warmup,
                         weight_decay=weight_decay, max_grad_norm=max_grad_norm, seed=seed, eval_steps=eval_steps,
                         keep_best=not keep_last)
    try:
        report = train_model(data, output, objective=objective, model=model, dev=dev, config=config,
                             columns=columns, format=fmt, skip_invalid=skip_invalid, score_range=tuple(score_range),
                             margin=margin, pooling=pooling, max_length=max_length, device=device,
                             progress=False if quiet else None, log=lambda text: click.echo(text, err=True))
    except TrainingInterrupted as stop:
        best = stop.report.best
        click.echo(f"interrupted: {output} holds the best checkpoint so far (step {best.step}, dev Spearman "
                   f"{best.dev_spearman:.2f})" if best else "interrupted: nothing was written", err=True)
        sys.exit(130)
    line = (f"{report.output}: {report.objective}, {report.examples} examples, {report.epochs} epochs, "
            f"{report.steps} steps in {report.seconds:.0f} s on {report.device}"
            + (" (mixed precision)" if report.amp else ""))
    if report.final_loss is not None:
        line += f"; final loss {report.final_loss:.4f}"
    click.echo(line)
    if report.best is not None:
        start = f"{report.initial.dev_spearman:.2f} -> " if report.initial else ""
        click.echo(f"dev Spearman {start}{report.best.dev_spearman:.2f} (best, step {report.best.step}, "
                   f"epoch {report.best.epoch:g}; saved)")
    elif report.history:
        click.echo(f"dev Spearman {report.history[-1].dev_spearman:.2f} (last; saved)")
