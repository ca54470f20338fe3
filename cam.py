#!/usr/bin/env python
"""Class activation maps with the Paddle port: upstream's ``cam.py``.

    python cam.py --image-path fixtures/both.png --method gradcam --output-dir output/

A thin wrapper, kept so the checkout works without installing anything: the
command line itself is :mod:`paddle_impl.cam_command` (installed as the
``paddle-gradcam`` console script), run here under the name ``cam.py``.  In a
checkout the parity harness sits beside the port, so torchvision weights
(``--weights default``, ``imagenet``, a ``.pth``) are handed to its converter
directly (an installed copy finds it through an entry point instead).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

REPO_ROOT = Path(__file__).resolve().parent
# This checkout's paddle_impl, even where another copy is installed.
sys.path.insert(0, str(REPO_ROOT))

from paddle_impl import cam_command  # noqa: E402
from parity.cam_weight_source import converted_weights  # noqa: E402  (imports no torch until it converts)

__all__ = ["PROG", "DEFAULT_IMAGE", "build_parser", "main"]

PROG = "cam.py"
DEFAULT_IMAGE = cam_command.DEFAULT_IMAGE


def build_parser() -> argparse.ArgumentParser:
    """The command line's options, named ``cam.py``."""
    return cam_command.build_parser(PROG)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CAM command line as ``cam.py`` (see :func:`paddle_impl.cam_command.main`)."""
    return cam_command.main(argv, prog=PROG, torch_weights=converted_weights)


if __name__ == "__main__":
    raise SystemExit(main())
