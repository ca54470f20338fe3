"""User-facing errors and the one-line, exit-status-2 way the command lines report them."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

__all__ = ["UserError", "cli_errors"]


class UserError(Exception):
    """A problem with what the user gave us (a path, a file, an option), explained in one line."""


@contextlib.contextmanager
def cli_errors(prog: str, debug: bool = False) -> Iterator[None]:
    """Turn ``UserError`` (and Ctrl-C) into one line on stderr and exit status 2 (130 for Ctrl-C).

    With ``debug`` the traceback is kept, for bug reports.
    """
    try:
        yield
    except UserError as error:
        if debug:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
