"""The report's sections as markdown lines: the verdict matrix, the galleries, the |Δ| scale, the metrics.

One case's own section is ``parity.report_case``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence
from urllib.parse import quote

from parity.registry import METHODS, SMOOTH_MODES
from parity.report_cases import _case_id, _comparable, _files, _in_order, _p999, _setups, _short_id
from parity.report_format import (
    GALLERY_WIDTH, GRID_WIDTH, LEGEND_WIDTH, _breakable, _cell, _code, _drop_empty_columns, _heading_anchor, _Images,
    _int, _Links, _of_bound, _percent_identical, _sci, _secs, _setup_anchor, _table,
)
from parity.report_verdict import _EMOJI, case_status


def _wrappable(name: str) -> str:
    """A name that may wrap after its underscores and slashes (``swin_tiny_<wbr>patch4_<wbr>window7_<wbr>224``)."""
    return _cell(name).replace("_", "_<wbr>").replace("/", "/<wbr>")


def _bounds_note(cases: Sequence[Mapping]) -> str:
    """``bound 1.00e‑04 (ablationcam 5.00e‑04)``: the final-CAM bound, and the methods with another one."""
    by_bound: Dict[str, List[str]] = {}
    for case in cases:
        if case.get("tolerance") is not None:
            by_bound.setdefault(_sci(case["tolerance"]), []).append(str(case.get("method")))
    if not by_bound:
        return ""
    common = max(by_bound, key=lambda b: len(by_bound[b]))
    others = [f"{', '.join(dict.fromkeys(methods))} {bound}" for bound, methods in by_bound.items() if bound != common]
    return f"bound {common}" + (f" ({'; '.join(others)})" if others else "")


def _matrix_cell(case: Optional[Mapping], links: _Links) -> str:
    """``✅ 2.4%`` linked to its case; the space is a no-break space, so the pair never wraps apart."""
    if case is None:
        return "·"
    status = case_status(case)
    if status == "error":
        text = "💥\u00a0error"
    elif status == "architectures differ":
        text = "🔶\u00a0n/a"
    elif status == "vacuous":
        text = f"{_EMOJI[status]}\u00a0flat"
    elif status == "ill-conditioned":
        text = f"{_EMOJI[status]}\u00a0tie"
    else:
        text = f"{_EMOJI[status]}\u00a0{_of_bound(case)}"
    return links.case(case, text)


def _common_divergence(cases: Sequence[Mapping]) -> Optional[str]:
    """``squeezenet1_1``'s "architectures differ at `features.0`" when every case of a row says so."""
    if not cases or not all(case_status(c) == "architectures differ" for c in cases):
        return None
    layers = {_json_key(c.get("first_divergent_layer")) for c in cases}
    if len(layers) != 1:
        return "🔶 architectures differ"
    layer = cases[0].get("first_divergent_layer") or {}
    where = layer.get("torch_path") or layer.get("paddle_path")
    return "🔶 architectures differ" + (f" at {_code(where)}" if where else "")


def _json_key(value) -> str:
    return repr(sorted(value.items())) if isinstance(value, dict) else repr(value)


