"""``python -m parity.bench``: how long each CAM method takes in the Paddle port and in upstream pytorch_grad_cam.

For every selected method (no smoothing, target layer ``layer4``, the image at
its own size unless ``--size``) the Paddle worker and the upstream torch
worker (``python -m parity.worker``) are run *alternately* -- paddle, torch,
paddle, torch, ... -- each in a fresh process of its own with the same
explicit thread count (``torch.set_num_threads`` / Paddle's
``set_num_threads``, and ``OMP_NUM_THREADS`` = ``MKL_NUM_THREADS`` =
``OPENBLAS_NUM_THREADS`` in the child's environment).  Alternating spreads any
drift of the machine (other load, thermal state) over both frameworks instead
of handing it to whichever ran second.

The time that counts is the worker's own ``seconds``: the ``cam(...)`` call
alone, without imports, model construction or weight loading.  The process
wall time is recorded too.  Per framework the median of the samples is
reported, and paddle/torch is the ratio of the medians.

Output: ``OUT/bench.json`` (machine, versions, settings, every sample) and
``OUT/bench.md`` (a table, plus the wall times of a full ``make parity`` run
when a timing file is given with ``--parity-log`` or found at
``OUT/parity_timing.json`` or ``reports/parity_timing.json``).  Both are
written atomically.  A progress line per run goes to stderr, the table to
stdout at the end.

This process imports neither torch nor paddle: the workers do.  Exit status:
0 when every run succeeded, 1 when some run failed (its method is reported as
an error), 2 for bad arguments, 130 when interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from paddle_impl.atomic import write_text
from parity.cli import _csv_choices, _positive_int
from parity.provenance import cpu_name, package_versions, project_state
from parity.registry import METHODS, SEED_METHODS, resolve_methods
from parity.worker import THREAD_ENV_VARS, WorkerJob, worker_environment

__all__ = [
    "FRAMEWORKS",
    "schedule",
    "summarize",
    "render_markdown",
    "render_json",
    "load_parity_timing",
    "build_parser",
    "main",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = REPO_ROOT / "fixtures" / "both.png"
DEFAULT_PARITY_TIMING = REPO_ROOT / "reports" / "parity_timing.json"
PARITY_TIMING_NAME = "parity_timing.json"
TARGET_LAYER = "layer4"
DEFAULT_MODEL = "resnet50"
FRAMEWORKS = ("paddle", "torch")  # the order within each alternating pair
LOG_TAIL_CHARS = 2000


# -- the plan -----------------------------------------------------------------------------
def schedule(methods: Sequence[str], repeat: int, heavy_repeat: int) -> List[Tuple[str, str]]:
    """The runs, in order: for each method, ``n`` pairs (paddle, torch), where ``n`` is
    ``heavy_repeat`` for methods that rerun the network once per channel and ``repeat`` otherwise."""
    runs: List[Tuple[str, str]] = []
    for name in methods:
        count = heavy_repeat if METHODS[name].reruns_network_per_channel else repeat
        for _ in range(count):
            runs.extend((name, framework) for framework in FRAMEWORKS)
    return runs


# -- summarising --------------------------------------------------------------------------
def _median(values: Sequence[float]) -> Optional[float]:
    return float(statistics.median(values)) if values else None


def _ratio(paddle: Optional[float], torch: Optional[float]) -> Optional[float]:
    if paddle is None or torch is None or torch <= 0:
        return None
    return paddle / torch


def summarize(samples: Dict[str, Dict[str, Dict[str, List]]]) -> Dict[str, Dict]:
    """Per method: medians, ratio, the largest peak memory and every sample, from
    ``{method: {framework: {"seconds": [...], "wall_seconds": [...], "peak_rss_mb": [...], "errors": [...]}}}``."""
    summary: Dict[str, Dict] = {}
    for name, per_framework in samples.items():
        record: Dict = {}
        errors: List[str] = []
        for framework in FRAMEWORKS:
            data = per_framework.get(framework, {})
            seconds = list(data.get("seconds", []))
            record[f"{framework}_seconds"] = _median(seconds)
            record[f"{framework}_samples"] = seconds
            record[f"{framework}_wall_seconds"] = list(data.get("wall_seconds", []))
            peaks = list(data.get("peak_rss_mb", []))
            record[f"{framework}_peak_rss_mb"] = max(peaks) if peaks else None
            errors.extend(f"{framework}: {error}" for error in data.get("errors", []))
        record["ratio"] = _ratio(record["paddle_seconds"], record["torch_seconds"])
        record["errors"] = errors
        summary[name] = record
    return summary


# -- rendering ----------------------------------------------------------------------------
def _seconds(value: Optional[float]) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _mib(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.0f}"


def _ratio_text(value: Optional[float]) -> str:
    if value is None:
        return "—"
    # two decimals would print AblationCAM's 0.0077 as 0.01, right on its target
    return f"{value:.2g}×" if value < 0.1 else f"{value:.2f}×"


def _duration(value: Optional[float]) -> str:
    if value is None:
        return "not measured"
    text = f"{value:.1f} s"
    if value >= 60:
        minutes, secs = divmod(int(round(value)), 60)
        hours, minutes = divmod(minutes, 60)
        text += f" ({hours} h {minutes:02d} min {secs:02d} s)" if hours else f" ({minutes} min {secs:02d} s)"
    return text


def _samples_text(record: Dict) -> str:
    counts = [len(record.get(f"{framework}_samples", [])) for framework in FRAMEWORKS]
    text = f"{counts[0]} each" if counts[0] == counts[1] else ", ".join(f"{f} {c}" for f, c in zip(FRAMEWORKS, counts))
    if record.get("errors"):
        text += f" ({len(record['errors'])} failed)"
    return text


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _load_lines(machine: Dict) -> List[str]:
    before, after = machine.get("load_average_before"), machine.get("load_average_after")
    if not before and not after:
        return []
    line = (f"- Load average (1/5/15 min): {', '.join(map(str, before)) if before else '?'} before, "
            f"{', '.join(map(str, after)) if after else '?'} after")
    cores = machine.get("cores") or 0
    # The bench's own runs keep `threads` cores busy, so they count in the load "after" but not "before".
    own = machine.get("threads") or 0
    others = max((before or [0])[0], (after or [0])[0] - own)
    if cores and others > 0.5 * cores:
        line += (f" — the {cores}-core machine was busy just before or during the run (the 1-minute average "
                 "also counts work that ended up to a minute or so before the bench began), so these times may "
                 "be noisier than usual")
    return [line]


def _project_words(project) -> str:
    """``commit `4a53b7f…` (clean tree)``; older bench.json files recorded no commit."""
    if not isinstance(project, dict) or not project.get("commit"):
        return "commit not recorded"
    state = {True: "uncommitted changes", False: "clean tree"}.get(project.get("dirty"), "tree state unknown")
    return f"commit `{project['commit'][:12]}` ({state})"


def render_markdown(data: Dict) -> str:
    """``bench.md`` from the dict that is also written as ``bench.json``."""
    machine, settings = data["machine"], data["settings"]
    versions = machine.get("versions", {})
    threads = settings["threads"]
    size = settings.get("image_size")
    size_text = f"{size[0]}×{size[1]}" if size else "its own size"
    lines = [
        "# Paddle vs PyTorch Grad-CAM timing",
        "",
        f"- Machine: {machine['cpu']} ({machine['cores']} cores), {machine.get('platform', '')}".rstrip(", "),
        "- Versions: " + ", ".join(f"{k} {versions[k]}" for k in ("python", "paddlepaddle", "torch", "torchvision", "grad-cam", "numpy") if k in versions),
        f"- Date: {machine['date']}",
        f"- Project: {_project_words(machine.get('project'))}",
        *_load_lines(machine),
        f"- Input: `{settings['image']}` at {size_text}, {settings['dtype']}, {settings['device']}, no smoothing; "
        f"models (seeded weights): {_models_text(settings)}",
        f"- Command: `{settings['command']}`",
        "",
        f"Each framework ran in its own fresh process, alternately (paddle, torch, paddle, torch, …), "
        f"with {threads} thread{'s' if threads != 1 else ''} "
        f"(`torch.set_num_threads` / Paddle's `set_num_threads`, and {', '.join(f'`{v}`' for v in THREAD_ENV_VARS)} = {threads}). "
        f"The times are the `cam(...)` call only (imports and model loading excluded), the median of the samples: "
        f"{settings['repeat']} per framework for the gradient and eigen methods, "
        f"{settings['heavy_repeat']} for the methods that rerun the network per channel (ScoreCAM, AblationCAM). "
        "paddle/torch is the ratio of the medians (above 1: the port is slower). "
        "Peak MiB is the largest peak resident memory of a worker process (`ru_maxrss`: the interpreter, "
        "the framework, the model and the `cam(...)` call together). "
        "Every sample and each process's wall time are in `bench.json`.",
        "",
    ]
    # one-model, one-batch benches keep the seed bench's table; others say which row is which
    several = len(settings.get("models") or [DEFAULT_MODEL]) > 1 or len(settings.get("batches") or [1]) > 1
    lead = ["model", "batch", "method"] if several else ["method"]
    lines += ["| " + " | ".join(lead + ["paddle s", "torch s", "paddle/torch", "paddle peak MiB", "torch peak MiB", "samples"]) + " |",
              "|" + "---|" * len(lead) + "---:|---:|---:|---:|---:|---|"]
    for name, record in data["methods"].items():
        cells = [str(record.get("model", DEFAULT_MODEL)), str(record.get("batch", 1)), record.get("method", name)] if several else [name]
        lines.append(
            f"| {' | '.join(cells)} | {_seconds(record['paddle_seconds'])} | {_seconds(record['torch_seconds'])} "
            f"| {_ratio_text(record['ratio'])} | {_mib(record.get('paddle_peak_rss_mb'))} "
            f"| {_mib(record.get('torch_peak_rss_mb'))} | {_samples_text(record)} |"
        )
    failed = {name: record["errors"] for name, record in data["methods"].items() if record.get("errors")}
    if failed:
        lines += ["", "## Failed runs", ""]
        for name, errors in failed.items():
            for error in errors:
                first = error.strip().splitlines()[0] if error.strip() else "failed"
                lines.append(f"- {name}: {_escape(first)}")
    timing = data.get("parity_run")
    if timing:
        lines += [
            "",
            "## Full parity run",
            "",
            f"Wall time of {_command_text(timing.get('command'))} ({timing.get('date') or 'date not recorded'}):",
            "",
            "| run | wall time |",
            "|---|---:|",
            f"| cold (no cached upstream results) | {_duration(timing.get('cold_seconds'))} |",
            f"| warm (upstream results cached) | {_duration(timing.get('warm_seconds'))} |",
        ]
        if timing.get("source"):
            lines += ["", f"From `{timing['source']}`."]
    return "\n".join(lines) + "\n"


def _models_text(settings: Dict) -> str:
    models = settings.get("models") or [DEFAULT_MODEL]
    parts = [f"{m} (target layer `{settings['target_layer']}`)" if m == DEFAULT_MODEL else f"{m} (its default target layer)"
             for m in models]
    batches = settings.get("batches") or [1]
    return ", ".join(parts) + f"; batch {', '.join(map(str, batches))}"


def _command_text(command: Optional[str]) -> str:
    """The recorded command in a code span, and the words about how it ran (after " on ") as prose."""
    command, on, conditions = (command or "make parity").partition(" on ")
    return f"`{command}`" + (f" on {conditions}" if on else "")


def render_json(data: Dict) -> str:
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


def _table_for_stdout(data: Dict) -> str:
    rows = [("method", "paddle s", "torch s", "paddle/torch", "samples")]
    for name, record in data["methods"].items():
        rows.append((name, _seconds(record["paddle_seconds"]), _seconds(record["torch_seconds"]),
                     _ratio_text(record["ratio"]), _samples_text(record)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


# -- the parity timing file ---------------------------------------------------------------
class TimingFileError(ValueError):
    pass


def load_parity_timing(path: Path) -> Dict:
    """Read ``{"cold_seconds": float|null, "warm_seconds": float|null, "command": str, "date": str}``."""
    path = Path(path)
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise TimingFileError(f"parity timing file {path} cannot be read ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TimingFileError(f"parity timing file {path} is not JSON ({error})") from None
    if not isinstance(loaded, dict):
        raise TimingFileError(f"parity timing file {path} does not hold a JSON object")
    timing: Dict = {}
    for key in ("cold_seconds", "warm_seconds"):
        value = loaded.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0):
            raise TimingFileError(f"parity timing file {path}: {key} must be a number of seconds or null, got {value!r}")
        timing[key] = None if value is None else float(value)
    for key in ("command", "date"):
        value = loaded.get(key)
        if value is not None and not isinstance(value, str):
            raise TimingFileError(f"parity timing file {path}: {key} must be a string, got {value!r}")
        timing[key] = value
    timing["source"] = str(path)
    return timing


def _find_parity_timing(explicit: Optional[str], out: Path) -> Optional[Dict]:
    if explicit is not None:
        return load_parity_timing(Path(explicit))
    for candidate in (out / PARITY_TIMING_NAME, DEFAULT_PARITY_TIMING):
        if candidate.is_file():
            try:
                return load_parity_timing(candidate)
            except TimingFileError as error:
                print(f"bench: warning: {error}; the full parity run is left out", file=sys.stderr)
            return None
    return None


# -- arguments ----------------------------------------------------------------------------
_method_list = _csv_choices(["all", "seed", *METHODS], "method")


def _model_list(text: str) -> List[str]:
    from parity.model_zoo import arch_names

    return _csv_choices(arch_names(), "model")(text)


def _file_stem(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", text) or text.startswith("."):
        raise argparse.ArgumentTypeError(f"invalid name {text!r}: letters, digits, '_', '-' and '.' only")
    return text


def _batch_list(text: str) -> List[int]:
    return list(dict.fromkeys(_positive_int(item.strip()) for item in text.split(",") if item.strip())) or [_positive_int(text)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parity.bench",
        description=(
            "Time each CAM method in the Paddle port and in upstream pytorch_grad_cam: the two run alternately, "
            "each in a fresh process with the same thread count; the median cam(...) time per framework is "
            "written to OUT/bench.json and OUT/bench.md."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--methods", type=_method_list, default="seed",
                        help="comma-separated methods; 'seed' the eight of the original reproduction (the default), "
                        f"'all' every CAM class: {', '.join(METHODS)}")
    parser.add_argument("--model", type=_model_list, default=DEFAULT_MODEL,
                        help="comma-separated models of the zoo (ResNet50 at layer4, the others at their default target layer)")
    parser.add_argument("--batch", type=_batch_list, default="1",
                        help="comma-separated batch sizes (the image repeated, as upstream's tests do)")
    parser.add_argument("--repeat", type=_positive_int, default=3,
                        help="runs per framework for the methods that do not rerun the network per channel")
    parser.add_argument("--heavy-repeat", type=_positive_int, default=1,
                        help="runs per framework for ScoreCAM and AblationCAM (they rerun the network once per channel)")
    parser.add_argument("--threads", type=_positive_int, default=os.cpu_count() or 1,
                        help="threads each worker process uses (both frameworks get the same)")
    parser.add_argument("--image", default=str(DEFAULT_IMAGE.relative_to(REPO_ROOT)), help="input image")
    parser.add_argument("--size", type=_positive_int, default=None,
                        help="resize the image to SIZE x SIZE (default: its own size)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="precision of model and input")
    parser.add_argument("--out", default="reports", help="directory for NAME.json and NAME.md")
    parser.add_argument("--name", default="bench", type=_file_stem,
                        help="file name of the two outputs, e.g. bench_zoo for a bench over the model zoo")
    parser.add_argument("--parity-log", default=None, metavar="PATH",
                        help="JSON file with the wall times of a full `make parity` run "
                             '({"cold_seconds": ..., "warm_seconds": ..., "command": ..., "date": ...}); '
                             "default: OUT/parity_timing.json or reports/parity_timing.json if present")
    parser.add_argument("--timeout", type=float, default=6 * 3600.0,
                        help="seconds after which one worker process is killed and its run counted as failed")
    return parser


# -- what is timed ------------------------------------------------------------------------
def bench_rows(models: Sequence[str], batches: Sequence[int], methods: Sequence[str]) -> List[Tuple[str, int, str]]:
    """(model, batch, method) of every table row, model by model, batch by batch, in registry order."""
    return [(model, batch, method) for model in models for batch in batches for method in methods]


def row_id(row: Tuple[str, int, str]) -> str:
    """A row's key in bench.json: the method alone for ResNet50 at batch 1 (the seed bench), else all three."""
    model, batch, method = row
    return method if (model, batch) == (DEFAULT_MODEL, 1) else f"{model} b{batch} {method}"


