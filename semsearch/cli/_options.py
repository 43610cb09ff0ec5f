"""Options and choices shared by several commands."""

from __future__ import annotations

import math

import click

POOLING_CHOICE = click.Choice(["mean", "max", "cls"])


class Finite(click.FloatRange):
    """A FloatRange that also refuses nan and ±inf (FloatRange lets nan through every bound)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return number


COSINE = Finite(-1, 1)  # a cosine threshold


def index_option(f):
    return click.option("--index", "-i", "index", default=None, metavar="NAME",
                        help="Index name under indexes/ (or $SEMSEARCH_INDEXES), or a path. [default: default]")(f)


def precision_option(f):
    return click.option("--precision", type=click.Choice(["fp32", "bf16"]), default=None,
                        help="Arithmetic of the encoder on CPU: fp32 (exact, the default) or bf16 (about 1.7x faster "
                             "on CPUs with native bfloat16, vectors within ~1e-3; on CUDA the default is fp16). "
                             "An index keeps the one it was built with.")(f)


def model_option(f):
    return click.option("--model", "-m", default=None, metavar="MODEL",
                        help="Model folder or hub id. [default: the bundled all-MiniLM-L6-v2]")(f)


def _three_columns(ctx, param, value):
    if value is not None and (len(value.split(",")) != 3 or not all(c.strip() for c in value.split(","))):
        raise click.BadParameter(f"expected three comma-separated names, got {value!r}")
    return value


def columns_option(default_help: str):
    def decorate(f):
        return click.option("--columns", default=None, metavar="A,B,C", callback=_three_columns,
                            help=f"Column (or JSON field) names, comma-separated. [default: {default_help}]")(f)
    return decorate


def skip_invalid_option(f):
    return click.option("--skip-invalid", is_flag=True,
                        help="Skip bad rows and count them, instead of stopping at the first.")(f)


def _use_backend(ctx: click.Context, param, value):
    """Make the encoder's "auto" backend mean this one for the command (the index code asks for "auto")."""
    if value is not None:
        from ..encoder import set_default_backend

        previous = set_default_backend(value)
        ctx.call_on_close(lambda: set_default_backend(previous))
    return value


def backend_option(f):
    return click.option("--backend", type=click.Choice(["onnx", "torch"]), default=None, expose_value=False,
                        callback=_use_backend, is_eager=True,
                        help="Where the encoder runs: onnx (onnxruntime, fp32, no torch import; the default where the "
                             "model exports) or torch (also the one for bf16). Same vectors to 1e-5. "
                             "[default: $SEMSEARCH_BACKEND, else onnx where it applies]")(f)
