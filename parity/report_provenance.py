"""The report's provenance table: where the numbers came from (commit, versions, machine, image, weights)."""
from __future__ import annotations

import html
import re
from typing import Callable, Dict, List, Mapping, Sequence

from parity.provenance import portable_command
from parity.report_format import DEFAULT_IMAGE, _cell, _code, _heading_anchor, _secs, _table

def _schedule_words(schedule) -> str:
    """The schedule as a sentence; older reports recorded a dict (the same words as parity.schedule's)."""
    if not isinstance(schedule, dict):
        return str(schedule)

    def count(number: int, one: str, many: str) -> str:
        return f"{number} {one if number == 1 else many}"

    cached = int(schedule.get("cached_jobs", 0)) + int(schedule.get("cached_units", 0))
    units = int(schedule.get("weights_units", 0))
    return (f"{count(cached, 'upstream result', 'upstream results')} from the cache; "
            f"{count(int(schedule.get('worker_jobs', 0)), 'worker process', 'worker processes')} to run"
            + (f" ({count(units, 'weights unit', 'weights units')})" if units else "")
            + f", {schedule.get('workers', 1)} at a time, "
            + count(int(schedule.get('threads_per_worker', 1)), "thread", "threads") + " each")


_FLAT_WEIGHT_KEYS = ("source", "identity", "torch_path", "torch_sha256", "paddle_path", "paddle_sha256")


def _weights_by_model(weights: Mapping) -> Dict[str, Dict]:
    """``{model: {source, identity, torch_path, ...}}``; an older report's one flat dict is keyed ``""``."""
    if not weights:
        return {}
    if any(key in weights and not isinstance(weights[key], dict) for key in _FLAT_WEIGHT_KEYS):
        return {"": dict(weights)}
    return {str(model): dict(info or {}) for model, info in weights.items()}


def _path_code(path) -> str:
    """A path as code that may wrap after each ``/`` and ``-`` (a converted checkpoint's name is 140 characters)."""
    escaped = html.escape(str(path)).replace("|", "\\|")
    return "<code>" + escaped.replace("/", "/<wbr>").replace("-", "-<wbr>") + "</code>"


def _weights_text(weights: Mapping) -> str:
    models = _weights_by_model(weights)
    parts = []
    for model, info in models.items():
        head = [f"**{_cell(model)}**"] if model else []
        head.append(f"source: {_cell(info.get('source', '?'))}")
        if info.get("identity"):
            head.append(f"identity {_code(info['identity'])}")
        lines = [" · ".join(head)]
        for side in ("torch", "paddle"):
            if info.get(f"{side}_path") or info.get(f"{side}_sha256"):
                line = f"{side}: {_path_code(info.get(f'{side}_path', '?'))}"
                if info.get(f"{side}_sha256"):
                    line += f"<br>sha256 {_code(info[f'{side}_sha256'])}"
                lines.append(line)
        for key, value in info.items():
            if key not in _FLAT_WEIGHT_KEYS and value not in (None, ""):
                # a hub pair names two long model ids: let it wrap at its separators
                lines.append(f"{_cell(key)}: " + _cell(value).replace("/", "/<wbr>").replace(":", ":<wbr>"))
        parts.append("<br>".join(lines))
    text = "<br>".join(parts)
    if len(models) > 2:
        # A zoo run names a dozen models: keep the table short, the identities one click away.
        text = f"<details><summary>{len(models)} models: {_cell(', '.join(models))}</summary>{text}</details>"
    return text


# parity.hub_transfer.SwitchCheck.sentence proves each switch with one "without 'NAME': <the check's failure>".
_SWITCH_PROOF = re.compile(r"without (['\"])(.+?)\1: ")


def switch_names(facts: Mapping) -> List[str]:
    """The switches a hub pair's conversion applied, each one shown to be needed, read from its weights facts."""
    return [match.group(2) for match in _SWITCH_PROOF.finditer(str(facts.get("switches") or ""))]


def _switches_of(results: Mapping, model: str) -> List[str]:
    return switch_names(_weights_by_model((results.get("provenance") or {}).get("weights") or {}).get(model, {}))


def switch_line(results: Mapping, model: str) -> str:
    """One line naming the switches applied to ``model``'s Paddle model ("" when it has none)."""
    names = _switches_of(results, model)
    if not names:
        return ""
    return ("Switches applied to the Paddle model, each shown to be needed: " + " · ".join(_code(n) for n in names)
            + " (the proof is in the [provenance](#provenance)'s weights)")


