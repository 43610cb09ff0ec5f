"""The ``semsearch`` command: a thin shell over :mod:`semsearch.api`.

Each command parses its options, calls one library function and renders the result. Library errors
(:class:`~semsearch.errors.SemsearchError`) become one-line messages with exit code 1, in one place.

The commands live in one module per group: :mod:`.index` (index, query, delete, info, check,
demo-corpus, compact), :mod:`.evaluate` (the ``eval`` group), :mod:`.train`, :mod:`.dedupe`, :mod:`.model`
and :mod:`.serve`; the options they share are in :mod:`._options`, and the text rendering of stored documents in
:mod:`.render`. Importing this package registers them all on :func:`main`.
"""

from __future__ import annotations

import click

from .. import __version__
from ..errors import SemsearchError


class _Group(click.Group):
    """Turns library errors into ``Error: ...`` with exit code 1 (usage errors keep click's exit code 2)."""

    def invoke(self, ctx: click.Context):
        import warnings

        from ..filters import FilterWarning

        shown = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if issubclass(category, FilterWarning):
                click.echo(f"warning: {message}", err=True)
            else:
                shown(message, category, *args, **kwargs)

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", FilterWarning)
                warnings.showwarning = show
                return super().invoke(ctx)
        except SemsearchError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was written", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="semsearch")
def main() -> None:
    """Semantic search and near-duplicate mining with Sentence-BERT."""


# Register the commands on `main` (each module imports `main` from here, so this comes last).
from . import dedupe, evaluate, index, model, serve, train  # noqa: E402,F401

__all__ = ["main"]
