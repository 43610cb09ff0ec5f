"""Building and keeping indexes: ``index``, ``query``, ``delete``, ``info``, ``check``, ``demo-corpus``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import main
from ._options import (COSINE, POOLING_CHOICE, Finite, backend_option, chunk_options, chunking_from, index_option,
                       model_option, precision_option)


@main.command("index")
@click.argument("corpus", metavar="CORPUS|DIR")
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
@click.option("--embeddings", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Precomputed vectors instead of embedding: a .npy matrix (row i = record i) or a Parquet file with "
                   "'id' and 'embedding' columns, made by --model (default: the bundled one).")
@click.option("--force", is_flag=True, help="Create the index in a folder that holds other files (left untouched).")
@chunk_options
@click.option("--glob", "globs", multiple=True, metavar="PATTERN",
              help="DIR: index the files matching PATTERN (repeatable; a pattern with / matches the relative path). "
                   "[default: *.txt *.md *.markdown *.rst *.html *.htm]")
@click.option("--sync", is_flag=True, help="DIR: also delete the documents of files that are gone from DIR.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: read and embed on a Ray cluster (actors load the model once); an IVF index is filled by Ray "
                   "tasks and merged into one segment on disk. The same index comes out. "
                   "Needs: pip install 'semsearch[ray]'")
@click.option("--address", default=None, metavar="ADDR",
              help="--engine ray: the cluster. [default: $RAY_ADDRESS, else a local one]")
@click.option("--workers", type=click.IntRange(1), default=None, metavar="N", help="--engine ray: encoding actors.")
@click.option("--gpus-per-worker", type=click.FloatRange(0), default=0, metavar="G",
              help="--engine ray: GPUs per encoding actor.")
@backend_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def index_cmd(corpus, index, model, pooling, fmt, text_field, id_field, batch_size, skip_invalid, index_type,
              precision, embeddings, force, chunk_tokens, chunk_overlap, no_chunk, globs, sync, engine, address,
              workers, gpus_per_worker, quiet) -> None:
    """Embed CORPUS (JSONL, CSV/TSV with a header, text lines, or - for stdin) or the files of DIR into an index.

    Texts longer than the model's max length are embedded as overlapping passages (see --chunk-tokens).
    """
    from ..api import index_corpus
    from ..index import index_path

    chunking = chunking_from(chunk_tokens, chunk_overlap, no_chunk)
    if corpus != "-" and Path(corpus).is_dir():
        if fmt or embeddings or skip_invalid or text_field != "text" or id_field != "id":
            raise click.UsageError("--format, --text-field, --id-field, --skip-invalid and --embeddings apply to a "
                                   "corpus file, not to a folder")
        _index_folder(corpus, index, model, pooling, batch_size, index_type, precision, force, chunking, globs,
                      sync, quiet)
        return
    if globs or sync:
        raise click.UsageError("--glob and --sync apply to a folder (DIR); CORPUS is a file")
    if engine == "ray":
        if pooling is not None or embeddings is not None:
            raise click.UsageError("--engine ray embeds with the model's own pooling; drop --pooling and --embeddings")
        from ..distributed import index_corpus_ray

        with _bar(corpus, quiet) as bar:
            report = index_corpus_ray(corpus, index, model=model, format=fmt, text_field=text_field,
                                      id_field=id_field, batch_size=batch_size, skip_invalid=skip_invalid,
                                      index_type=index_type, precision=precision, force=force, address=address,
                                      workers=workers, gpus_per_worker=gpus_per_worker, chunking=chunking,
                                      progress=bar.update)
        _report_add(index_path(index), report)
        return
    if address is not None or workers is not None or gpus_per_worker:
        raise click.UsageError("--address, --workers and --gpus-per-worker apply with --engine ray")

    if precision == "bf16":
        from ..encoder import bf16_is_fast, default_device

        if not bf16_is_fast(default_device()):
            click.echo("note: this machine has no native bfloat16 arithmetic; bf16 will be slower than fp32", err=True)
    with _bar(corpus, quiet) as bar:
        report = index_corpus(corpus, index, model=model, pooling=pooling, format=fmt, text_field=text_field,
                              id_field=id_field, batch_size=batch_size, skip_invalid=skip_invalid,
                              index_type=index_type, precision=precision, embeddings=embeddings, force=force,
                              chunking=chunking, progress=bar.update)
    _report_add(index_path(index), report)
    if report.skipped:
        click.echo(f"skipped {report.skipped} invalid records; first: " + "; ".join(report.skipped_examples), err=True)


def _report_add(path, report, unit: str = "docs") -> None:
    if report.chunked:  # passages are what was embedded
        unit, count = "passages", report.passages
    else:
        count = report.embedded
    rate = count / report.seconds if report.seconds else 0.0
    click.echo(f"{path}: {report.read} read, {report.added} added, {report.updated} updated, "
               f"{report.unchanged} unchanged"
               + (f", {report.repeated} repeated ids (last kept)" if report.repeated else "")
               + (f", {report.chunked} split into passages ({report.passages} vectors)" if report.chunked else "")
               + (f", {report.truncated} truncated to the model's max length" if report.truncated else "")
               + f" in {report.seconds:.1f} s ({rate:.0f} {unit}/s)", err=True)


def _index_folder(folder, index, model, pooling, batch_size, index_type, precision, force, chunking, globs, sync,
                  quiet) -> None:
    from ..api import index_folder
    from ..index import index_path
    from .render import one_line

    encoder = None
    if pooling is not None:
        from ..encoder import Encoder

        encoder = Encoder.load(model, pooling=pooling, backend="auto", precision=precision or "fp32")
    with _bar("-", quiet, unit="file") as bar:
        result = index_folder(folder, index, globs=list(globs) or None, sync=sync, model=model, encoder=encoder,
                              batch_size=batch_size, index_type=index_type, precision=precision, force=force,
                              chunking=chunking, progress=bar.update)
    _report_add(index_path(index), result.add, unit="files")
    if sync:
        click.echo(f"{index_path(index)}: {len(result.deleted)} documents of files gone from {one_line(folder)} "
                   "deleted", err=True)
    problems = result.walk.problems
    if problems:
        click.echo(f"{len(problems)} files passed over (nothing else was skipped):", err=True)
        for problem in problems:
            click.echo(f"  {one_line(str(problem))}", err=True)


def _bar(corpus: str, quiet: bool, unit: str = "doc"):
    from tqdm.auto import tqdm

    total = None
    if corpus != "-" and Path(corpus).is_file() and Path(corpus).stat().st_size < (1 << 30):
        with open(corpus, "rb") as fh:
            total = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return tqdm(total=total, unit=unit, desc="indexing", disable=quiet or not sys.stderr.isatty(),
                leave=False, file=sys.stderr)


@main.command("query")
@click.argument("text", required=False)
@index_option
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1), help="Results per query.")
@click.option("--threshold", "-t", type=COSINE, default=None, help="Only hits with cosine >= this.")
@click.option("--queries", "queries_file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="File with one query per line, embedded in one batch.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: one object per hit.")
@click.option("--filter", "-f", "filters", multiple=True, metavar="KEY=VALUE",
              help="Only documents whose metadata matches (also !=, <, <=, >, >=); repeat to AND them.")
@click.option("--nprobe", type=click.IntRange(1), default=None,
              help="IVF indexes: lists to search (more: better recall, slower). [default: the manifest's]")
@click.option("--ef-search", type=click.IntRange(1), default=None,
              help="HNSW indexes: search beam width (more: better recall, slower). [default: the manifest's]")
@click.option("--mode", type=click.Choice(["dense", "lexical", "hybrid"]), default=None,
              help="dense: embeddings (cosine); lexical: words (bm25); hybrid: both, fused by reciprocal rank. "
                   "[default: hybrid when the index has a lexical index (dense with --threshold or --passages)]")
@click.option("--alpha", type=Finite(0, 1), default=None,
              help="Hybrid: fuse min-max normalised scores as ALPHA * dense + (1 - ALPHA) * lexical instead of by "
                   "rank.")
@click.option("--passages", is_flag=True, help="List the best passages (several of a long document possibly), "
                                               "not documents (dense mode).")
@model_option
@backend_option
def query_cmd(text, index, k, threshold, queries_file, as_json, filters, nprobe, ef_search, mode, alpha, passages,
              model) -> None:
    """Find the documents that best match TEXT (or each line of --queries)."""
    from ..api import read_queries, search
    from .render import json_line, printable, render_hits

    if (text is None) == (queries_file is None):
        raise click.UsageError("give a query TEXT or --queries FILE (one of them)")
    if text is not None and not text.strip():
        raise click.UsageError("the query TEXT is empty")
    queries = [text] if text is not None else read_queries(queries_file)
    results = search(queries, index, k=k, threshold=threshold, filters=list(filters), model=model, nprobe=nprobe,
                     ef_search=ef_search, mode=mode, alpha=alpha, passages=passages)
    for number, (query, hits) in enumerate(zip(queries, results)):
        if as_json:
            for hit in hits:
                click.echo(json_line({"query": query, **hit.to_dict()}))
            continue
        if len(queries) > 1:
            click.echo(("\n" if number else "") + f"query: {printable(query)}")
        render_hits(hits)


@main.command("delete")
@index_option
@click.option("--id", "ids", multiple=True, metavar="ID", help="A document id to remove (repeatable).")
@click.option("--ids-from", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="File with one id per line.")
@click.option("--where", "filters", multiple=True, metavar="KEY=VALUE",
              help="Remove the documents whose metadata matches (as query --filter; repeat to AND them).")
def delete_cmd(index, ids, ids_from, filters) -> None:
    """Remove documents from an index; their space is reclaimed."""
    from ..api import delete_documents, read_queries
    from ..index import index_path

    ids = list(ids) + (read_queries(ids_from) if ids_from else [])
    if not ids and not filters:
        raise click.UsageError("name what to delete: --id, --ids-from or --where")
    removed = delete_documents(index, ids=ids, filters=list(filters))
    click.echo(f"{index_path(index)}: {removed} documents removed", err=True)


@main.command("compact")
@index_option
def compact_cmd(index) -> None:
    """Merge an index's segments into one and purge deleted documents (crash-safe, like any write)."""
    from ..api import compact_index
    from ..index import index_path

    report = compact_index(index)
    click.echo(f"{index_path(index)}: {report.segments_before} segments -> {report.segments_after}, "
               f"{report.purged} deleted documents purged, {report.vectors:,} vectors rewritten "
               f"in {report.seconds:.1f} s", err=True)