def switch_lines(results: Mapping, cases: Sequence[Mapping]) -> List[str]:
    """The first screen's list: each model of the run with switches, one line each, names only."""
    models = dict.fromkeys(str(case.get("model")) for case in cases if case.get("model"))
    rows = [f"- **{_cell(model)}**: " + " · ".join(_code(n) for n in names)
            for model in models for names in [_switches_of(results, model)] if names]
    if not rows:
        return []
    return ["Switches applied to the Paddle model, each shown to be needed: without it the transfer's forward check "
            "fails (the proof is in the [provenance](#provenance)'s weights):", ""] + rows + [""]


def _project_text(project) -> str:
    if not isinstance(project, Mapping):
        return _cell(project)
    commit = project.get("commit")
    if not commit:
        return "not a git checkout (commit unknown)"
    dirty = project.get("dirty")
    state = ("**dirty**: uncommitted changes" if dirty else "clean") if dirty is not None else "state unknown"
    return f"commit {_code(commit)} · {state}"


def _fallback_lines(results: Mapping) -> List[str]:
    """The loud warning of a run that did not use the reference image (empty when it did)."""
    image = (results.get("provenance") or {}).get("image") or {}
    if not image.get("fallback"):
        return []
    requested = image.get("requested") or DEFAULT_IMAGE
    return [
        f"> ⚠️ **WARNING: `{requested}` was not used.** This run used the fallback image "
        f"`{image.get('path', '?')}` instead" + (f" ({image['note']})" if image.get("note") else "")
        + ", so its numbers are not comparable with the reference run.",
        "",
    ]


def _provenance_lines(results: Mapping) -> List[str]:
    prov = dict(results.get("provenance") or {})
    lines = [f"## {_heading_anchor('provenance')}Provenance", ""]
    image = dict(prov.pop("image", None) or {})
    weights = prov.pop("weights", None) or {}

    lines += _fallback_lines(results)

    rows: List[List[str]] = []

    def take(key: str, label: str, render: Callable = _cell) -> None:
        if key in prov:
            value = prov.pop(key)
            if value is not None and value != "" and value != {}:
                rows.append([label, render(value)])

    take("project", "project", _project_text)
    take("date", "date")
    take("command", "command", lambda v: _code(portable_command(v)))
    versions = []
    for key in ("python", "torch", "torchvision", "paddlepaddle", "grad-cam", "numpy", "opencv"):
        if key in prov:
            versions.append(f"{key} {_cell(prov.pop(key))}")
    if versions:
        rows.append(["versions", " · ".join(versions)])
    take("platform", "platform")
    take("cpu", "cpu")
    take("device", "device")
    take("dtype", "dtype")
    take("profile", "profile")
    if image:
        text = _code(image.get("path", "?"))
        if image.get("sha256"):
            text += f"<br>sha256 {_code(image['sha256'])}"
        if image.get("size"):
            size = image["size"]
            text += "<br>file size " + ("×".join(str(s) for s in size) if isinstance(size, (list, tuple)) else _cell(size))
        ran_at = sorted({"×".join(str(v) for v in c["size"]) for c in results.get("cases") or []
                         if isinstance(c.get("size"), (list, tuple)) and c.get("size")})
        if ran_at:
            # the file's size is not what the cases saw: say what they ran at
            text += "<br>cases ran at " + ", ".join(ran_at) + " (W×H)"
        if image.get("note"):
            text += f"<br>note: {_cell(image['note'])}"
        if image.get("fallback"):
            text += "<br>**⚠️ fallback image, not the reference fixture**"
        for key, value in image.items():
            if key not in ("path", "sha256", "note", "fallback", "requested", "size") and value not in (None, ""):
                text += f"<br>{_cell(key)}: {_cell(value)}"
        rows.append(["image", text])
    if weights:
        rows.append(["weights", _weights_text(weights)])
    take("target_rule", "target rule")
    take("threads", "threads per worker")
    take("jobs", "jobs")
    take("cache", "upstream cache")
    take("schedule", "schedule", lambda v: _cell(_schedule_words(v)))
    take("wall_seconds", "wall time", lambda v: f"{_secs(v)} s")
    for key, value in prov.items():  # anything the harness adds later still shows up
        if value is None or value == "":
            continue
        rendered = _code(value) if isinstance(value, (dict, list)) else _cell(value)
        rows.append([_cell(key), rendered])
    lines += _table(["field", "value"], rows)
    return lines
