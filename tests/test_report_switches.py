"""A hub pair's switches are named where a reader of the report looks: the first screen and the pair's own section.

The names come from the weights facts that the conversion writes
(``parity.hub_transfer``: one ``without 'NAME': <failure>`` per switch in
the proof sentence), so a pair whose switch was not shown to be needed is
not listed as switched.
"""
from __future__ import annotations

import json
from pathlib import Path

from parity.hub_transfer import SwitchCheck
from parity.report import render_markdown
from parity.report_provenance import switch_names

HUBS_RUN = Path(__file__).resolve().parent.parent / "reports" / "hubs"


def _sentence(*names: str) -> str:
    # as transfer_pair words each proof: the name's repr, then the forward check's failure without it
    without = tuple(f"without {name!r}: architectures differ at torch a (Conv2d) / paddle b (Conv2D): "
                    "bias present vs absent" for name in names)
    return SwitchCheck(tuple((name, "why (it differs; here)") for name in names), without, "outputs agree").sentence()


def test_switch_names_are_read_from_the_proof_the_conversion_writes():
    assert switch_names({"switches": _sentence("bias on last_conv", "dropout upscale_in_train")}) == [
        "bias on last_conv", "dropout upscale_in_train"]
    assert switch_names({"switches": _sentence("the model's shift")}) == ["the model's shift"]  # repr in double quotes
    assert switch_names({"transfer": "outputs agree"}) == []
    assert switch_names({}) == []


def test_the_committed_hubs_report_names_each_pairs_switches_on_its_first_screen_and_in_its_section():
    results = json.loads((HUBS_RUN / "parity.json").read_text(encoding="utf-8"))
    text = render_markdown(results, out_dir=HUBS_RUN)
    first = text.split("\n## ", 1)[0]
    assert "- **lcnet_100**: `bias on last_conv` · `dropout upscale_in_train`" in first
    assert "- **efficientnet_b0**: `padding_type DYNAMIC` · `batch_norm_epsilon 1e-5`" in first
    assert "- **swin_tiny_patch4_window7_224**: `no shift where the window covers the map`" in first
    assert "**resnet50d**:" not in first and "**tf_efficientnet_b0**:" not in first  # no switch, no line

    def section(setup: str) -> str:
        return text.split(f'id="setup-{setup}"></a>', 1)[1].split("<details>", 1)[0]

    assert "Switches applied to the Paddle model" in section("efficientnet_b0")
    assert "`padding_type DYNAMIC` · `batch_norm_epsilon 1e-5`" in section("efficientnet_b0")
    assert "Switches applied" not in section("resnet50d")
    assert "Switches applied" not in section("mobilenetv3_large_100")  # refused: its conversion never ran