def _matrix_lines(cases: Sequence[Mapping], links: _Links) -> List[str]:
    """The verdict matrix: method x smoothing mode for one setup; setup x method for several.

    With several setups and several modes, a cell holds one line per mode (in
    the order the note under the table names), so the matrix keeps one row
    per setup and fits the first screen.
    """
    if not cases:
        return ["_No case was run._"]
    setups = _setups(cases)
    methods = _in_order([c.get("method") for c in cases], METHODS)
    smooths = _in_order([c.get("smooth") for c in cases], SMOOTH_MODES)
    index = {(c.get("setup") or "", c.get("method"), c.get("smooth")): c for c in cases}
    lines: List[str] = []
    keys: List[str] = []
    if len(setups) == 1:
        setup = setups[0]
        rows = [[_cell(m)] + [_matrix_cell(index.get((setup, m, s)), links) for s in smooths] for m in methods]
        lines += _table(["method"] + [_cell(s) for s in smooths], rows)
    else:
        rows = []
        for setup in setups:
            row_cases = [c for c in cases if (c.get("setup") or "") == setup]
            label = links.anchor(_setup_anchor(setup), _wrappable(setup or "(default)"))
            common = _common_divergence(row_cases)
            if common:
                label += f"<br>{common}"
            cells = ["<br>".join(_matrix_cell(index.get((setup, m, s)), links) for s in smooths) for m in methods]
            rows.append([label] + cells)
        lines += _table(["setup"] + [_breakable(m) for m in methods], rows)
        if len(smooths) > 1:
            keys.append("one line per smoothing mode: " + ", then ".join(smooths))
    keys.insert(0, f"{_EMOJI['passed']} passed / {_EMOJI['failed']} failed, and the final CAM's max\\|Δ\\| as a "
                   f"percentage of its {_bounds_note(cases)}" + ("; a cell links to its case" if links.mode != "none" else ""))
    statuses = {case_status(c) for c in cases}
    if "error" in statuses:
        keys.append("💥 the case did not run to the end")
    if "architectures differ" in statuses:
        keys.append("🔶 the Paddle model's architecture differs from the torch model's (paddle.vision from torchvision, "
                    "PaddleClas from timm): the case cannot pass and is not a port failure (neither passed nor failed)")
    if "vacuous" in statuses:
        keys.append("⚪ vacuous: both final CAMs are flat for an image of the batch, so the comparison shows "
                    "nothing (not counted as passed)")
    if "ill-conditioned" in statuses:
        keys.append("⚖️ ill-conditioned: a tie (the sign of a projection, or two classes with equal scores) "
                    "decided the result, and rounding breaks it either way (not counted as passed or failed)")
    if "float32 only" in statuses:
        keys.append("🟡 over its bound in float32, within every float64 bound when rerun: rounding that the "
                    "method amplifies, not the port (neither passed nor failed; the case says why, and whether it "
                    "passes in float32 with Paddle's compiled engines off)")
    if any("·" in cell.split("<br>") for row in rows for cell in row):
        keys.append("· not part of this run")
    return lines + ["", "Cells: " + " · ".join(keys) + "."]


def _architecture_lines(cases: Sequence[Mapping]) -> List[str]:
    """One line per setup (or case) whose architectures differ: where, and the harness's words."""
    differ = [c for c in cases if case_status(c) == "architectures differ"]
    if not differ:
        return []
    by_setup: Dict[str, List[Mapping]] = {}
    for case in differ:
        by_setup.setdefault(case.get("setup") or case.get("model") or "", []).append(case)
    lines = []
    for setup, group in by_setup.items():
        layer = group[0].get("first_divergent_layer") or {}
        where = ""
        if layer.get("torch_path") or layer.get("paddle_path"):
            where = f" at torch {_code(layer.get('torch_path', '?'))} / paddle {_code(layer.get('paddle_path', '?'))}"
        name = setup or "this run"
        lines.append(f"- 🔶 **{_cell(name)}**{where} ({len(group)} case{'s' if len(group) != 1 else ''}): "
                     f"{_cell(group[0]['architecture_differs'])}")
    return ["Architectures differ (not counted as passed or failed):", ""] + lines + [""]


def _siblings_line(siblings: Optional[Mapping[str, str]], out_dir: Optional[Path],
                   companions: Iterable[str] = ()) -> str:
    """``**Reports:** [summary](parity_summary.md) · [index of every report](../README.md)``: files that exist.

    ``siblings`` are this report's own twins and the one index of every report
    (``sibling_reports``); a file that is not there (when ``out_dir`` is known)
    is left out unless it is one of ``companions``, written with this one.
    """
    if not siblings:
        return ""
    companions = set(companions)
    links = []
    for label, path in siblings.items():
        if not path:
            continue
        if out_dir is not None and path not in companions and not (Path(out_dir) / path).is_file():
            continue
        links.append(f"[{_cell(label)}]({quote(str(path), safe='/#+')})")
    return ("**Reports:** " + " · ".join(links)) if links else ""


def _scale_info(results: Mapping) -> Optional[Mapping]:
    info = results.get("diff_images")
    return info if isinstance(info, Mapping) and info.get("cases") else None


def _own_scale(case: Mapping, scale: Optional[Mapping]) -> bool:
    return scale is None or _case_id(case) not in set(scale.get("cases") or ())