def bench_setup(model: str, batch: int, size: Optional[int]):
    """ResNet50 at ``layer4`` (as the seed bench); another model at its default target layer."""
    from parity.registry import Setup

    layers = TARGET_LAYER if model == DEFAULT_MODEL else ""
    return Setup(model=model, torch_layers=layers, paddle_layers=layers, batch=batch,
                 size=None if size is None else (size, size))


# -- running ------------------------------------------------------------------------------
def _resolve_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    return path.resolve()


def _ensure_weights(model: str) -> Tuple[Path, Path]:
    """The seeded torch weights of ``model`` and their Paddle conversion; made in a child process if
    missing, so that this process never imports torch or paddle."""
    from parity.weights import DEFAULT_WEIGHTS_DIR, converted_path
    from parity.model_zoo import arch

    torch_path = DEFAULT_WEIGHTS_DIR / arch(model).default_weights_name
    if not (torch_path.exists() and converted_path(torch_path, DEFAULT_WEIGHTS_DIR, model).exists()):
        print(f"bench: making the seeded {model} weights and their Paddle conversion (once) ...", file=sys.stderr)
        code = ("import sys; from parity.weights import ensure_default_weights, ensure_paddle_weights; "
                "a = sys.argv[1]; ensure_paddle_weights(ensure_default_weights(arch=a), arch=a)")
        subprocess.run([sys.executable, "-c", code, model], check=True, env=worker_environment(1), stdin=subprocess.DEVNULL)
    return torch_path, converted_path(torch_path, DEFAULT_WEIGHTS_DIR, model)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def _run_one(job: WorkerJob, env: Dict[str, str], timeout: float) -> Tuple[Optional[float], float, Optional[float], Optional[str]]:
    """Run one worker; return (cam seconds or None, process wall seconds, peak RSS MiB or None, error or None)."""
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    job_file = out_dir / "job.json"
    job_file.write_text(job.to_json())
    log_path = out_dir / "worker.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parity.worker", str(job_file)],
            cwd=out_dir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            wall = time.perf_counter() - started
            return None, wall, None, f"worker timed out after {timeout:g} s"
        except BaseException:  # KeyboardInterrupt: do not leave the worker running
            _kill_group(proc)
            raise
    wall = time.perf_counter() - started
    if returncode != 0:
        tail = log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:].strip()
        return None, wall, None, f"worker exited with status {returncode}; its output ends: {tail}"
    try:
        result = json.loads((out_dir / "result.json").read_text())
        seconds = float(result["cases"][job.method]["no_smooth"]["seconds"])
        peak = result.get("peak_rss_mb")
        peak = None if peak is None else float(peak)
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, wall, None, f"worker result unreadable ({type(error).__name__}: {error})"
    return seconds, wall, peak, None


