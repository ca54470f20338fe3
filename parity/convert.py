"""Convert a torchvision state dict (``.pth``) into Paddle's ``.pdparams`` for a model-zoo architecture.

    python -m parity.convert [--arch NAME] IN.pth OUT.pdparams [--debug]

``--arch`` defaults to ``resnet50``.  The transfer follows the architecture's
rule in :mod:`parity.model_zoo`: batch-norm renames (``running_mean`` ->
``_mean``, ``running_var`` -> ``_variance``, ``num_batches_tracked`` dropped)
and, where paddle.vision names its layers differently, pairing by execution
order; Linear weights (found by layer type) are transposed.  Every key and
shape is checked on both sides, and the result is written only after a
forward pass shows the two models' float32 logits agree within
``1e-4 * max|torch logits|``; otherwise the first layer whose outputs differ
is named.  The pairing and the forward check are those of
``parity.transfer_weights``, which moves weights between any torch model
and its Paddle twin (timm <-> PaddleClas included) in memory.  The input is read with ``torch.load(weights_only=True)``, so a
pickle that would run code is refused.  OUT is written atomically (with
``OUT.sha256`` beside it) and followed by ``OUT.map.tsv``, the reviewable
map of which torch tensor became which Paddle tensor (transposed or not): on
any error nothing is written there.  Problems
are one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import List, Optional

warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

from paddle_impl.errors import UserError, cli_errors  # noqa: E402
from parity.model_zoo import ARCHS, DEFAULT_ARCH  # noqa: E402

PROG = "python -m parity.convert"

__all__ = ["main", "build_parser"]


def _arch_table() -> str:
    rules = {"name": "names (after batch-norm renames)", "execution_order": "execution-order pairing"}
    lines = ["architectures (--arch) and how their weights transfer:"]
    for spec in ARCHS.values():
        note = "  [paddle.vision's model differs: refused]" if spec.known_difference else ""
        lines.append(f"  {spec.name:<20} {rules[spec.transfer]}{note}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line, with the architectures and their transfer rules in ``--help``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Convert a torchvision state dict (.pth, torch.save) into a Paddle .pdparams file for the\n"
            "matching paddle.vision.models architecture. Every key and shape is checked, Linear weights are\n"
            "transposed, and OUT is written (atomically, with OUT.sha256) only after a forward pass shows\n"
            "both models give the same logits (float32, within 1e-4 * max|torch logits|); otherwise the first\n"
            "layer whose outputs differ is named. Errors are one line on stderr, exit status 2."
        ),
        epilog=_arch_table(),
    )
    parser.add_argument("input", metavar="IN.pth", help="torchvision state dict saved with torch.save")
    parser.add_argument("output", metavar="OUT.pdparams", help="Paddle state dict to write (atomically)")
    parser.add_argument(
        "--arch",
        default=DEFAULT_ARCH,
        metavar="NAME",
        help=f"architecture of the checkpoint (default {DEFAULT_ARCH}; listed below)",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return parser


def _save_map(arch_name: str, written: Path) -> Path:
    """The reviewable map of the conversion (``OUT.map.tsv``, as ``parity.transfer_weights`` writes one)."""
    from parity.transfer import MapEntry, TransferMap
    from parity.weight_transfer import transfer_plan

    plan = transfer_plan(arch_name)
    entries = tuple(MapEntry(t, p, p in plan.transposed) for t, p in plan.name_map.items())
    transfer_map = TransferMap("torch_to_paddle", plan.rule, entries,
                               {t: plan.torch_shapes[t] for t in plan.name_map},
                               {p: plan.paddle_shapes[p] for p in plan.name_map.values()})
    return transfer_map.save(written.with_suffix(".map.tsv"))


def main(argv: Optional[List[str]] = None) -> int:
    """Convert, verify and write; a problem is one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    with cli_errors(PROG, debug=args.debug):
        if args.arch not in ARCHS:
            raise UserError(f"unknown --arch {args.arch!r} (choose from: {', '.join(ARCHS)})")
        from parity.weights import convert_file_checked, load_paddle_state_dict, sha256_of

        source, target = Path(args.input), Path(args.output)
        if target.exists() and target.is_dir():
            raise UserError(f"output is a directory, not a file: {target}")
        try:
            if target.exists() and source.exists() and source.resolve() == target.resolve():
                raise UserError(f"input and output are the same file: {source}")
        except OSError:
            pass
        try:
            written, check = convert_file_checked(source, target, args.arch)
        except OSError as error:  # reading is checked in weights.py; this is the writing side
            raise UserError(f"cannot write {target}: {error.strerror or error}") from None
        map_path = _save_map(args.arch, written)
        count = len(load_paddle_state_dict(written))
        print(f"converted {count} tensors ({args.arch}, {check.rule} rule): {source} -> {written}")
        print(f"verified: {check.summary()}")
        print(f"sha256 {sha256_of(written)}  {written}")
        print(f"map of the tensors (torch key, paddle key, transposed): {map_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
