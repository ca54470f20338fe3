"""The numbers and words of ``python -m parity.bench``: medians and spreads, set-up, the ratio's colour, the heavy
methods' throughput arithmetic, and the markdown.  Pure functions of plain dicts (no torch, no paddle), so the
tests feed them made-up measurements."""
from __future__ import annotations

import json
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from parity.outcome import error_headline
from parity.registry import METHODS

__all__ = [
    "FRAMEWORKS", "NEAR_PARITY", "slower_reason_lines", "median", "ratio", "near_parity", "ratio_text", "summarize", "forwards_run",
    "gflops_per_second", "best_forward_throughput", "throughput_lines", "target_rate_line", "merged_parts",
    "render_markdown", "summary_lines",
    "render_json", "cell_key",
]

FRAMEWORKS = ("paddle", "torch")  # the order within each alternating pair
# A ratio this close to 1.0 is not settled by the first samples: the cell gets more before it counts.
NEAR_PARITY = 0.05
SMOOTH_WORDS = {"no_smooth": "no smoothing", "aug_smooth": "aug_smooth", "eigen_smooth": "eigen_smooth",
                "aug_eigen_smooth": "aug_smooth + eigen_smooth"}


def cell_key(model: str, batch: int, threads: int, smooth: str, method: str) -> str:
    return f"{model} b{batch} t{threads} {smooth} {method}"


# -- statistics ---------------------------------------------------------------------------
def median(values: Sequence[float]) -> Optional[float]:
    return float(statistics.median(values)) if values else None


def ratio(paddle: Optional[float], torch: Optional[float]) -> Optional[float]:
    if paddle is None or torch is None or torch <= 0:
        return None
    return paddle / torch


def near_parity(value: Optional[float], band: float = NEAR_PARITY) -> bool:
    return value is not None and abs(value - 1.0) <= band + 1e-12


def _setup(first_calls: Sequence[float], per_call: Optional[float], second_calls: Sequence[float] = ()) -> Optional[float]:
    """One-time cost of a process: its first call (and second, where timed apart) less as many median later calls
    (medians over processes)."""
    first = median(first_calls)
    if first is None or per_call is None:
        return None
    second = median(second_calls)
    return first - per_call if second is None else first + second - 2 * per_call


def summarize(samples: Dict[str, Dict[str, Dict[str, List]]]) -> Dict[str, Dict]:
    """Per cell and framework: median, min and max of the timed calls, set-up, peak memory, forwards; and the ratio.

    ``samples[cell][framework]`` holds lists: ``seconds`` (every timed call), ``first_call_seconds``
    (one per process), ``wall_seconds``, ``peak_rss_mb``, ``forward_count``, ``channels``,
    ``flops_per_forward`` and ``errors``.
    """
    summary: Dict[str, Dict] = {}
    for key, per_framework in samples.items():
        record: Dict = {}
        errors: List[str] = []
        for framework in FRAMEWORKS:
            data = per_framework.get(framework, {})
            seconds = list(data.get("seconds", []))
            record[f"{framework}_seconds"] = median(seconds)
            record[f"{framework}_samples"] = seconds
            record[f"{framework}_min"] = min(seconds) if seconds else None
            record[f"{framework}_max"] = max(seconds) if seconds else None
            record[f"{framework}_first_call_seconds"] = list(data.get("first_call_seconds", []))
            record[f"{framework}_second_call_seconds"] = list(data.get("second_call_seconds", []))
            record[f"{framework}_setup_seconds"] = _setup(record[f"{framework}_first_call_seconds"], record[f"{framework}_seconds"],
                                                          record[f"{framework}_second_call_seconds"])
            record[f"{framework}_wall_seconds"] = list(data.get("wall_seconds", []))
            peaks = list(data.get("peak_rss_mb", []))
            record[f"{framework}_peak_rss_mb"] = max(peaks) if peaks else None
            counts = [c for c in data.get("forward_count", []) if c is not None]
            record[f"{framework}_forward_count"] = counts[-1] if counts else None
            channels = [c for c in data.get("channels", []) if c is not None]
            record[f"{framework}_channels"] = channels[-1] if channels else None
            flops = [f for f in data.get("flops_per_forward", []) if f is not None]
            if flops:
                record["flops_per_forward"] = flops[-1]
            errors.extend(f"{framework}: {error}" for error in data.get("errors", []))
        record.setdefault("flops_per_forward", None)
        record["ratio"] = ratio(record["paddle_seconds"], record["torch_seconds"])
        record["errors"] = errors
        summary[key] = record
    return summary


