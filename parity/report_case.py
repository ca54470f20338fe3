"""One case of a report, folded under its one-line summary: facts, rerun command, pictures, stages, messages."""
from __future__ import annotations

import html
from typing import List, Mapping, Optional, Sequence

from parity.report_cases import _case_id, _files, rerun_command
from parity.report_format import (
    CASE_WIDTH, _anchor, _cell, _code, _fenced, _heading_anchor, _Images, _int, _of_bound, _sci, _secs, _shape,
    _table,
)
from parity.report_tables import _diff_note
from parity.report_verdict import _EMOJI, case_status


def _stage_lines(stages: Sequence[Mapping], first: Optional[str]) -> List[str]:
    header = ["stage", "shape", "max\\|Δ\\|", "mean\\|Δ\\|", "bound", "rule", "over / elements", ""]
    rows = []
    for stage in stages:
        name = _cell(stage.get("stage"))
        if first and stage.get("stage") == first:
            name = f"**{name}** ⬅ first divergent"
        rule = _cell(stage.get("bound_rule"))
        if stage.get("note"):
            rule += f"; {_cell(stage['note'])}"
        rows.append([
            name,
            _shape(stage.get("shape")),
            _sci(stage.get("max_abs_diff")),
            _sci(stage.get("mean_abs_diff")),
            _sci(stage.get("bound")),
            rule,
            f"{_int(stage.get('elements_over'))} / {_int(stage.get('elements'))}",
            "✅" if stage.get("passed") else "❌",
        ])
    return _table(header, rows)


def _layer_text(layer: Mapping) -> str:
    parts = [f"torch {_code(layer.get('torch_path', '?'))} {_shape(layer.get('torch_shape'))}",
             f"paddle {_code(layer.get('paddle_path', '?'))} {_shape(layer.get('paddle_shape'))}"]
    text = f"**First divergent layer** ({_cell(layer.get('kind', '?'))}): " + " vs ".join(parts)
    if layer.get("max_abs_diff") is not None:
        text += f": max\\|Δ\\| {_sci(layer.get('max_abs_diff'))}, bound {_sci(layer.get('bound'))}"
    if layer.get("message"):
        text += f". {_cell(layer['message'])}"
    return text


def _case_facts(case: Mapping) -> str:
    status = case_status(case)
    facts = [f"**{status}**"]
    for key, label in (("setup", "setup"), ("model", "model"), ("method", "method"), ("smooth", "smoothing"),
                       ("dtype", "dtype")):
        if case.get(key):
            facts.append(f"{label} `{case[key]}`")
    layers = case.get("target_layers") or {}
    if isinstance(layers, Mapping) and layers:
        if len(set(map(str, layers.values()))) == 1:
            facts.append(f"target layer `{next(iter(layers.values()))}`")
        else:
            facts.append("target layers " + ", ".join(f"{side} `{value}`" for side, value in layers.items()))
    elif case.get("target_layer"):
        facts.append(f"target layer `{case['target_layer']}`")
    if case.get("batch") and case.get("batch") != 1:
        facts.append(f"batch {case['batch']}")
    if case.get("size"):
        facts.append("input " + "×".join(str(s) for s in case["size"]) + " (W×H)")
    if case.get("image_size"):
        facts.append("CAM " + "×".join(str(s) for s in case["image_size"]))
    facts.append(f"bound {_sci(case.get('tolerance'))}")
    facts.append(f"max\\|Δ\\| {_sci(case.get('cam_max_abs_diff'))}")
    facts.append(f"paddle {_secs(case.get('paddle_seconds'))} s")
    facts.append(f"torch {_secs(case.get('torch_seconds'))} s" + (" (cached)" if case.get("torch_cached") else ""))
    return " · ".join(facts)


def _case_summary(case: Mapping) -> str:
    """The one line a folded case shows: status, max|Δ| and its share of the bound."""
    status = case_status(case)
    text = f"{_EMOJI[status]} <b>{html.escape(_case_id(case))}</b> · {html.escape(status)}"
    if case.get("cam_max_abs_diff") is not None and status not in ("error", "architectures differ"):
        # an HTML block: no markdown escapes here, and no table to split at the pipes
        text += f" · max|Δ| {_sci(case['cam_max_abs_diff'])} ({html.escape(_of_bound(case))} of bound)"
    return text


