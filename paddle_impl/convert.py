"""Convert a torchvision ResNet50 state dict (``.pth``) into Paddle's ``.pdparams``.

    python -m paddle_impl.convert IN.pth OUT.pdparams [--debug]

Keys are renamed (``running_mean`` -> ``_mean``, ``running_var`` ->
``_variance``), ``fc.weight`` is transposed, ``num_batches_tracked`` is
dropped, and every key and shape is checked against Paddle's ResNet50.  The
input is read with ``torch.load(weights_only=True)``, so a pickle that would
run code is refused.  OUT is written atomically (with ``OUT.sha256`` beside
it): on any error nothing is written there.  Problems are one line on stderr
and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import List, Optional

warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

from paddle_impl.errors import UserError, cli_errors  # noqa: E402

PROG = "python -m paddle_impl.convert"

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Convert a torchvision ResNet50 state dict (.pth, torch.save) into a Paddle .pdparams file.",
    )
    parser.add_argument("input", metavar="IN.pth", help="torchvision ResNet50 state dict saved with torch.save")
    parser.add_argument("output", metavar="OUT.pdparams", help="Paddle state dict to write (atomically)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_errors(PROG, debug=args.debug):
        from paddle_impl.weights import convert_file, load_paddle_state_dict, sha256_of

        source, target = Path(args.input), Path(args.output)
        if target.exists() and target.is_dir():
            raise UserError(f"output is a directory, not a file: {target}")
        try:
            if target.exists() and source.exists() and source.resolve() == target.resolve():
                raise UserError(f"input and output are the same file: {source}")
        except OSError:
            pass
        try:
            written = convert_file(source, target)
        except OSError as error:  # reading is checked in weights.py; this is the writing side
            raise UserError(f"cannot write {target}: {error.strerror or error}") from None
        count = len(load_paddle_state_dict(written))
        print(f"converted {count} tensors: {source} -> {written}")
        print(f"sha256 {sha256_of(written)}  {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
