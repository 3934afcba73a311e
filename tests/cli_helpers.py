"""Running the ``telescope`` command in-process, as a user would, for the CLI tests."""

from __future__ import annotations

import sys


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``telescope ARGV`` (through ``main``: bad input exits 2)."""
    from telescope.cli.main import main

    old = sys.argv
    sys.argv = ["telescope", *argv]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err