# -- throughput of the heavy methods ------------------------------------------------------
def forwards_run(record: Dict, framework: str) -> Tuple[Optional[int], str]:
    """Single-image network forwards of one call and where the number comes from: the CAM's own count
    (``last_forward_count``), else upstream's B + B·C (the full forward of the batch, then one forward per
    channel of the target layer and image; at batch 1 the 1 + C of upstream's ScoreCAM and AblationCAM)."""
    counted = record.get(f"{framework}_forward_count")
    if counted is not None:
        return int(counted), "counted by the CAM"
    channels = record.get(f"{framework}_channels") or record.get("torch_channels") or record.get("paddle_channels")
    if channels is None:
        return None, "unknown"
    batch = int(record.get("batch", 1))
    return batch + batch * int(channels), "upstream's B + B·C"


def gflops_per_second(forwards: int, flops_per_forward: float, seconds: float) -> float:
    """Achieved GFLOP/s: single-image forwards × FLOPs of one single-image forward / seconds."""
    return forwards * flops_per_forward / seconds / 1e9


def best_forward_throughput(result: Dict, flops_per_forward: Optional[float]) -> Optional[Dict]:
    """The fastest (path, batch) of a throughput job, in GFLOP/s; ``result['seconds']`` is {path: {batch: s}}."""
    if not flops_per_forward:
        return None
    best = None
    for path, per_batch in (result.get("seconds") or {}).items():
        for batch, seconds in per_batch.items():
            if seconds and seconds > 0:
                rate = int(batch) * flops_per_forward / seconds / 1e9
                if best is None or rate > best["gflops_per_second"]:
                    best = {"path": path, "batch": int(batch), "seconds": seconds, "gflops_per_second": rate}
    return best


def throughput_lines(record: Dict, peak: Optional[Dict], network: Optional[Dict]) -> List[str]:
    """One line per framework for a heavy method's cell: forwards, FLOPs, GFLOP/s, against peak and the network."""
    flops = record.get("flops_per_forward")
    lines = []
    for framework in FRAMEWORKS:
        seconds = record.get(f"{framework}_seconds")
        forwards, source = forwards_run(record, framework)
        if seconds is None or forwards is None:
            lines.append(f"- {record['method']} ({framework}): not measured")
            continue
        text = f"- {record['method']} ({framework}): {forwards} single-image forwards ({source})"
        if not flops:
            lines.append(text + f" in {seconds:.3g} s; FLOPs per forward not counted")
            continue
        rate = gflops_per_second(forwards, flops, seconds)
        text += f" × {flops / 1e9:.3g} GFLOP per image in {seconds:.3g} s = **{rate:.1f} GFLOP/s**"
        if peak and peak.get("gflops_per_second"):
            text += f", {rate / peak['gflops_per_second']:.0%} of the measured peak ({peak['gflops_per_second']:.0f} GFLOP/s)"
        if peak and peak.get("gflops_per_second") and rate > peak["gflops_per_second"]:
            text += _above_peak_words(source, peak, network)
        if network and network.get("gflops_per_second"):
            text += (f", {rate / network['gflops_per_second']:.0%} of the network's best forward "
                     f"({network['gflops_per_second']:.1f} GFLOP/s, {network['path']} at batch {network['batch']})")
        lines.append(text)
    return lines


def _above_peak_words(source: str, peak: Dict, network: Optional[Dict]) -> str:
    """Why a heavy cell's rate can exceed the matmul peak, from what this run measured."""
    if source != "counted by the CAM":
        return (" — above the machine's peak, so this side runs fewer or smaller forwards than upstream's count says "
                "(the CAM does not count its own)")
    if network and (network.get("gflops_per_second") or 0) > peak["gflops_per_second"]:
        return (f" — above the matmul's peak, as the network's plain forward is too ({network['gflops_per_second']:.1f} "
                "GFLOP/s): this network's kernels reach more than the matmul does on this machine")
    return " — above the measured peak: other work on the machine slowed the matmul (see the load average)"