def _scale_lines(results: Mapping, cases: Sequence[Mapping], img: _Images) -> List[str]:
    lines = [f"## {_heading_anchor('heatmap-scale')}The \\|Δ\\| heatmaps", ""]
    scale = _scale_info(results)
    if scale is None:
        return lines + [
            "Each |Δ| heatmap (|Paddle − PyTorch| of the final CAM, INFERNO colours, white where one side "
            "is NaN) is scaled to **its own maximum**, written under it and beside it: compare the numbers, "
            "not the brightness.", ""]
    own = [c for c in cases if _comparable(c) and _own_scale(c, scale)]
    if not scale.get("scale"):
        return lines + ["Every CAM pair drawn is identical: every |Δ| heatmap is black and says `identical`.", ""]
    if scale.get("floor"):
        bounds = ", ".join(_sci(b) for b in scale.get("bounds") or ()) or "none stated"
        lines += [
            f"Every |Δ| heatmap of this report (|Paddle − PyTorch| of the final CAM) uses **one logarithmic "
            f"scale**: black is {_sci(scale['floor'])} or less, the brightest colour {_sci(scale['scale'])} or more "
            f"({_cell(scale.get('rule'))}); white marks a pixel that is NaN on one side only. The bar under each "
            f"picture ticks its case's bound in white (bounds: {bounds}) and states its max\\|Δ\\| and 99.9th "
            "percentile.", ""]
    else:  # a run drawn before the log scale: its pictures keep the linear one they were drawn with
        lines += [
            f"Every |Δ| heatmap of this report (|Paddle − PyTorch| of the final CAM) uses **one linear scale**: "
            f"black is 0, the brightest colour is {_sci(scale.get('scale'))} ({_cell(scale.get('rule'))}); "
            "larger values saturate, white marks a pixel that is NaN on one side only. Each picture's own "
            "max\\|Δ\\| is the number beside it.", ""]
    if own:
        lines += [f"{len(own)} picture(s) could not be redrawn (their CAM files were missing) and keep their own "
                  "scale; they are marked _own scale_.", ""]
    if img.exists(scale.get("legend")):
        lines += [img(scale.get("legend"), "colour scale of every |Δ| heatmap", LEGEND_WIDTH), ""]
    if img.exists(scale.get("grid")):
        lines += ["<details><summary>Every case's |Δ| heatmap in one grid</summary>", "",
                  img(scale.get("grid"), "every case's |Δ| heatmap", GRID_WIDTH), "", "</details>", ""]
    return lines


def _diff_note(case: Mapping, scale: Optional[Mapping]) -> str:
    text = _sci(case.get("cam_max_abs_diff"))
    return text + (" (own scale)" if scale is not None and _own_scale(case, scale) else "")


def _ablation_lines(by_key: Mapping, setup: str, img: _Images, scale: Optional[Mapping]) -> List[str]:
    modes = [m for m in SMOOTH_MODES if (setup, "ablationcam", m) in by_key]
    lines = [f"## {_heading_anchor('ablationcam-across-the-smoothing-modes')}AblationCAM across the smoothing modes", ""]
    rows: Dict[str, List[str]] = {"Paddle": [], "PyTorch": [], "\\|Δ\\|": [], "max\\|Δ\\|": []}
    for mode in modes:
        case = by_key[(setup, "ablationcam", mode)]
        if case.get("error"):
            for row in rows.values():
                row.append("💥 error")
            continue
        files = _files(case)
        rows["Paddle"].append(img(files["paddle_cam_jpg"], f"Paddle ablationcam {mode}", GALLERY_WIDTH))
        rows["PyTorch"].append(img(files["torch_cam_jpg"], f"PyTorch ablationcam {mode}", GALLERY_WIDTH))
        rows["\\|Δ\\|"].append(img(files["diff_jpg"], f"absolute difference ablationcam {mode}", GALLERY_WIDTH))
        rows["max\\|Δ\\|"].append(_diff_note(case, scale))
    # folded: the same pictures as the cases', side by side across the modes
    return lines + [f"<details><summary>Paddle, PyTorch and |Δ| of AblationCAM in each of its {len(modes)} "
                    "modes</summary>", ""] + _table([""] + modes, [[name] + cells for name, cells in rows.items()]) \
        + ["", "</details>"]


