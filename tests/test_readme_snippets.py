"""The README's Python examples run as written.

Every fenced ```python block of README.md runs, each in a fresh interpreter,
in an empty directory that holds only ``fixtures/both.png`` (the README's
examples name it that way), unless the line just above its fence is an HTML
comment starting ``<!-- not run`` (a template with the reader's own names in
it), which should say why.  A block that needs a package this environment
lacks (timm, PaddleClas...) is skipped with the package's name.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
NOT_RUN = "<!-- not run"
_FENCE = re.compile(r"^```(\S*)\s*$")
# Packages a README example may use that a Paddle-only or harness-only install can lack.
OPTIONAL_PACKAGES = ("timm", "paddleclas", "huggingface_hub", "transformers")


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    runs: bool

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks(text: str) -> List[Block]:
    """Every fenced block of ``text`` with its language and whether it is to be run."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"README.md:{i + 1}: a code fence is never closed"
        above = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        language = opening.group(1)
        blocks.append(Block(i + 1, language, "\n".join(lines[i + 1:end]) + "\n",
                            runs=language == "python" and not above.startswith(NOT_RUN)))
        i = end + 1
    return blocks


def runnable_blocks() -> List[Block]:
    return [block for block in readme_blocks(README.read_text(encoding="utf-8")) if block.runs]


def test_the_marker_convention_is_what_the_extraction_reads():
    text = "\n".join([
        "```python", "print(1)", "```",
        "<!-- not run: a template -->", "", "```python", "undefined_name", "```",
        "```bash", "ls", "```",
    ])
    blocks = readme_blocks(text)
    assert [(b.language, b.runs) for b in blocks] == [("python", True), ("python", False), ("bash", False)]


def test_the_quickstart_is_among_the_blocks_that_run():
    codes = [block.code for block in runnable_blocks()]
    assert any("from paddle_impl import GradCAM" in code and "cv2.imwrite" in code for code in codes), codes
    assert all("import torch" not in code for code in codes if "paddle_impl" in code and "parity" not in code)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda block: block.id)
def test_readme_block_runs(block, tmp_path, reference_image):
    (tmp_path / "fixtures").mkdir()
    shutil.copyfile(reference_image, tmp_path / "fixtures" / "both.png")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", PADDLE_GRADCAM_PROGRESS="0")
    result = subprocess.run([sys.executable, "-c", block.code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=540)
    if result.returncode != 0:
        missing = re.search(r"No module named '([\w.]+)'", result.stderr)
        if missing and missing.group(1).split(".")[0] in OPTIONAL_PACKAGES:
            pytest.skip(f"{block.id} needs {missing.group(1)}, which is not installed here")
    assert result.returncode == 0, f"{block.id} failed:\n{block.code}\n--- stderr:\n{result.stderr[-4000:]}"
    if "from paddle_impl import GradCAM" in block.code:
        import cv2
        import numpy as np

        overlay = cv2.imread(str(tmp_path / "gradcam_cam.jpg"))
        image = cv2.imread(str(reference_image))
        assert overlay is not None and overlay.shape == image.shape and overlay.dtype == np.uint8
        assert not np.array_equal(overlay, image)
        assert (tmp_path / "seeded.pdparams").is_file()