# Issue 22 (the bench's goals) asks ScoreCAM for 0.4x upstream's time: one forward per distinct mask, so
# its limit is those forwards at the best rate the machine reaches.
SCORECAM_TARGET_RATIO = 0.4


def target_rate_line(record: Dict, peak: Optional[Dict], network: Optional[Dict],
                     target: float = SCORECAM_TARGET_RATIO) -> Optional[str]:
    """Under a ScoreCAM cell: the rate ``target`` × upstream's time needs for the forwards this side ran, against
    the measured peak and the network's best forward; whether the target is out of reach here, measured."""
    flops = record.get("flops_per_forward")
    paddle_seconds, torch_seconds = record.get("paddle_seconds"), record.get("torch_seconds")
    forwards, source = forwards_run(record, "paddle")
    if record.get("method") != "scorecam" or not (flops and paddle_seconds and torch_seconds and forwards):
        return None
    budget = target * torch_seconds
    needed = gflops_per_second(forwards, flops, budget)
    achieved = gflops_per_second(forwards, flops, paddle_seconds)
    text = (f"- scorecam at {target:g}× upstream's time: {forwards} forwards ({source}) in {budget:.3g} s would need "
            f"**{needed:.1f} GFLOP/s**")
    limits = []
    if peak and peak.get("gflops_per_second"):
        limits.append(("the measured peak", peak["gflops_per_second"]))
    if network and network.get("gflops_per_second"):
        limits.append(("the network's best forward", network["gflops_per_second"]))
    text += "".join(f", {needed / rate:.0%} of {name} ({rate:.1f} GFLOP/s)" for name, rate in limits)
    if record.get("ratio") is not None and record["ratio"] <= target:
        return text + f"; met: it ran at {record['ratio']:.2f}× ({achieved:.1f} GFLOP/s)"
    if limits and needed > limits[-1][1]:
        # the limit is these forwards at the network's best measured rate; the matmul peak only where that is missing
        name, rate = limits[-1]
        return text + (f": out of reach on this machine with these forwards (more than {name}); it ran at "
                       f"{record['ratio']:.2f}× ({achieved:.1f} GFLOP/s, {achieved / rate:.0%} of {name})")
    return text + f": within this machine's rates, not met; it ran at {record['ratio']:.2f}× ({achieved:.1f} GFLOP/s)"


def _throughput_calls_words(network: Optional[Dict]) -> str:
    """How the forward figure was taken, from the records themselves (older files did not say)."""
    counts = {((network or {}).get(side) or {}).get("timed_calls") for side in ("paddle", "torch")}
    if len(counts) == 1 and None not in counts:
        return f"the fastest of {counts.pop()} calls after one untimed"
    return "its timed calls not counted in this file"


