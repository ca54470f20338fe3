"""``python -m parity.paper``: the Grad-CAM++ paper's two measures, the port and upstream side by side."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parity.paper import average_drop, increase_in_confidence, render_markdown

REPO = Path(__file__).resolve().parent.parent


def test_the_measures_are_the_papers():
    # Y = 0.5 and 0.2; O = 0.25 (a drop of half) and 0.3 (an increase: no drop)
    assert average_drop([0.25, 0.0], [0.5, 0.2]) == pytest.approx(25.0)
    assert increase_in_confidence([0.0, 1.0]) == pytest.approx(50.0)


@pytest.mark.timeout(600)
def test_a_small_table_agrees_and_says_what_seeded_weights_mean(tmp_path, reference_image, weights_pair):
    out = tmp_path / "paper"
    result = subprocess.run(
        [sys.executable, "-m", "parity.paper", "--methods", "gradcam,randomcam,layercam", "--size", "32",
         "--images", str(reference_image), "--out", str(out)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=500,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((out / "paper.json").read_text())
    assert [row["method"] for row in data["rows"]] == ["gradcam", "randomcam", "layercam"]
    for row in data["rows"]:
        # the same measure on both sides: per-image drops within float32 noise of a probability
        assert row["drop_max_abs_diff"] < 1e-5 and row["same_decisions"], row
        assert row["paddle_average_drop"] == pytest.approx(row["torch_average_drop"], abs=1e-2)
        assert row["cam_max_abs_diff"] < 1e-4, row
    text = (out / "paper.md").read_text()
    assert "These numbers say nothing about the paper's claim" in text
    assert text == render_markdown(data)