def _load_average() -> Optional[List[float]]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _machine(threads: int, load_before: Optional[List[float]] = None) -> Dict:
    import platform

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "versions": package_versions(),
        "threads": threads,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # 1/5/15-minute load averages before the first run and after the last: other work on the
        # machine while the bench ran shows up here (and makes the numbers noisier).
        "load_average_before": load_before,
        "load_average_after": _load_average(),
        # the commit the timings were measured at, and whether the tree was clean
        "project": project_state(),
    }


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def run_bench(args: argparse.Namespace, argv: Sequence[str]) -> Tuple[Dict, bool]:
    from paddle_impl.image_io import load_rgb_image

    out = Path(args.out)
    timing = _find_parity_timing(args.parity_log, out)  # a bad --parity-log stops the run before it starts
    image = _resolve_path(args.image)
    rgb, _ = load_rgb_image(image)
    own_size = list(rgb.shape[:2])
    image_size = [args.size, args.size] if args.size is not None else own_size
    weights = {model: _ensure_weights(model) for model in args.model}
    rows = bench_rows(args.model, args.batch, resolve_methods(args.methods))
    runs = [(row, framework) for model, batch in dict.fromkeys((r[0], r[1]) for r in rows)
            for row_method, framework in schedule([r[2] for r in rows if r[:2] == (model, batch)], args.repeat, args.heavy_repeat)
            for row in [(model, batch, row_method)]]
    samples: Dict[str, Dict[str, Dict[str, List]]] = {
        row_id(row): {framework: {"seconds": [], "wall_seconds": [], "peak_rss_mb": [], "errors": []} for framework in FRAMEWORKS}
        for row in rows
    }
    load_before = _load_average()
    all_ok = True
    with tempfile.TemporaryDirectory(prefix="parity-bench-") as work:
        for index, (row, framework) in enumerate(runs, 1):
            model, batch, name = row
            torch_weights, paddle_weights = weights[model]
            job = WorkerJob(
                framework=framework, methods=[name], aug_smooth=False, eigen_modes=[False], image=str(image),
                setup=bench_setup(model, batch, args.size), torch_weights=str(torch_weights),
                paddle_weights=str(paddle_weights), dtype=args.dtype, device="cpu", threads=args.threads,
                out_dir=str(Path(work) / f"{index:03d}-{framework}-{model}-b{batch}-{name}"), reuse_weights=False,
            )
            seconds, wall, peak, error = _run_one(job, worker_environment(args.threads), args.timeout)
            record = samples[row_id(row)][framework]
            record["wall_seconds"].append(wall)
            if error is None:
                record["seconds"].append(seconds)
                status = f"cam {seconds:.3f} s"
                if peak is not None:
                    record["peak_rss_mb"].append(peak)
                    status += f", peak {peak:.0f} MiB"
            else:
                record["errors"].append(error)
                all_ok = False
                status = "FAILED: " + error.splitlines()[0][:300]
            print(f"bench [{index}/{len(runs)}] {row_id(row)} {framework}: {status} (process {wall:.1f} s)", file=sys.stderr, flush=True)

    summary = summarize(samples)
    for row in rows:
        summary[row_id(row)].update(model=row[0], batch=row[1], method=row[2])
    data = {
        "machine": _machine(args.threads, load_before),
        "settings": {
            "threads": args.threads,
            "repeat": args.repeat,
            "heavy_repeat": args.heavy_repeat,
            "image": _display_path(image),
            "image_size": image_size,
            "dtype": args.dtype,
            "device": "cpu",
            "target_layer": TARGET_LAYER,
            "models": list(args.model),
            "batches": list(args.batch),
            "smoothing": "none",
            "order": "alternating " + ", ".join(FRAMEWORKS) + " per method, each run a fresh process",
            "command": " ".join(["python -m parity.bench", *argv]),
        },
        "methods": summary,
        "parity_run": timing,
    }
    return data, all_ok


def write_outputs(data: Dict, out: Path, name: str = "bench") -> Tuple[Path, Path]:
    out = Path(out)
    json_path = write_text(out / f"{name}.json", render_json(data))
    md_path = write_text(out / f"{name}.md", render_markdown(data))
    return json_path, md_path


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    from paddle_impl.errors import UserError

    try:
        data, all_ok = run_bench(args, argv)
    except TimingFileError as error:
        parser.error(str(error))  # exits 2
    except UserError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(f"bench: error: making the weights failed (status {error.returncode})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; nothing written", file=sys.stderr)
        return 130
    json_path, md_path = write_outputs(data, Path(args.out), args.name)
    print(_table_for_stdout(data))
    print(f"bench: wrote {json_path} and {md_path}", file=sys.stderr)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