def slower_reason_lines(records: Sequence[Dict], network: Optional[Dict], batch: int) -> List[str]:
    """Under a table with cells above 1.0x: the plain network forward of both frameworks, measured in the same run.

    The light methods are one forward (and one backward) plus numpy; where
    Paddle's dynamic-graph forward alone costs more than torch's, that is the
    measured reason a method built on it (FullGrad) cannot reach 1.0x.  The
    others run their forward, or its part before the target layer, in the
    predictor: when that is at least as fast as torch's, the line says the
    forward does not explain them.
    """
    slower = [r["method"] for r in records if r.get("ratio") is not None and r["ratio"] > 1.0]
    if not slower:
        return []
    text = f"Above 1.0×: {', '.join(slower)}."
    forward_only = [m for m in slower if m in METHODS and not METHODS[m].uses_gradients]
    paddle = ((network or {}).get("paddle") or {}).get("seconds") or {}
    torch = ((network or {}).get("torch") or {}).get("seconds") or {}
    eager, compiled, reference = paddle.get("paddle eager") or {}, paddle.get("paddle predictor") or {}, torch.get("torch eager") or {}
    shared = [b for b in (str(batch), "1") if b in eager and b in reference]
    if not shared:
        return ["", text + " (the plain network forward was not measured in this run)"]
    b = shared[0]
    text += (f" The network's plain forward at batch {b}, measured in this run at the same thread count "
             f"({_throughput_calls_words(network)}): Paddle's dynamic graph {eager[b]:.3g} s, torch {reference[b]:.3g} s "
             f"({eager[b] / reference[b]:.2f}×)")
    if b in compiled:
        text += f"; Paddle's compiled predictor {compiled[b]:.3g} s ({compiled[b] / reference[b]:.2f}×)"
    text += (". FullGrad runs that forward, and a backward to the input, in the dynamic graph. The forward-only methods "
             "run it in the predictor, and so does a gradient method for the part before its target layer (from its "
             "second call for an input shape, where the model's export passes its check), the rest in the dynamic "
             "graph, where the gradient is taken.")
    if b in compiled and compiled[b] <= reference[b]:
        on_predictor = [m for m in slower if not (m in METHODS and METHODS[m].recipe == "fullgrad")]
        if on_predictor:
            its = "its" if len(on_predictor) == 1 else "their"
            kinds = " and ".join(k for k, members in (("forward-only", forward_only),
                                                        ("the part before the target layer", [m for m in on_predictor if m not in forward_only]))
                                 if members)
            text += (f" So the forward does not explain {', '.join(on_predictor)} ({kinds} on the predictor): the rest "
                     f"of {its} call is not measured apart in this run.")
    return ["", text]


# -- rendering ----------------------------------------------------------------------------
def seconds_text(value: Optional[float]) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def setup_text(value: Optional[float]) -> str:
    """Set-up is a difference of two noisy times: a small negative one reads as none."""
    if value is not None and value < 0:
        return "≈0"
    return seconds_text(value)


def _spread(record: Dict, framework: str) -> str:
    low, high = record.get(f"{framework}_min"), record.get(f"{framework}_max")
    if low is None or len(record.get(f"{framework}_samples", [])) < 2:
        return seconds_text(record.get(f"{framework}_seconds"))
    return f"{seconds_text(record.get(f'{framework}_seconds'))} ({seconds_text(low)}–{seconds_text(high)})"


def ratio_text(value: Optional[float]) -> str:
    """The ratio with its colour: 🟢 when the port is as fast or faster, 🔴 when it is slower."""
    if value is None:
        return "—"
    return ("🟢 " if value <= 1.0 else "🔴 ") + _ratio_number(value)


def _ratio_number(value: float) -> str:
    # two decimals would print AblationCAM's 0.0077 as 0.01
    return f"{value:.2g}×" if value < 0.1 else f"{value:.2f}×"


def _memory(record: Dict, framework: str) -> str:
    value = record.get(f"{framework}_peak_rss_mb")
    if value is None:
        return "—"
    text = f"{value:.0f}"
    torch_peak = record.get("torch_peak_rss_mb")
    if framework == "paddle" and torch_peak is not None and value > torch_peak:
        text += " ⚠️"
    return text


def samples_text(record: Dict) -> str:
    counts = [len(record.get(f"{framework}_samples", [])) for framework in FRAMEWORKS]
    text = f"{counts[0]} each" if counts[0] == counts[1] else ", ".join(f"{f} {c}" for f, c in zip(FRAMEWORKS, counts))
    if record.get("remeasured_pairs"):
        text += f" (near 1.0×: +{record['remeasured_pairs']} pairs)"
    if record.get("errors"):
        text += f" ({len(record['errors'])} failed)"
    if record.get("part"):
        text += f" · part {record['part']}"
    return text


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def load_lines(machine: Dict) -> List[str]:
    before, after = machine.get("load_average_before"), machine.get("load_average_after")
    if not before and not after:
        return []
    line = (f"- Load average (1/5/15 min): {', '.join(map(str, before)) if before else '?'} before, "
            f"{', '.join(map(str, after)) if after else '?'} after")
    cores = machine.get("cores") or 0
    # The bench's own runs keep up to `threads` cores busy, so they count in the load "after" but not "before".
    threads = machine.get("threads") or 0
    own = max(threads) if isinstance(threads, list) and threads else threads if isinstance(threads, int) else 0
    others = max((before or [0])[0], (after or [0])[0] - own)
    if cores and others > 0.5 * cores:
        line += (f" — ⚠️ the {cores}-core machine was busy just before or during the run (the 1-minute average "
                 "also counts work that ended up to a minute or so before the bench began), so these times may "
                 "be noisier than usual")
    return [line]


