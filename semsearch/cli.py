"""The ``semsearch`` command: a thin shell over :mod:`semsearch.api`.

Each command parses its options, calls one library function and renders the result. Library errors
(:class:`~semsearch.errors.SemsearchError`) become one-line messages with exit code 1, in one place.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import SemsearchError

POOLING_CHOICE = click.Choice(["mean", "max", "cls"])


class _Group(click.Group):
    """Turns library errors into ``Error: ...`` with exit code 1 (usage errors keep click's exit code 2)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SemsearchError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was written", err=True)
            ctx.exit(130)


def index_option(f):
    return click.option("--index", "-i", "index", default=None, metavar="NAME",
                        help="Index name under indexes/ (or $SEMSEARCH_INDEXES), or a path. [default: default]")(f)


def precision_option(f):
    return click.option("--precision", type=click.Choice(["fp32", "bf16"]), default=None,
                        help="Arithmetic of the encoder: fp32 (exact, the default) or bf16 (about 1.7x faster on "
                             "CPUs with native bfloat16, vectors within ~1e-3). An index keeps the one it was "
                             "built with.")(f)


def model_option(f):
    return click.option("--model", "-m", default=None, metavar="MODEL",
                        help="Model folder or hub id. [default: the bundled all-MiniLM-L6-v2]")(f)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="semsearch")
def main() -> None:
    """Semantic search and near-duplicate mining with Sentence-BERT."""


@main.command("index")
@click.argument("corpus", metavar="CORPUS")
@index_option
@model_option
@click.option("--pooling", type=POOLING_CHOICE, default=None, help="Override the model's pooling (new index only).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "tsv", "text"]), default=None,
              help="Input format. [default: from the suffix; stdin: jsonl if it starts with '{']")
@click.option("--text-field", default="text", show_default=True, help="Field holding the text (JSONL, CSV, TSV).")
@click.option("--id-field", default="id", show_default=True,
              help="Field holding the document id; without one, the id is a hash of the text.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--skip-invalid", is_flag=True, help="Pass over bad records (counted and reported) instead of stopping.")
@click.option("--index-type", default="auto", show_default=True, metavar="TYPE",
              help="New index only: auto (exact flat up to 200,000 documents), flat, hnsw, ivf, ivfpq, "
                   "or a FAISS factory string.")
@precision_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def index_cmd(corpus, index, model, pooling, fmt, text_field, id_field, batch_size, skip_invalid, index_type,
              precision, quiet) -> None:
    """Embed CORPUS (JSONL, CSV/TSV with a header, text lines, or - for stdin) into an index."""
    from .api import index_corpus
    from .index import index_path

    if precision == "bf16":
        from .encoder import bf16_is_fast, default_device

        if not bf16_is_fast(default_device()):
            click.echo("note: this machine has no native bfloat16 arithmetic; bf16 will be slower than fp32", err=True)
    with _bar(corpus, quiet) as bar:
        report = index_corpus(corpus, index, model=model, pooling=pooling, format=fmt, text_field=text_field,
                              id_field=id_field, batch_size=batch_size, skip_invalid=skip_invalid,
                              index_type=index_type, precision=precision, progress=bar.update)
    rate = report.embedded / report.seconds if report.seconds else 0.0
    click.echo(f"{index_path(index)}: {report.read} read, {report.added} added, {report.updated} updated, "
               f"{report.unchanged} unchanged"
               + (f", {report.repeated} repeated ids (last kept)" if report.repeated else "")
               + (f", {report.truncated} truncated to the model's max length" if report.truncated else "")
               + f" in {report.seconds:.1f} s ({rate:.0f} docs/s)", err=True)
    if report.skipped:
        click.echo(f"skipped {report.skipped} invalid records; first: " + "; ".join(report.skipped_examples), err=True)


def _bar(corpus: str, quiet: bool):
    from tqdm.auto import tqdm

    total = None
    if corpus != "-" and Path(corpus).is_file() and Path(corpus).stat().st_size < (1 << 30):
        with open(corpus, "rb") as fh:
            total = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return tqdm(total=total, unit="doc", desc="indexing", disable=quiet or not sys.stderr.isatty(),
                leave=False, file=sys.stderr)


