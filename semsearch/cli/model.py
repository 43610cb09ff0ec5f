"""``semsearch model``: commands about the model itself (``export``)."""

from __future__ import annotations

import click

from . import main
from ._options import model_option


@main.group("model")
def model_group() -> None:
    """Prepare a model for fast inference."""


@model_group.command("export")
@model_option
@click.option("--force", is_flag=True, help="Export again even when the cache holds this model's graph.")
def export_cmd(model, force) -> None:
    """Export MODEL's transformer to ONNX, check it against torch, and cache it for the onnx backend.

    Done once per model content (fingerprint), also on first use; the cache is $SEMSEARCH_CACHE/onnx
    (default ~/.cache/semsearch/onnx).
    """
    from ..onnx_export import export_model

    report = export_model(model, force=force)
    if report.reused:
        click.echo(f"{report.path}: already exported ({report.fingerprint[:19]}); --force exports again")
    else:
        click.echo(f"{report.path}: exported in {report.seconds:.1f} s ({report.fingerprint[:19]}; "
                   f"max difference to torch on the probe batch {report.max_diff:.1e})")