def project_words(project) -> str:
    """``commit `4a53b7f…` (clean tree)``; older bench.json files recorded no commit."""
    if not isinstance(project, dict) or not project.get("commit"):
        return "commit not recorded"
    state = {True: "uncommitted changes", False: "clean tree"}.get(project.get("dirty"), "tree state unknown")
    return f"commit `{project['commit'][:12]}` ({state})"


def _project_line(machine: Dict, settings: Dict) -> str:
    projects = settings.get("merged_projects")
    commits = {(p or {}).get("commit") for p in projects or []}
    if projects and len(commits) > 1:
        return (f"- Project: the {len(projects)} parts were measured at different commits, each named on its line "
                "below; a row's samples column names its part")
    return f"- Project: {project_words(machine.get('project'))}"


def merged_parts(settings: Dict, strict: bool = False) -> List[Tuple]:
    """(command, project, date) of each part of a merged report, in order; project and date None where a part did
    not record them.  ``strict``: ValueError where the three lists' lengths differ (else the shortest decides)."""
    commands = settings.get("merged_commands") or []
    projects = settings.get("merged_projects") or [None] * len(commands)
    dates = settings.get("merged_dates") or [None] * len(commands)
    return list(zip(commands, projects, dates, strict=strict))


def _part_lines(settings: Dict) -> List[str]:
    """One line per merged part: its command, and (when recorded) its commit and date."""
    lines = []
    for i, (command, project, date) in enumerate(merged_parts(settings), 1):
        if not command:
            continue
        where = ", ".join(w for w in (project_words(project) if project else "", date or "") if w)
        lines.append(f"- Part {i}" + (f" ({where})" if where else "") + f": `{command}`")
    return lines


def _duration(value: Optional[float]) -> str:
    if value is None:
        return "not measured"
    text = f"{value:.1f} s"
    if value >= 60:
        minutes, secs = divmod(int(round(value)), 60)
        hours, minutes = divmod(minutes, 60)
        text += f" ({hours} h {minutes:02d} min {secs:02d} s)" if hours else f" ({minutes} min {secs:02d} s)"
    return text


def _command_text(command: Optional[str]) -> str:
    """The recorded command in a code span, and the words about how it ran (after " on ") as prose."""
    command, on, conditions = (command or "make parity").partition(" on ")
    return f"`{command}`" + (f" on {conditions}" if on else "")


def _groups(cells: Dict[str, Dict]) -> Dict[Tuple, List[Dict]]:
    groups: Dict[Tuple, List[Dict]] = {}
    for record in cells.values():
        groups.setdefault((record["model"], record["batch"], record["threads"], record["smooth"]), []).append(record)
    return groups


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _table_title(model: str, batch: int, thread_count: int, smooth: str) -> str:
    return (f"{model} · batch {batch} · {thread_count} thread{'s' if thread_count != 1 else ''} · "
            f"{SMOOTH_WORDS.get(smooth, smooth)}")


def _ratio_range(records: Sequence[Dict]) -> str:
    values = [record["ratio"] for record in records if record.get("ratio") is not None]
    if not values:
        return "—"
    low, high = min(values), max(values)  # coloured by the slowest cell
    return ratio_text(high) if low == high else f"{ratio_text(high)[:2]}{_ratio_number(low)}–{_ratio_number(high)}"


def _slower(record: Dict) -> bool:
    return (record.get("ratio") or 0.0) > 1.0


def _heavier(record: Dict) -> bool:
    paddle, torch = record.get("paddle_peak_rss_mb"), record.get("torch_peak_rss_mb")
    return paddle is not None and torch is not None and paddle > torch