def _methods_lines(by_key: Mapping, setup: str, methods: Sequence[str], img: _Images,
                   scale: Optional[Mapping], links: _Links) -> List[str]:
    present = [m for m in methods if (setup, m, "no_smooth") in by_key]
    title = f"The {len(present)} methods, no smoothing" if len(present) != 1 else "The method, no smoothing"
    lines = [f"## {_heading_anchor('methods-no-smoothing')}{title}", ""]
    rows = []
    for method in present:
        case = by_key[(setup, method, "no_smooth")]
        label = links.case(case, f"{_EMOJI[case_status(case)]} {_cell(method)}")
        if case.get("error"):
            rows.append([label, "💥 error", "💥 error", "💥 error", "—"])
            continue
        files = _files(case)
        rows.append([
            label,
            img(files["paddle_cam_jpg"], f"Paddle {method}", GALLERY_WIDTH),
            img(files["torch_cam_jpg"], f"PyTorch {method}", GALLERY_WIDTH),
            img(files["diff_jpg"], f"absolute difference {method}", GALLERY_WIDTH),
            _diff_note(case, scale),
        ])
    return lines + _table(["method", "Paddle", "PyTorch", "\\|Δ\\|", "max\\|Δ\\|"], rows)


def _seconds_cell(case: Mapping, side: str) -> str:
    text = _secs(case.get(f"{side}_seconds"))
    marks = []
    if (case.get("weights_reused") or {}).get(side):
        marks.append("r")
    if side == "torch" and case.get("torch_cached"):
        marks.append("c")
    return text + (f"<sup>{','.join(marks)}</sup>" if marks else "")


def _metrics_lines(cases: Sequence[Mapping], links: _Links, drawn: Optional[Mapping] = None) -> List[str]:
    """Every case in one table that fits the article; several setups are grouped under a row each.

    ``drawn`` is ``results["diff_images"]``, where an older run's 99.9th percentiles come from.
    """
    multi = len(_setups(cases)) > 1
    header = ["case", "max\\|Δ\\|", "p99.9 \\|Δ\\|", "of bound", "pixels identical %",
              "max grey Δ (0–255)", "first divergent stage", "paddle s", "torch s"]
    rows: List[List[str]] = []
    setup = None
    for case in cases:
        if multi and (case.get("setup") or "") != setup:
            setup = case.get("setup") or ""
            # A row that names the setup: a setup column would not fit beside the others.
            rows.append([f"_{_wrappable(setup or '(default)')}_"] + [""] * (len(header) - 1))
        status = case_status(case)
        first = case.get("first_divergent_stage")
        rows.append([
            links.case(case, f"{_EMOJI[status]} " + _wrappable(_short_id(case) if multi else _case_id(case))),
            _sci(case.get("cam_max_abs_diff")),
            _sci(_p999(case, drawn)),
            "—" if status in ("error", "architectures differ") else _of_bound(case),
            _percent_identical(case.get("overlay_identical_fraction")),
            _int(case.get("overlay_max_diff")),
            f"**{_cell(first)}**" if first else ("error" if status == "error" else "—"),
            _seconds_cell(case, "paddle"),
            _seconds_cell(case, "torch"),
        ])
    header, rows = _drop_empty_columns(header, rows)
    lines = _table(header, rows)
    notes = [f"max\\|Δ\\| and its share of the bound ({_bounds_note(cases)}), and the 99.9th percentile of "
             "\\|Δ\\| (all but one value in 1000 are at most it): the final CAM. Pixels identical: "
             "the share of the overlay's bytes (`show_cam_on_image`, uint8) that are the same on both sides; "
             "mean\\|Δ\\| and every stage are in each case's section."]
    if any("<sup>" in cell and "r" in cell.split("<sup>")[1] for row in rows for cell in row):
        notes.append("<sup>r</sup> the case's channel weights came from an earlier byte-identical pass in the same "
                     "worker (the eigen_smooth twin, or aug_smooth's identity variant), so that time is left out.")
    if any(case.get("torch_cached") for case in cases):
        notes.append("<sup>c</sup> upstream's result came from the cache; its seconds are those of the run that "
                     "filled it.")
    flagged = [case for case in cases if case.get("flags")]
    if flagged:
        # under the table, not as a column: a flag is a sentence, and most runs have none
        notes.append("Flags: " + "; ".join(
            links.case(case, _cell(_case_id(case))) + ": " + _cell(", ".join(str(f) for f in case["flags"]))
            for case in flagged) + ".")
    return lines + [""] + [" ".join(notes)]
