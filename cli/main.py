"""The ``telescope`` command: a thin typer app; every command calls library code.

Bad input (ValueError, TypeError, LookupError, missing or existing files) prints one line naming the problem
and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="telescope",
    help="Nested embeddings and coarse-to-fine search: embed, index, search, evaluate, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

USER_ERRORS = (ValueError, TypeError, LookupError, FileNotFoundError, FileExistsError, RuntimeError)


def _register() -> None:
    # Each command group lives in its own module, named for it.
    from telescope.cli import bench, demo, embed, eval, index, rollout, search, serve, train

    for module in (embed, index, search, demo, bench, serve, eval, train, rollout):
        module.register(app)


_register()


def main() -> None:
    try:
        app()
    except USER_ERRORS as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, markup=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