def _names(records: Sequence[Dict]) -> str:
    return ", ".join(record["method"] for record in records) or "none"


def summary_lines(cells: Dict[str, Dict]) -> List[str]:
    """One row per table: its ratios (light methods and ScoreCAM/AblationCAM apart), the cells slower than upstream,
    and those where Paddle's peak memory is above torch's, so that a reviewer sees the whole report on one screen
    before its tables."""
    records = list(cells.values())
    slower, heavier = sum(map(_slower, records)), sum(map(_heavier, records))
    missing = sum(record.get("ratio") is None for record in records)
    verdict = (f"{len(records)} cells: "
               + (f"{slower} slower than upstream" if slower else "every one at or below upstream's time")
               + (f", {missing} without a ratio (a side failed)" if missing else "")
               + "; Paddle's peak memory "
               + (f"above torch's in {heavier}" if heavier else "below torch's in every one") + ".")
    lines = ["", "## Summary", "", verdict, "",
             "| table | cells | light methods | ScoreCAM, AblationCAM | slower than upstream | Paddle's peak above "
             "torch's |", "|---|---:|---|---|---|---|"]
    for (model, batch, thread_count, smooth), group in _groups(cells).items():
        light = [record for record in group if not record.get("heavy")]
        heavy_text = ", ".join(f"{record['method']} {ratio_text(record.get('ratio'))}"
                               for record in group if record.get("heavy")) or "—"
        lines.append(
            f"| {_table_title(model, batch, thread_count, smooth)} | {len(group)} | "
            f"{_ratio_range(light) if light else '—'} | {heavy_text} | "
            f"{_names([r for r in group if _slower(r)])} | {_names([r for r in group if _heavier(r)])} |")
    return lines