@main.command("query")
@click.argument("text", required=False)
@index_option
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1), help="Results per query.")
@click.option("--threshold", "-t", type=click.FloatRange(-1, 1), default=None, help="Only hits with cosine >= this.")
@click.option("--queries", "queries_file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="File with one query per line, embedded in one batch.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: one object per hit.")
@click.option("--filter", "-f", "filters", multiple=True, metavar="KEY=VALUE",
              help="Only documents whose metadata matches (also !=, <, <=, >, >=); repeat to AND them.")
@click.option("--nprobe", type=click.IntRange(1), default=None,
              help="IVF indexes: lists to search (more: better recall, slower). [default: the manifest's]")
@click.option("--ef-search", type=click.IntRange(1), default=None,
              help="HNSW indexes: search beam width (more: better recall, slower). [default: the manifest's]")
@model_option
def query_cmd(text, index, k, threshold, queries_file, as_json, filters, nprobe, ef_search, model) -> None:
    """Find the documents nearest to TEXT (or to each line of --queries)."""
    from .api import read_queries, search

    if (text is None) == (queries_file is None):
        raise click.UsageError("give a query TEXT or --queries FILE (one of them)")
    queries = [text] if text is not None else read_queries(queries_file)
    results = search(queries, index, k=k, threshold=threshold, filters=list(filters), model=model, nprobe=nprobe,
                     ef_search=ef_search)
    for number, (query, hits) in enumerate(zip(queries, results)):
        if as_json:
            for hit in hits:
                click.echo(json.dumps({"query": query, **hit.to_dict()}, ensure_ascii=False))
            continue
        if len(queries) > 1:
            click.echo(("\n" if number else "") + f"query: {query}")
        _render_hits(hits)


def _render_hits(hits) -> None:
    if not hits:
        click.echo("(no results)")
        return
    width = max(len(h.id) for h in hits)
    columns = max(60, (os.get_terminal_size().columns if sys.stdout.isatty() else 120))
    click.echo(f"{'rank':>4}  {'score':>6}  {'id':<{width}}  text")
    for hit in hits:
        text = hit.text.replace("\n", " ")
        room = max(20, columns - width - 18)
        if len(text) > room:
            text = text[: room - 1] + "…"
        line = f"{hit.rank:>4}  {hit.score:6.4f}  {hit.id:<{width}}  {text}"
        if hit.meta:
            line += "  " + " ".join(f"{key}={value}" for key, value in hit.meta.items())
        click.echo(line)


@main.group("eval")
def eval_group() -> None:
    """Evaluate a model."""


@eval_group.command("sts")
@click.argument("file", type=click.Path(dir_okay=False))
@model_option
@click.option("--pooling", type=POOLING_CHOICE, default=None, help="Override the model's pooling.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@precision_option
def eval_sts_cmd(file, model, pooling, batch_size, precision) -> None:
    """Spearman and Pearson (x100) of cosine similarity vs gold scores (CSV: sentence1,sentence2,score)."""
    from .encoder import Encoder
    from .evaluation import evaluate_sts

    encoder = Encoder.load(model, pooling=pooling, backend="auto", precision=precision or "fp32")
    result = evaluate_sts(encoder, file, batch_size=batch_size)
    click.echo(f"{file}: Spearman {result.spearman:.2f}  Pearson {result.pearson:.2f}  "
               f"({result.pairs} pairs; {encoder.spec.model}, {encoder.spec.pooling.value} pooling"
               f"{', ' + encoder.spec.precision if encoder.spec.precision != 'fp32' else ''})")


@main.command("delete")
@index_option
@click.option("--id", "ids", multiple=True, metavar="ID", help="A document id to remove (repeatable).")
@click.option("--ids-from", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="File with one id per line.")
@click.option("--where", "filters", multiple=True, metavar="KEY=VALUE",
              help="Remove the documents whose metadata matches (as query --filter; repeat to AND them).")
def delete_cmd(index, ids, ids_from, filters) -> None:
    """Remove documents from an index; their space is reclaimed."""
    from .api import delete_documents, read_queries
    from .index import index_path

    ids = list(ids) + (read_queries(ids_from) if ids_from else [])
    if not ids and not filters:
        raise click.UsageError("name what to delete: --id, --ids-from or --where")
    removed = delete_documents(index, ids=ids, filters=list(filters))
    click.echo(f"{index_path(index)}: {removed} documents removed", err=True)


@main.command("info")
@index_option
@click.option("--json", "as_json", is_flag=True, help="The manifest and file sizes as JSON.")
def info_cmd(index, as_json) -> None:
    """What an index holds: model, counts, files and sizes, versions."""
    from .maintenance import info

    data = info(index)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    encoder = data["encoder"]
    click.echo(f"index      {data['path']} (format {data['format']}, generation {data['generation']})")
    click.echo(f"documents  {data['counts']['documents']:,}")
    click.echo(f"model      {encoder['model']} ({encoder['pooling']} pooling, {encoder['dimension']}-d, "
               f"max {encoder['max_length']} tokens, {encoder.get('precision', 'fp32')}, "
               f"{encoder['fingerprint'][:19]})")
    faiss_meta = data["faiss"]
    knobs = ", ".join(f"{k} {v}" for k, v in sorted(faiss_meta.get("search", {}).items()))
    click.echo(f"faiss      {faiss_meta.get('type', 'flat')}: {faiss_meta['factory']}"
               + (f" (search: {knobs})" if knobs else "")
               + (f", {faiss_meta['dead']:,} dead vectors awaiting rebuild" if faiss_meta.get("dead") else ""))
    for name, size in data["sizes"].items():
        click.echo(f"file       {name}: {size:,} bytes" if size is not None else f"file       {name}: missing")
    click.echo(f"updated    {data['updated']} (created {data['created']})")


@main.command("check")
@index_option
@click.option("--repair", is_flag=True, help="Rebuild the vectors from the stored texts when the check fails.")
def check_cmd(index, repair) -> None:
    """Verify an index: checksums, and one vector per document (exit 1 when damaged)."""
    from .maintenance import check
    from .maintenance import repair as repair_index

    report = check(index)
    if not report.ok and repair:
        for problem in report.problems:
            click.echo(f"{report.path}: {problem}", err=True)
        click.echo(f"{report.path}: rebuilding vectors from {report.documents:,} stored texts", err=True)
        report = repair_index(index)
    if report.ok:
        click.echo(f"{report.path}: ok ({report.documents:,} documents, {report.vectors:,} vectors)")
        return
    for problem in report.problems:
        click.echo(f"{report.path}: {problem}", err=True)
    raise click.ClickException(f"{report.path}: damaged; run: semsearch check --repair --index {report.path}")


@main.command("demo-corpus")
@click.argument("out", type=click.Path(dir_okay=False), default="indexes/stdlib.jsonl")
def demo_corpus_cmd(out) -> None:
    """Write the demo corpus (first sentences of the standard library's docstrings) as JSONL."""
    from .demo import write_demo_corpus

    count = write_demo_corpus(out)
    click.echo(f"{out}: {count} documents from the Python standard library's docstrings", err=True)


# ==========================================================================================================
# Training and the evaluation of trained models (issue 4): `train`, `eval nli|retrieval|pairs|triplets`.
# ==========================================================================================================
OBJECTIVE_CHOICE = click.Choice(["classification", "regression", "triplet"])
DATA_FORMAT_CHOICE = click.Choice(["csv", "tsv", "jsonl"])


def _three_columns(ctx, param, value):
    if value is not None and (len(value.split(",")) != 3 or not all(c.strip() for c in value.split(","))):
        raise click.BadParameter(f"expected three comma-separated names, got {value!r}")
    return value


def _score_range(ctx, param, value):
    if value[0] >= value[1]:
        raise click.BadParameter(f"MIN must be below MAX, got {value[0]:g} {value[1]:g}")
    return value


def columns_option(default_help: str):
    def decorate(f):
        return click.option("--columns", default=None, metavar="A,B,C", callback=_three_columns,
                            help=f"Column (or JSON field) names, comma-separated. [default: {default_help}]")(f)
    return decorate


def skip_invalid_option(f):
    return click.option("--skip-invalid", is_flag=True,
                        help="Skip bad rows and count them, instead of stopping at the first.")(f)


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
@click.option("--lr", "learning_rate", default=2e-5, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="AdamW learning rate.")
@click.option("--warmup", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Share of the steps with a linear learning-rate warm-up.")
@click.option("--weight-decay", default=0.01, show_default=True, type=click.FloatRange(min=0))
@click.option("--max-grad-norm", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Clip the gradient norm to this.")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--eval-steps", default=0, show_default=True, type=click.IntRange(0),
              help="Also evaluate on --dev every this many steps (0: at the end of each epoch only).")
@click.option("--keep-last", is_flag=True, help="Save the last weights, not the best on --dev.")
@click.option("--margin", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Triplet margin (Euclidean).")
@click.option("--score-range", nargs=2, type=float, default=(0.0, 5.0), show_default=True, metavar="MIN MAX",
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
    from .training import TrainConfig, train_model
    from .training.trainer import TrainingInterrupted

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


@eval_group.command("nli")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--model", "-m", required=True, metavar="DIR", help="A model trained with --objective classification.")
@columns_option("sentence1,sentence2,label")
@skip_invalid_option
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
def eval_nli_cmd(file, model, columns, skip_invalid, batch_size) -> None:
    """Accuracy of the softmax head saved beside --model on labelled pairs (e.g. NLI)."""
    from .evaluation import evaluate_nli

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
    from .retrieval import evaluate_retrieval

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
@click.option("--threshold", "-t", type=click.FloatRange(-1, 1), default=None,
              help="Also report precision, recall and F1 at this cosine threshold.")
@columns_option("label,sentence1,sentence2")
@skip_invalid_option
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
def eval_pairs_cmd(file, model, threshold, columns, skip_invalid, batch_size) -> None:
    """Best-F1 cosine threshold on duplicate pairs (label 0/1, sentence1, sentence2)."""
    from .encoder import Encoder
    from .evaluation import evaluate_pairs

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
    from .encoder import Encoder
    from .evaluation import evaluate_triplets

    encoder = Encoder.load(model)
    result = evaluate_triplets(encoder, file, columns=columns, skip_invalid=skip_invalid, batch_size=batch_size)
    click.echo(f"{file}: triplet accuracy {result.accuracy:.2f}  ({result.triplets} triplets"
               + (f", {result.skipped} skipped" if result.skipped else "") + f"; {encoder.spec.model})")


# --------------------------------------------------------------------------------------------------- dedupe
# `semsearch dedupe`: a thin shell over semsearch.dedupe.dedupe (issue 3).

DEDUPE_OUT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv")


@main.command("dedupe")
@click.argument("corpus", required=False, metavar="[CORPUS]")
@index_option
@model_option
@click.option("--threshold", "-t", type=click.FloatRange(-1, 1), default=None,
              help="Cosine at or above which two documents are near-duplicates. [default: 0.8, chosen on STSb]")
@click.option("--top-k", type=click.IntRange(1), default=None, help="Keep only each document's K best partners.")
@click.option("--clusters", is_flag=True, help="Show groups of duplicates (connected components), not pairs.")
@click.option("--keep", type=click.Choice(["first", "longest"]), default=None,
              help="Show a plan: one document kept per cluster (the first, or the longest text), the rest dropped.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Also write the rows to FILE: JSON lines (.jsonl) or CSV (.csv).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout: one object per row.")
@click.option("--approximate", is_flag=True,
              help="IVF range search instead of the exhaustive one; prints its recall on a sample.")
@click.option("--chunk-size", type=click.IntRange(1), default=None,
              help="Rows per block of the exhaustive search. [default: from free memory]")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "tsv", "text"]), default=None,
              help="CORPUS format. [default: from the suffix]")
@click.option("--text-field", default="text", show_default=True, help="Field holding the text (CORPUS).")
@click.option("--id-field", default="id", show_default=True, help="Field holding the document id (CORPUS).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def dedupe_cmd(corpus, index, model, threshold, top_k, clusters, keep, out, as_json, approximate, chunk_size,
               fmt, text_field, id_field, batch_size, quiet) -> None:
    """Find near-duplicate documents: every pair with cosine >= the threshold, grouped into clusters.

    Mines CORPUS (embedded first, same formats as `index`) or, without one, the stored vectors of
    --index (nothing is re-encoded).
    """
    from .dedupe import View, dedupe, result_rows, view_fields, write_rows
    from .mining import DEFAULT_THRESHOLD

    if corpus is not None and index is not None:
        raise click.UsageError("give a CORPUS file or --index NAME, not both")
    if corpus is None and model is not None:
        raise click.UsageError("--model applies to a CORPUS; an index is mined from its stored vectors")
    if out is not None and Path(out).suffix.lower() not in DEDUPE_OUT_SUFFIXES:
        raise click.BadParameter(f"{out}: use a .jsonl or .csv file", param_hint="--out")
    view = View.CLUSTERS if clusters else View.PLAN if keep else View.PAIRS
    result = dedupe(corpus, index, threshold=DEFAULT_THRESHOLD if threshold is None else threshold, top_k=top_k,
                    keep=keep or "first", mode="approximate" if approximate else "exact", model=model,
                    format=fmt, text_field=text_field, id_field=id_field, batch_size=batch_size,
                    chunk_size=chunk_size, progress=not quiet and sys.stderr.isatty())
    rows = result_rows(result, view)
    if out is not None:
        write_rows(out, rows, view_fields(view, lines=corpus is not None))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
    elif view is View.PAIRS:
        _render_pairs(result)
    elif view is View.CLUSTERS:
        _render_clusters(result)
    else:
        _render_plan(rows)
    _dedupe_summary(result, out, len(rows))


def _clip(text: str, room: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= room else text[: room - 1] + "…"


def _text_room(width: int) -> int:
    columns = max(60, os.get_terminal_size().columns if sys.stdout.isatty() else 120)
    return max(20, columns - width - 12)


def _render_pairs(result) -> None:
    if not result.pairs:
        click.echo(f"(no pairs with cosine >= {result.threshold:g})")
        return
    width = max(len(d.id) for p in result.pairs for d in (p.a, p.b))
    room = _text_room(width)
    for p in result.pairs:
        click.echo(f"{p.score:.4f}  {p.a.id:<{width}}  {_clip(p.a.text, room)}")
        click.echo(f"{'':6}  {p.b.id:<{width}}  {_clip(p.b.text, room)}")


def _render_clusters(result) -> None:
    if not result.clusters:
        click.echo(f"(no pairs with cosine >= {result.threshold:g})")
        return
    for c in result.clusters:
        docs = [c.representative] + [m.document for m in c.members]
        width = max(len(d.id) for d in docs)
        room = _text_room(width + 6)
        if c.number > 1:
            click.echo()
        click.echo(f"cluster {c.number} ({c.size} documents)")
        click.echo(f"  keep  {1.0:.4f}  {c.representative.id:<{width}}  {_clip(c.representative.text, room)}")
        for m in c.members:
            via = "" if m.link.position == c.representative.position else f"  (via {m.link.id} {m.link_score:.4f})"
            click.echo(f"  drop  {m.score:.4f}  {m.document.id:<{width}}  {_clip(m.document.text, room)}{via}")


def _render_plan(rows) -> None:
    width = max((len(row["id"]) for row in rows), default=0)
    for row in rows:
        if row["action"] == "drop":
            click.echo(f"drop  {row['id']:<{width}}  duplicate of {row['duplicate_of']} ({row['score']:.4f})")
        else:
            click.echo(f"keep  {row['id']}")


def _dedupe_summary(result, out, rows: int) -> None:
    n = len(result.documents)
    seconds = f"{result.mine_seconds:.1f} s mining" + (
        f" + {result.encode_seconds:.1f} s embedding" if result.encode_seconds else "")
    click.echo(f"{result.source}: {n:,} documents, {len(result.pairs):,} pairs with cosine >= {result.threshold:g}"
               + (f" (top {result.top_k} per document)" if result.top_k else "")
               + f", {len(result.clusters):,} cluster{'' if len(result.clusters) == 1 else 's'}:"
               + f" keep {len(result.kept):,}, drop {len(result.dropped):,}"
               + f" ({seconds}; {result.search})", err=True)
    if result.recall is not None:
        r = result.recall
        click.echo(f"approximate recall: {r.value:.3f} against the exact search on {r.sample:,} sampled documents "
                   f"({r.found:,} of their {r.exact_pairs:,} pairs found)", err=True)
    if out is not None:
        click.echo(f"wrote {rows:,} rows to {out}", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
