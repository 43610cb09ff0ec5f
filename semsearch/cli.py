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
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def index_cmd(corpus, index, model, pooling, fmt, text_field, id_field, batch_size, quiet) -> None:
    """Embed CORPUS (JSONL, CSV/TSV with a header, text lines, or - for stdin) into an index."""
    from .api import index_corpus
    from .index import index_path

    with _bar(corpus, quiet) as bar:
        report = index_corpus(corpus, index, model=model, pooling=pooling, format=fmt, text_field=text_field,
                              id_field=id_field, batch_size=batch_size, progress=bar.update)
    rate = report.embedded / report.seconds if report.seconds else 0.0
    click.echo(f"{index_path(index)}: {report.read} read, {report.added} added, {report.updated} updated, "
               f"{report.unchanged} unchanged"
               + (f", {report.repeated} repeated ids (last kept)" if report.repeated else "")
               + f" in {report.seconds:.1f} s ({rate:.0f} docs/s)", err=True)


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
@model_option
def query_cmd(text, index, k, threshold, queries_file, as_json, model) -> None:
    """Find the documents nearest to TEXT (or to each line of --queries)."""
    from .api import read_queries, search

    if (text is None) == (queries_file is None):
        raise click.UsageError("give a query TEXT or --queries FILE (one of them)")
    queries = [text] if text is not None else read_queries(queries_file)
    results = search(queries, index, k=k, threshold=threshold, model=model)
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
def eval_sts_cmd(file, model, pooling, batch_size) -> None:
    """Spearman and Pearson (x100) of cosine similarity vs gold scores (CSV: sentence1,sentence2,score)."""
    from .encoder import Encoder
    from .evaluation import evaluate_sts

    encoder = Encoder.load(model, pooling=pooling)
    result = evaluate_sts(encoder, file, batch_size=batch_size)
    click.echo(f"{file}: Spearman {result.spearman:.2f}  Pearson {result.pearson:.2f}  "
               f"({result.pairs} pairs; {encoder.spec.model}, {encoder.spec.pooling.value} pooling)")


@main.command("demo-corpus")
@click.argument("out", type=click.Path(dir_okay=False), default="indexes/stdlib.jsonl")
def demo_corpus_cmd(out) -> None:
    """Write the demo corpus (first sentences of the standard library's docstrings) as JSONL."""
    from .demo import write_demo_corpus

    count = write_demo_corpus(out)
    click.echo(f"{out}: {count} documents from the Python standard library's docstrings", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