def render_markdown(data: Dict) -> str:
    """``NAME.md`` from the dict that is also written as ``NAME.json``."""
    machine, settings = data["machine"], data["settings"]
    versions = machine.get("versions", {})
    size = settings.get("image_size")
    size_text = f"{size[0]}×{size[1]}" if size else "its own size"
    threads = settings.get("threads") or []
    second_timed = any(record.get(f"{framework}_second_call_seconds")
                       for record in data["cells"].values() for framework in FRAMEWORKS)
    lines = [
        "# Paddle vs PyTorch Grad-CAM timing",
        "",
        f"- Machine: {machine['cpu']} ({machine['cores']} cores), {machine.get('platform', '')}".rstrip(", "),
        "- Versions: " + ", ".join(f"{k} {versions[k]}" for k in ("python", "paddlepaddle", "torch", "torchvision", "grad-cam", "numpy") if k in versions),
        f"- Date: {machine['date']}",
        _project_line(machine, settings),
        *load_lines(machine),
        f"- Input: `{settings['image']}` at {size_text}, {settings['dtype']}, {settings['device']}; seeded weights; "
        "ResNet50 at `layer4`, every other model at its default target layer",
        f"- Command: `{settings['command']}`",
        *_part_lines(settings),
        *summary_lines(data["cells"]),
        "",
        "Each framework ran in its own fresh process, alternately (paddle, torch, paddle, torch, …), with the "
        f"thread count of its table ({', '.join(map(str, threads))}; `torch.set_num_threads` / Paddle's `set_num_threads` "
        "and the OpenMP/MKL/OpenBLAS variables). In each process the CAM is built and called as a user calls it, "
        "with no recording hooks: the first call is timed on its own"
        + (", and for the light methods the second too (a gradient method builds its predictor on the second call "
           "for an input shape)" if second_timed else "") + ", then "
        f"{settings.get('calls', 1)} more call{'s' if settings.get('calls', 1) != 1 else ''} on the same object "
        f"({settings.get('heavy_calls', 1)} for ScoreCAM and AblationCAM; with 0 their one call, set-up included, is "
        "the sample" + ("; those are the first part's settings, each part's own are in its command above, "
                        "and a row's samples column counts its own" if settings.get("merged_commands") else "") + "). "
        "**s/call** is the median of those later calls over all processes, with min–max in brackets "
        f"({_count(settings['repeat'], 'process', 'processes')} per framework for the light methods, {settings['heavy_repeat']} for ScoreCAM "
        "and AblationCAM; a cell whose ratio came out within ±5% of 1.0× got "
        f"{_count(settings.get('remeasure_pairs', 0), 'more pair', 'more pairs')} before it counted). **set-up s** is the median first call "
        + ("(plus the median second, where timed apart) less as many median later calls" if second_timed
           else "less the median later call")
        + ": one-time costs such as building Paddle's inference predictors or creating oneDNN "
        "primitives. paddle/torch is the ratio of the per-call medians: 🟢 at or below 1.0×, 🔴 above. "
        "**peak MiB** is the worker's peak resident memory (`ru_maxrss`: interpreter, framework, model and calls); "
        "⚠️ marks Paddle above torch.",
    ]
    peaks = {int(k): v for k, v in (data.get("peak") or {}).items()}
    networks = data.get("network_throughput") or {}
    for (model, batch, thread_count, smooth), records in _groups(data["cells"]).items():
        lines += ["", f"## {_table_title(model, batch, thread_count, smooth)}", "",
                  "| method | paddle s/call | torch s/call | paddle/torch | paddle set-up s | torch set-up s "
                  "| paddle peak MiB | torch peak MiB | samples |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for record in records:
            lines.append(
                f"| {record['method']} | {_spread(record, 'paddle')} | {_spread(record, 'torch')} "
                f"| {ratio_text(record['ratio'])} | {setup_text(record.get('paddle_setup_seconds'))} "
                f"| {setup_text(record.get('torch_setup_seconds'))} | {_memory(record, 'paddle')} "
                f"| {_memory(record, 'torch')} | {samples_text(record)} |")
        lines += slower_reason_lines(records, networks.get(f"{model} t{thread_count}"), batch)
        heavy = [record for record in records if record.get("heavy")]
        if heavy:
            lines.append("")
            network = networks.get(f"{model} t{thread_count}")
            for record in heavy:
                lines += throughput_lines(record, peaks.get(thread_count), (network or {}).get("best"))
                target_line = target_rate_line(record, peaks.get(thread_count), (network or {}).get("best"))
                lines += [target_line] if target_line else []
    if peaks:
        lines += ["", "## Measured peak", ""]
        for count, peak in sorted(peaks.items()):
            lines.append(f"- {count} thread{'s' if count != 1 else ''}: {peak['gflops_per_second']:.1f} GFLOP/s "
                         f"(torch float32 {peak['matmul_size']}×{peak['matmul_size']} matmul, best of its runs)")
    if networks:
        lines += ["", "## Plain network forward, best path", ""]
        for key, network in networks.items():
            best = network.get("best")
            if best:
                lines.append(f"- {key}: {best['gflops_per_second']:.1f} GFLOP/s ({best['path']}, batch {best['batch']}, "
                             f"{best['seconds']:.3g} s per forward); every path and batch in the JSON")
    failed = [(key, error) for key, record in data["cells"].items() for error in record.get("errors", [])]
    if failed:
        lines += ["", "## Failed runs", ""]
        for key, error in failed:
            lines.append(f"- {key}: {_escape(error_headline(error) if error.strip() else 'failed')}")
    timing = data.get("parity_run")
    if timing:
        lines += [
            "", "## Full parity run", "",
            f"Wall time of {_command_text(timing.get('command'))} ({timing.get('date') or 'date not recorded'}):",
            "", "| run | wall time |", "|---|---:|",
            f"| cold (no cached upstream results) | {_duration(timing.get('cold_seconds'))} |",
            f"| warm (upstream results cached) | {_duration(timing.get('warm_seconds'))} |",
        ]
        if timing.get("source"):
            lines += ["", f"From `{timing['source']}`."]
    return "\n".join(lines) + "\n"


def render_json(data: Dict) -> str:
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


def table_for_stdout(data: Dict) -> str:
    rows = [("cell", "paddle s", "torch s", "paddle/torch", "samples")]
    for key, record in data["cells"].items():
        rows.append((key, seconds_text(record["paddle_seconds"]), seconds_text(record["torch_seconds"]),
                     ratio_text(record["ratio"]), samples_text(record)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