def _case_lines(case: Mapping, img: _Images, scale: Optional[Mapping], level: str = "###",
                provenance: Optional[Mapping] = None) -> List[str]:
    """One case, folded under its one-line summary: facts, the command that reruns it, pictures, stages, message.

    (``level`` is kept for callers that pass it; a folded case has no heading.)
    """
    case_id = _case_id(case)
    status = case_status(case)
    lines = [_heading_anchor(_anchor(case_id)), "", f"<details><summary>{_case_summary(case)}</summary>", "",
             _case_facts(case), "", "Rerun alone: " + _code(rerun_command(case, provenance)), ""]
    targets = case.get("target_categories") or {}
    if targets:
        lines += ["Target categories: " + ", ".join(f"{k} `{v}`" for k, v in targets.items()), ""]
    if case.get("flags"):
        lines += ["Flags: " + ", ".join(f"**{_cell(f)}**" for f in case["flags"]), ""]
    if status == "architectures differ":
        lines += [f"🔶 **Architectures differ**: {_cell(case['architecture_differs'])} This case cannot pass "
                  "and is not a port failure; it is counted neither as passed nor as failed.", ""]
    if status == "vacuous":
        lines += [f"⚪ **Vacuous**: {_cell(case.get('vacuous') or 'the final CAM is all zeros on both sides')}. "
                  "Not counted as passed.", ""]
    if case.get("ill_conditioned"):
        lines += [f"⚖️ **Ill-conditioned**: {_cell(case['ill_conditioned'])}.", ""]
    if isinstance(case.get("first_divergent_layer"), Mapping):
        lines += [_layer_text(case["first_divergent_layer"]), ""]

    # An errored case links no images: any files at its paths are left over from an earlier run.
    files = _files(case)
    pictures = [files["paddle_cam_jpg"], files["torch_cam_jpg"], files["diff_jpg"]]
    if not case.get("error") and (status != "architectures differ" or any(img.exists(p) for p in pictures)):
        images = [
            img(files["paddle_cam_jpg"], f"Paddle {case_id}", CASE_WIDTH),
            img(files["torch_cam_jpg"], f"PyTorch {case_id}", CASE_WIDTH),
            img(files["diff_jpg"], f"absolute difference {case_id}", CASE_WIDTH),
        ]
        lines += _table(["Paddle", "PyTorch", f"\\|Δ\\| (max {_diff_note(case, scale)})"], [images])
        lines.append("")

    stages = case.get("stages") or []
    if stages:
        if status == "passed":
            # A passing case's stage table is one click away: the report stays short, nothing is hidden.
            lines += [f"<details><summary>{len(stages)} stages compared, all within their bounds</summary>", ""]
            lines += _stage_lines(stages, case.get("first_divergent_stage")) + ["", "</details>", ""]
        else:
            lines += _stage_lines(stages, case.get("first_divergent_stage")) + [""]
    if case.get("error"):
        lines += ["**Error:**", ""] + _fenced(case["error"]) + [""]
        message = case.get("message")
        if message and message.strip() != str(case["error"]).strip():
            lines += _fenced(message) + [""]
    elif status in ("failed", "float32 only") or (status == "ill-conditioned" and not case.get("passed")):
        lines += _fenced(case.get("message") or "(no message)") + [""]
    return lines + ["</details>", ""]


def _failure_lines(cases: Sequence[Mapping]) -> List[str]:
    bad = [c for c in cases if case_status(c) in ("failed", "error", "float32 only")]
    if not bad:
        return []
    lines = [f"## {_heading_anchor('failures-and-errors')}Failures and errors", ""]
    for case in bad:
        status = case_status(case)
        text = case.get("error") if status == "error" else case.get("message")
        lines += [f"<details><summary>{_EMOJI[status]} {html.escape(_case_id(case))}</summary>", ""]
        lines += _fenced(text or "(no message)") + ["", "</details>", ""]
    return lines
