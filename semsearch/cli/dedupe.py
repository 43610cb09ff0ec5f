"""``semsearch dedupe``: a thin shell over semsearch.dedupe.dedupe (issue 3)."""

from __future__ import annotations

import sys

import click

from . import main
from ._options import COSINE, backend_option, index_option, model_option
from .render import clip, json_line, one_line, text_room


@main.command("dedupe")
@click.argument("corpus", required=False, metavar="[CORPUS]")
@index_option
@model_option
@click.option("--threshold", "-t", type=COSINE, default=None,
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
@click.option("--partitioned", is_flag=True,
              help="Exact search within k-means cells, documents near a border joining the next cells too: "
                   "far less work than all pairs on large inputs; prints its recall on a sample.")
@click.option("--partitions", type=click.IntRange(1), default=None, metavar="C",
              help="--partitioned: k-means cells. [default: from the number of documents]")
@click.option("--spill", type=click.IntRange(1), default=None, metavar="S",
              help="--partitioned: most cells one document joins. [default: 3]")
@click.option("--embeddings", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Precomputed vectors, no model: a .npy matrix or Parquet with 'id' and 'embedding' columns. "
                   "Alone, its rows are the documents; with CORPUS, row i (Parquet: the row with the record's id) "
                   "is that record's vector.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: embed CORPUS on Ray actors and mine as Ray tasks (pip install 'semsearch[ray]'); "
                   "the output is the same.")
@click.option("--address", default=None, metavar="ADDR",
              help="--engine ray: the cluster to join. [default: $RAY_ADDRESS, else a local one]")
@click.option("--workers", type=click.IntRange(1), default=None, metavar="N",
              help="--engine ray: encoding actors, each loading the model once. [default: one per 2 CPUs]")
@click.option("--gpus-per-worker", type=click.FloatRange(0), default=0, metavar="G",
              help="--engine ray: GPUs each encoding actor takes (1: one GPU each). [default: 0, CPU]")
@click.option("--chunk-size", type=click.IntRange(1), default=None,
              help="Rows per block of the exhaustive search. [default: from free memory]")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "tsv", "text"]), default=None,
              help="CORPUS format. [default: from the suffix]")
@click.option("--text-field", default="text", show_default=True, help="Field holding the text (CORPUS).")
@click.option("--id-field", default="id", show_default=True, help="Field holding the document id (CORPUS).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--passages", is_flag=True,
              help="--index: compare passages (ids ID#N), not documents (by default a document of several passages "
                   "scores as its most similar passage).")
@backend_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def dedupe_cmd(corpus, index, model, threshold, top_k, clusters, keep, out, as_json, approximate, partitioned,
               partitions, spill, embeddings, engine, address, workers, gpus_per_worker, chunk_size, fmt,
               text_field, id_field, batch_size, passages, quiet) -> None:
    """Find near-duplicate documents: every pair with cosine >= the threshold, grouped into clusters.

    Mines CORPUS (embedded first, same formats as `index`), the vectors of --embeddings FILE, or, without
    either, the stored vectors of --index (nothing is re-encoded).
    """
    from ..dedupe import View, dedupe, out_format, result_rows, view_fields, write_rows
    from ..errors import InputError
    from ..mining import DEFAULT_THRESHOLD

    if corpus is not None and index is not None:
        raise click.UsageError("give a CORPUS file or --index NAME, not both")
    if corpus is None and model is not None:
        raise click.UsageError("--model applies to a CORPUS; an index is mined from its stored vectors")
    if corpus is not None and passages:
        raise click.UsageError("--passages applies to an --index (its stored passages); a CORPUS is mined whole")
    if embeddings is not None and index is not None:
        raise click.UsageError("--embeddings gives the vectors; drop --index (or --embeddings)")
    if embeddings is not None and model is not None:
        raise click.UsageError("--embeddings gives the vectors, so no model is used; drop --model")
    if approximate and partitioned:
        raise click.UsageError("choose --approximate or --partitioned, not both")
    if not partitioned and (partitions is not None or spill is not None):
        raise click.UsageError("--partitions and --spill apply with --partitioned")
    if engine != "ray" and (address is not None or workers is not None or gpus_per_worker):
        raise click.UsageError("--address, --workers and --gpus-per-worker apply with --engine ray")
    if engine == "ray" and approximate:
        raise click.UsageError("--engine ray mines exactly or --partitioned; drop --approximate")
    if out is not None:
        try:
            out_format(out)
        except InputError as exc:
            raise click.BadParameter(str(exc), param_hint="--out") from None
    view = View.CLUSTERS if clusters else View.PLAN if keep else View.PAIRS
    mode = "approximate" if approximate else "partitioned" if partitioned else "exact"
    result = dedupe(corpus, index, embeddings=embeddings,
                    threshold=DEFAULT_THRESHOLD if threshold is None else threshold, top_k=top_k,
                    keep=keep or "first", mode=mode, model=model, format=fmt, text_field=text_field,
                    id_field=id_field, batch_size=batch_size, chunk_size=chunk_size, partitions=partitions,
                    spill=spill, engine=engine, address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                    progress=not quiet and sys.stderr.isatty(), passages=passages)
    rows = result_rows(result, view)
    if out is not None:
        write_rows(out, rows, view_fields(view, lines=corpus is not None))
    if as_json:
        for row in rows:
            click.echo(json_line(row))
    elif view is View.PAIRS:
        _render_pairs(result)
    elif view is View.CLUSTERS:
        _render_clusters(result)
    else:
        _render_plan(rows)
    _dedupe_summary(result, out, len(rows))


def _render_pairs(result) -> None:
    if not result.pairs:
        click.echo(f"(no pairs with cosine >= {result.threshold:g})")
        return
    width = max(len(one_line(d.id)) for p in result.pairs for d in (p.a, p.b))
    room = text_room(width + 12)
    for p in result.pairs:
        click.echo(f"{p.score:.4f}  {one_line(p.a.id):<{width}}  {clip(p.a.text, room)}")
        click.echo(f"{'':6}  {one_line(p.b.id):<{width}}  {clip(p.b.text, room)}")


def _render_clusters(result) -> None:
    if not result.clusters:
        click.echo(f"(no pairs with cosine >= {result.threshold:g})")
        return
    for c in result.clusters:
        docs = [c.representative] + [m.document for m in c.members]
        width = max(len(one_line(d.id)) for d in docs)
        room = text_room(width + 18)
        if c.number > 1:
            click.echo()
        click.echo(f"cluster {c.number} ({c.size} documents)")
        rep = c.representative
        click.echo(f"  keep  {1.0:.4f}  {one_line(rep.id):<{width}}  {clip(rep.text, room)}")
        for m in c.members:
            via = "" if m.link.position == rep.position else f"  (via {one_line(m.link.id)} {m.link_score:.4f})"
            click.echo(f"  drop  {m.score:.4f}  {one_line(m.document.id):<{width}}  {clip(m.document.text, room)}{via}")


def _render_plan(rows) -> None:
    width = max((len(one_line(row["id"])) for row in rows), default=0)
    for row in rows:
        if row["action"] == "drop":
            click.echo(f"drop  {one_line(row['id']):<{width}}  duplicate of {one_line(row['duplicate_of'])} "
                       f"({row['score']:.4f})")
        else:
            click.echo(f"keep  {one_line(row['id'])}")


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
        click.echo(f"{result.mode.value} recall: {r.value:.3f} against the exact search on {r.sample:,} sampled "
                   f"documents ({r.found:,} of their {r.exact_pairs:,} pairs found)", err=True)
    if out is not None:
        click.echo(f"wrote {rows:,} rows to {out}", err=True)
