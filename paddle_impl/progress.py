"""Progress bars for the long methods, quiet when stderr is not a terminal unless asked."""
from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")

__all__ = ["progress"]


def progress(iterable: Iterable[T], **kwargs) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr.

    PADDLE_GRADCAM_PROGRESS=0 silences it, =1 forces it; by default it shows
    only on a terminal so logs and test output stay clean.
    """
    setting = os.environ.get("PADDLE_GRADCAM_PROGRESS", "")
    if setting == "0" or (setting != "1" and not sys.stderr.isatty()):
        return iterable
    return tqdm(iterable, file=sys.stderr, leave=False, **kwargs)
