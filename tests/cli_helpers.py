"""Running the ``telescope`` command in-process, as a user would, for the CLI tests."""

from __future__ import annotations

import os
import sys


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``telescope ARGV`` (through ``main``: bad input exits 2).

    Rich wraps messages at the terminal width: a wide one keeps each message (a long path and its line) on one
    line, so that tests can match it whole."""
    from telescope.cli.main import main

    old, old_columns = sys.argv, os.environ.get("COLUMNS")
    sys.argv = ["telescope", *argv]
    os.environ["COLUMNS"] = "400"
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    finally:
        sys.argv = old
        if old_columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old_columns
    out = capsys.readouterr()
    return code, out.out, out.err
