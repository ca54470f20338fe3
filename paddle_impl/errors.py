"""User-facing errors and the one-line, exit-status-2 way the command lines report them."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

__all__ = ["UserError", "cli_errors", "check_readable_file"]


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


def check_readable_file(path: Path, what: str, directory_wording: str = "") -> None:
    """Refuse, in one line naming ``path``, a missing, directory, unreadable or empty file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}")
    if path.is_dir():
        raise UserError(f"{directory_wording or what} is a directory, not a file: {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise UserError(f"{what} cannot be read: {path} ({error.strerror or error})") from None
    if path.stat().st_size == 0:
        raise UserError(f"{what} is an empty file: {path}")