@main.command("info")
@index_option
@click.option("--json", "as_json", is_flag=True, help="The manifest and file sizes as JSON.")
def info_cmd(index, as_json) -> None:
    """What an index holds: model, counts, segments, tombstones, files and sizes, versions."""
    from ..index.maintenance import info
    from ..vectors import stored_type

    data = info(index)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    encoder = data["encoder"]
    click.echo(f"index      {data['path']} (format {data['format']}, generation {data['generation']})")
    click.echo(f"documents  {data['counts']['documents']:,}")
    segments = data.get("segments", [])
    if segments:
        sizes = ", ".join(f"{s['vectors']:,}" for s in segments[:8]) + (", ..." if len(segments) > 8 else "")
        click.echo(f"segments   {len(segments)} ({sizes} vectors); {data['faiss'].get('dead', 0):,} deleted "
                   "documents awaiting compaction")
        click.echo(f"compaction {'due: ' + data['compaction'] if data.get('compaction') else 'not due'} "
                   "(automatic when deleted vectors pass 20% or segments pass 24; now: semsearch compact)")
    click.echo(f"model      {encoder['model']} ({encoder['pooling']} pooling, {encoder['dimension']}-d, "
               f"max {encoder['max_length']} tokens, {encoder.get('precision', 'fp32')}, "
               f"{encoder['fingerprint'][:19]})")
    faiss_meta = data["faiss"]
    knobs = ", ".join(f"{k} {v}" for k, v in sorted(faiss_meta.get("search", {}).items()))
    click.echo(f"faiss      {stored_type(faiss_meta)}: {faiss_meta['factory']}"
               + (f" (search: {knobs})" if knobs else "")
               )
    for name, size in data["sizes"].items():
        click.echo(f"file       {name}: {size:,} bytes" if size is not None else f"file       {name}: missing")
    click.echo(f"updated    {data['updated']} (created {data['created']})")


@main.command("check")
@index_option
@click.option("--repair", is_flag=True, help="Rebuild the vectors from the stored texts when the check fails.")
def check_cmd(index, repair) -> None:
    """Verify an index: checksums, and one vector per document (exit 1 when damaged)."""
    from ..index import index_path
    from ..index.files import folder_state
    from ..index.maintenance import check
    from ..index.maintenance import repair as repair_index

    if repair and folder_state(index_path(index)) == "damaged":
        click.echo(f"{index_path(index)}: manifest.json is missing; rebuilding it from the database", err=True)
        report = repair_index(index)
    else:
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
    from ..demo import write_demo_corpus

    count = write_demo_corpus(out)
    click.echo(f"{out}: {count} documents from the Python standard library's docstrings", err=True)
