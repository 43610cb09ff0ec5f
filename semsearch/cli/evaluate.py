"""The ``eval`` group: ``sts``, ``nli``, ``retrieval``, ``pairs`` and ``triplets``."""

from __future__ import annotations

import click

from . import main
from ._options import COSINE, POOLING_CHOICE, columns_option, model_option, precision_option, skip_invalid_option


@main.group("eval")
def eval_group() -> None:
    """Evaluate a model."""


@eval_group.command("sts")
@click.argument("file", type=click.Path(dir_okay=False))
@model_option
@click.option("--pooling", type=POOLING_CHOICE, default=None, help="Override the model's pooling.")
@columns_option("sentence1,sentence2,score")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@precision_option
def eval_sts_cmd(file, model, pooling, columns, batch_size, precision) -> None:
    """Spearman and Pearson (x100) of cosine similarity vs gold scores (sentence1,sentence2,score; a header
    row may name them in any order, as for train)."""
    from ..encoder import Encoder
    from ..evaluation import evaluate_sts

    encoder = Encoder.load(model, pooling=pooling, backend="auto", precision=precision or "fp32")
    result = evaluate_sts(encoder, file, batch_size=batch_size, columns=columns)
    click.echo(f"{file}: Spearman {result.spearman:.2f}  Pearson {result.pearson:.2f}  "
               f"({result.pairs} pairs; {encoder.spec.model}, {encoder.spec.pooling.value} pooling"
               f"{', ' + encoder.spec.precision if encoder.spec.precision != 'fp32' else ''})")


@eval_group.command("nli")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--model", "-m", required=True, metavar="DIR", help="A model trained with --objective classification.")
@columns_option("sentence1,sentence2,label")
@skip_invalid_option
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
def eval_nli_cmd(file, model, columns, skip_invalid, batch_size) -> None:
    """Accuracy of the softmax head saved beside --model on labelled pairs (e.g. NLI)."""
    from ..evaluation import evaluate_nli

    result = evaluate_nli(model, file, columns=columns, skip_invalid=skip_invalid, batch_size=batch_size)
    click.echo(f"{file}: accuracy {result.accuracy:.2f}  (majority class {result.majority:.2f}; {result.pairs} pairs"
               + (f", {result.skipped} skipped" if result.skipped else "") + ")")
    width = max(9, *(len(name) for name in result.labels))
    click.echo("gold \\ predicted".ljust(width + 2) + "".join(f"{name:>{width}}" for name in result.labels))
    for name, row in zip(result.labels, result.confusion):
        click.echo(f"{name:<{width + 2}}" + "".join(f"{count:>{width}}" for count in row))


@eval_group.command("retrieval")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--index", "-i", "index", default=None, metavar="NAME",
              help="Rank with this existing index (built from corpus.jsonl with --id-field _id).")
@model_option
@click.option("--split", default="test", show_default=True, help="Which qrels/SPLIT.tsv to use.")
@click.option("--depth", default=1000, show_default=True, type=click.IntRange(100),
              help="Results per query (MAP is over these).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
def eval_retrieval_cmd(folder, index, model, split, depth, batch_size) -> None:
    """nDCG@10, MRR@10, recall@1/10/100 and MAP (x100) on a BEIR-layout FOLDER."""
    from ..retrieval import evaluate_retrieval

    if index is not None and model is not None:
        raise click.UsageError("give --index or --model, not both (an index ranks with its own model)")
    result = evaluate_retrieval(folder, index=index, model=model, split=split, depth=depth, batch_size=batch_size)
    m = result.metrics
    click.echo(f"{folder}: {m.queries} queries, {result.documents} documents; ranked by {result.ranked_by}"
               + (f"; {m.skipped} judged queries without a relevant document left out" if m.skipped else ""))
    click.echo(f"nDCG@10 {100 * m.ndcg_at_10:.2f}  MRR@10 {100 * m.mrr_at_10:.2f}  "
               + "  ".join(f"R@{k} {100 * v:.2f}" for k, v in m.recall.items()) + f"  MAP@{m.depth} {100 * m.map:.2f}")


@eval_group.command("pairs")
@click.argument("file", type=click.Path(dir_okay=False))
@model_option
@click.option("--threshold", "-t", type=COSINE, default=None,
              help="Also report precision, recall and F1 at this cosine threshold.")
@columns_option("label,sentence1,sentence2")
@skip_invalid_option
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
def eval_pairs_cmd(file, model, threshold, columns, skip_invalid, batch_size) -> None:
    """Best-F1 cosine threshold on duplicate pairs (label 0/1, sentence1, sentence2)."""
    from ..encoder import Encoder
    from ..evaluation import evaluate_pairs

    encoder = Encoder.load(model)
    result = evaluate_pairs(encoder, file, threshold=threshold, columns=columns, skip_invalid=skip_invalid,
                            batch_size=batch_size)
    click.echo(f"{file}: {result.pairs} pairs, {result.duplicates} duplicates"
               + (f", {result.skipped} skipped" if result.skipped else "") + f"; {encoder.spec.model}")
    for name, r in (("best F1", result.best), ("given", result.at)):
        if r is not None:
            click.echo(f"{name + ':':<9} threshold {r.threshold:.4f}  precision {100 * r.precision:.2f}  "
                       f"recall {100 * r.recall:.2f}  F1 {100 * r.f1:.2f}  "
                       f"(TP {r.true_positives}, FP {r.false_positives}, FN {r.false_negatives})")


@eval_group.command("triplets")
@click.argument("file", type=click.Path(dir_okay=False))
@model_option
@columns_option("anchor,positive,negative")
@skip_invalid_option
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
def eval_triplets_cmd(file, model, columns, skip_invalid, batch_size) -> None:
    """Share of triplets with the anchor nearer the positive than the negative (Euclidean)."""
    from ..encoder import Encoder
    from ..evaluation import evaluate_triplets

    encoder = Encoder.load(model)
    result = evaluate_triplets(encoder, file, columns=columns, skip_invalid=skip_invalid, batch_size=batch_size)
    click.echo(f"{file}: triplet accuracy {result.accuracy:.2f}  ({result.triplets} triplets"
               + (f", {result.skipped} skipped" if result.skipped else "") + f"; {encoder.spec.model})")
