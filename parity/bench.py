"""``python -m parity.bench``: how long each CAM method takes in the Paddle port and in upstream pytorch_grad_cam.

A *cell* is (model, batch, threads, smoothing, method).  For each cell the Paddle and the torch
timing workers (``python -m parity.bench_worker``) run *alternately* -- paddle, torch, paddle,
torch, ... -- each in a fresh process of its own with the cell's thread count
(``torch.set_num_threads`` / Paddle's ``set_num_threads``, and ``OMP_NUM_THREADS`` =
``MKL_NUM_THREADS`` = ``OPENBLAS_NUM_THREADS`` in the child's environment), so that drift of the
machine spreads over both frameworks.  The worker calls the CAM as a user does, with no recording
hooks: one first call, timed on its own (set-up: predictor building, oneDNN primitives), then
``--calls`` more calls timed one by one (the per-call time that counts).  A cell whose ratio comes
out within ±5% of 1.0× gets ``--remeasure`` more pairs before it counts.

With ScoreCAM or AblationCAM among the methods the bench also measures, each in a process of its
own, the machine's float32 peak (a large torch matmul at each thread count) and the plain network
forward at several batch sizes in both frameworks (Paddle's compiled predictor included), and writes
one throughput line per heavy cell and framework: forwards run, FLOPs per forward (torch's
FlopCounterMode), achieved GFLOP/s, against the peak and against the network's best forward.

Output: ``OUT/NAME.json`` (machine, versions, settings, every sample) and ``OUT/NAME.md`` (one table
per model, batch, thread count and smoothing), both written atomically.  ``--shard K/N`` runs every
N-th cell; ``python -m parity.bench merge A.json B.json ... --out DIR --name NAME`` joins shards or
separate runs into one report; ``python -m parity.bench rerun REPORT.json ...`` measures a report again at the
current commit, each of its parts' commands once more (see ``parity.bench_merge``); ``python -m parity.bench render
REPORT.json ...`` writes a report's markdown again from its JSON.

This process imports neither torch nor paddle: the workers do.  Exit status: 0 when every run
succeeded, 1 when some run failed (its cell is reported as an error), 2 for bad arguments, 130 when
interrupted.
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from paddle_impl.atomic import write_text
from parity.bench_merge import merge_data, part_of, rerun_plan, without_unshown_parts
from parity.bench_report import (FRAMEWORKS, best_forward_throughput, cell_key, near_parity, project_words, render_json,
                                 render_markdown, summarize, table_for_stdout)
from parity.bench_worker import PEAK_MATMUL_SIZE, BenchJob
from parity.cli import _csv_choices, _positive_int, _shard
from parity.outcome import error_headline
from parity.provenance import cpu_name, package_versions, project_state
from parity.registry import METHODS, resolve_methods
from parity.worker import worker_environment

__all__ = ["FRAMEWORKS", "Cell", "schedule", "bench_cells", "shard_cells", "measure_cells", "merge_data",
           "load_parity_timing", "build_parser", "main"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = REPO_ROOT / "fixtures" / "both.png"
DEFAULT_PARITY_TIMING = REPO_ROOT / "reports" / "parity_timing.json"
PARITY_TIMING_NAME = "parity_timing.json"
TARGET_LAYER = "layer4"
DEFAULT_MODEL = "resnet50"
LOG_TAIL_CHARS = 2000
SMOOTH_CHOICES = {"none": "no_smooth", "aug": "aug_smooth", "eigen": "eigen_smooth", "aug_eigen": "aug_eigen_smooth"}
# Heavy cells cost minutes each: near parity they get at most this many extra pairs.
HEAVY_REMEASURE_PAIRS = 1

Cell = Tuple[str, int, int, str, str]  # (model, batch, threads, smooth, method)
_project_words = project_words  # the name tests and older callers use


def _is_heavy(method: str) -> bool:
    return METHODS[method].reruns_network_per_channel


def _key(cell: Cell) -> str:
    return cell_key(*cell)


# -- the plan -----------------------------------------------------------------------------
def bench_cells(models: Sequence[str], batches: Sequence[int], threads: Sequence[int], smooths: Sequence[str],
                methods: Sequence[str]) -> List[Cell]:
    """Every cell, model by model, batch by batch, thread count by thread count, smoothing by smoothing, methods in
    the given order; a method without that smoothing in upstream's API has no cell."""
    return [(model, batch, count, smooth, method) for model in models for batch in batches for count in threads
            for smooth in smooths for method in methods if smooth in METHODS[method].smooths]


def schedule(cells: Sequence[Cell], repeat: int, heavy_repeat: int) -> List[Tuple[Cell, str]]:
    """The runs, in order: for each cell ``n`` pairs (paddle, torch), ``n`` being ``heavy_repeat`` for the methods
    that rerun the network per channel and ``repeat`` for the others."""
    return [(cell, framework) for cell in cells
            for _ in range(heavy_repeat if _is_heavy(cell[4]) else repeat) for framework in FRAMEWORKS]


def shard_cells(cells: Sequence[Cell], shard: Optional[Tuple[int, int]]) -> List[Cell]:
    """Shard K of N: every N-th cell from the K-th, so that each shard gets a like share of every model."""
    if shard is None:
        return list(cells)
    index, count = shard
    return list(cells[index - 1::count])


def _empty_samples() -> Dict[str, List]:
    return {name: [] for name in ("seconds", "first_call_seconds", "second_call_seconds", "wall_seconds", "peak_rss_mb",
                                  "forward_count", "channels", "flops_per_forward", "errors")}


Runner = Callable[[Cell, str], Tuple[Optional[Dict], float, Optional[str]]]


def measure_cells(cells: Sequence[Cell], repeat: int, heavy_repeat: int, remeasure: int, run: Runner,
                  log: Callable[[str], None] = lambda line: None) -> Tuple[Dict[str, Dict], bool]:
    """Measure every cell with ``run(cell, framework) -> (worker result or None, wall seconds, error or None)``,
    in pairs; a cell whose ratio is within ±5% of 1.0× gets ``remeasure`` more pairs (heavy cells at most
    ``HEAVY_REMEASURE_PAIRS``).  Returns the summary per cell key and whether every run succeeded."""
    samples: Dict[str, Dict[str, Dict[str, List]]] = {}
    extra_pairs: Dict[str, int] = {}
    all_ok = True
    total = len(schedule(cells, repeat, heavy_repeat))
    done = 0

    def one(cell: Cell, framework: str, total_text: str) -> None:
        nonlocal all_ok, done
        done += 1
        result, wall, error = run(cell, framework)
        record = samples[_key(cell)][framework]
        record["wall_seconds"].append(wall)
        if error is None:
            record["seconds"].extend(result["seconds"])
            first = result.get("first_call_seconds")
            if first is not None:
                record["first_call_seconds"].append(first)
            for name in ("second_call_seconds", "peak_rss_mb", "forward_count", "channels", "flops_per_forward"):
                if result.get(name) is not None:
                    record[name].append(result[name])
            calls = ", ".join(f"{s:.3f}" for s in result["seconds"])
            status = f"one call {calls} s" if first is None else f"first call {first:.3f} s, then {calls} s"
        else:
            record["errors"].append(error)
            all_ok = False
            status = "FAILED: " + error_headline(error, 300)
        log(f"bench [{done}/{total_text}] {_key(cell)} {framework}: {status} (process {wall:.1f} s)")

    for cell in cells:
        samples[_key(cell)] = {framework: _empty_samples() for framework in FRAMEWORKS}
        for _, framework in schedule([cell], repeat, heavy_repeat):
            one(cell, framework, str(total))
        pairs = min(remeasure, HEAVY_REMEASURE_PAIRS) if _is_heavy(cell[4]) else remeasure
        if pairs and near_parity(summarize({_key(cell): samples[_key(cell)]})[_key(cell)]["ratio"]):
            extra_pairs[_key(cell)] = pairs
            total += 2 * pairs
            for _ in range(pairs):
                for framework in FRAMEWORKS:
                    one(cell, framework, f"{total}")
    summary = summarize(samples)
    for cell in cells:
        model, batch, threads, smooth, method = cell
        summary[_key(cell)].update(model=model, batch=batch, threads=threads, smooth=smooth, method=method,
                                   heavy=_is_heavy(method), remeasured_pairs=extra_pairs.get(_key(cell), 0))
    return summary, all_ok


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
    timing["source"] = _display_path(path.resolve())
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
    """The models to time; a pair whose two builders make different networks is refused: its timing would compare
    two networks, not the port with upstream."""
    from parity.model_zoo import arch, arch_names, hub_pair_names

    models = _csv_choices([*arch_names(), *hub_pair_names()], "model")(text)
    differ = [name for name in models if arch(name).known_difference]
    if differ:
        raise argparse.ArgumentTypeError(
            f"{', '.join(differ)}: the Paddle model is another network than the torch one, so the two cannot be "
            f"timed against each other ({differ[0]}: {arch(differ[0]).known_difference})")
    return models


def _smooth_list(text: str) -> List[str]:
    return [SMOOTH_CHOICES[name] for name in _csv_choices(list(SMOOTH_CHOICES), "smoothing")(text)]


def _file_stem(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", text) or text.startswith("."):
        raise argparse.ArgumentTypeError(f"invalid name {text!r}: letters, digits, '_', '-' and '.' only")
    return text


def _int_list(text: str) -> List[int]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"invalid list {text!r}: comma-separated positive integers, e.g. 1,2")
    return list(dict.fromkeys(_positive_int(item) for item in items))


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: a whole number >= 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: a whole number >= 0")
    return value


def default_threads() -> str:
    """One thread and every core: the two ends of thread scaling."""
    return ",".join(str(n) for n in dict.fromkeys([1, os.cpu_count() or 1]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parity.bench",
        description=(
            "Time each CAM method in the Paddle port and in upstream pytorch_grad_cam: the two run alternately, "
            "each in a fresh process with the same thread count, the CAM called as a user calls it; per-call "
            "median, spread and one-time set-up per framework go to OUT/NAME.json and OUT/NAME.md. "
            "`python -m parity.bench merge A.json B.json ... --out DIR --name NAME` joins shards or runs."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--methods", type=_method_list, default="seed",
                        help="comma-separated methods; 'seed' the eight of the original reproduction (the default), "
                        f"'all' every CAM class: {', '.join(METHODS)}")
    parser.add_argument("--model", type=_model_list, default=DEFAULT_MODEL,
                        help="comma-separated models: the zoo's torchvision twins and the timm <-> PaddleClas hub pairs "
                             "(ResNet50 at layer4, the others at their default target layer)")
    parser.add_argument("--batch", type=_int_list, default="1",
                        help="comma-separated batch sizes (the image repeated, as upstream's tests do)")
    parser.add_argument("--threads", type=_int_list, default=default_threads(),
                        help="comma-separated thread counts; every cell runs at each (both frameworks get the same)")
    parser.add_argument("--smooth", type=_smooth_list, default="none",
                        help=f"comma-separated smoothing modes, each a table of its own: {', '.join(SMOOTH_CHOICES)}")
    parser.add_argument("--repeat", type=_positive_int, default=3,
                        help="processes per framework for the methods that do not rerun the network per channel")
    parser.add_argument("--heavy-repeat", type=_positive_int, default=1,
                        help="processes per framework for ScoreCAM and AblationCAM (they rerun the network once per channel)")
    parser.add_argument("--calls", type=_positive_int, default=1,
                        help="timed calls per process after the first, for the methods that do not rerun the network per channel")
    parser.add_argument("--heavy-calls", type=_non_negative_int, default=1,
                        help="timed calls per process after the first, for ScoreCAM and AblationCAM; 0: the first call "
                             "is the only one and its time (set-up included) the sample")
    parser.add_argument("--remeasure", type=_non_negative_int, default=4,
                        help="extra pairs for a cell whose ratio is within ±5%% of 1.0x "
                             f"(heavy cells at most {HEAVY_REMEASURE_PAIRS}); 0 turns it off")
    parser.add_argument("--throughput-batches", type=_int_list, default="1,16,32,64",
                        help="batch sizes of the plain network forward measured beside ScoreCAM and AblationCAM")
    parser.add_argument("--matmul-size", type=_positive_int, default=PEAK_MATMUL_SIZE,
                        help="N of the N x N float32 matmul that measures the machine's peak")
    parser.add_argument("--image", default=str(DEFAULT_IMAGE.relative_to(REPO_ROOT)), help="input image")
    parser.add_argument("--size", type=_positive_int, default=None,
                        help="resize the image to SIZE x SIZE (default: its own size)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="precision of model and input")
    parser.add_argument("--shard", type=_shard, default=None, metavar="K/N",
                        help="run only shard K of N (every N-th cell from the K-th); merge the parts with `merge`")
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


def build_rerun_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parity.bench rerun",
        description="Measure bench reports again at the current commit: each report's parts (the commands its header "
                    "lists) run once more, one after another, each writing WORK/STEM/partN.json, and their merge "
                    "replaces OUT/STEM.json and OUT/STEM.md.  A part whose cells a later part all measured again is "
                    "skipped.  Nothing is replaced unless every part of that report ran.")
    parser.add_argument("reports", nargs="+", help="bench JSON files, e.g. reports/bench_zoo.json")
    parser.add_argument("--work", default="build/bench/rerun", help="directory for the parts' own files")
    parser.add_argument("--out", default=None, help="directory for the merged reports (default: each report's own)")
    parser.add_argument("--parts", default=None, metavar="N[,N...]",
                        help="measure only these parts of one report (numbered as its header's \"Part N\" lines); "
                             "the other parts keep their cells and commits, and a part whose cells are all measured "
                             "again leaves the header.  A report stays STALE while a part it shows is older than the "
                             "port, so a long report can be measured again over several sessions")
    parser.add_argument("--dry-run", action="store_true",
                        help="list each part's command and how long its cells took when measured; run nothing")
    return parser


def build_merge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m parity.bench merge",
                                     description="Join bench JSON files (shards or separate runs) into one report.")
    parser.add_argument("inputs", nargs="+", help="NAME.json files written by python -m parity.bench")
    parser.add_argument("--out", required=True, help="directory for NAME.json and NAME.md")
    parser.add_argument("--name", required=True, type=_file_stem, help="file name of the two outputs")
    return parser


# -- running ------------------------------------------------------------------------------
def target_layer(model: str) -> str:
    """ResNet50 at ``layer4`` (as the seed bench); any other model at its default target layer ("")."""
    return TARGET_LAYER if model == DEFAULT_MODEL else ""


def model_size(model: str, size: Optional[int]) -> Optional[int]:
    """The input's side: ``--size`` when given, else a hub pair's own input size (a transformer's token grid
    depends on it), else None (the image at its own size)."""
    if size is not None:
        return size
    from parity.model_zoo import arch

    own = getattr(arch(model), "input_size", None)
    return int(own[0]) if own and own[0] == own[1] else None


def _resolve_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    return path.resolve()


def _ensure_weights(model: str) -> Tuple[Path, Path]:
    """The seeded torch weights of ``model`` and their Paddle conversion; made in a child process if
    missing, so that this process never imports torch or paddle."""
    from parity.model_zoo import arch
    from parity.weights import DEFAULT_WEIGHTS_DIR, converted_path

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


def run_worker(job: BenchJob, timeout: float) -> Tuple[Optional[Dict], float, Optional[str]]:
    """Run one timing worker; return (its result or None, process wall seconds, error or None)."""
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    job_file = out_dir / "job.json"
    job_file.write_text(job.to_json())
    log_path = out_dir / "worker.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parity.bench_worker", str(job_file)],
            cwd=out_dir, env=worker_environment(job.threads), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return None, time.perf_counter() - started, f"worker timed out after {timeout:g} s"
        except BaseException:  # KeyboardInterrupt: do not leave the worker running
            _kill_group(proc)
            raise
    wall = time.perf_counter() - started
    if returncode != 0:
        tail = log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:].strip()
        return None, wall, f"worker exited with status {returncode}; its output ends: {tail}"
    try:
        result = read_result(job, (out_dir / "result.json").read_text())
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, wall, f"worker result unreadable ({type(error).__name__}: {error})"
    return result, wall, None


def read_result(job: BenchJob, text: str) -> Dict:
    """A worker's ``result.json``, its times checked: a cam job's ``seconds`` a non-empty list of numbers and
    ``first_call_seconds`` a number, or None when the first call was the only one (``calls`` 0)."""
    result = json.loads(text)
    if job.kind == "cam":
        result["seconds"] = [float(s) for s in result["seconds"]]
        if not result["seconds"]:
            raise ValueError("no timed call")
        first = result.get("first_call_seconds")
        if first is None and job.calls != 0:
            raise ValueError("no first call time")
        result["first_call_seconds"] = None if first is None else float(first)
        second = result.get("second_call_seconds")
        result["second_call_seconds"] = None if second is None else float(second)
    return result


def _load_average() -> Optional[List[float]]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _machine(threads, load_before: Optional[List[float]] = None) -> Dict:
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


def _command(argv: Sequence[str], prefix: str = "python -m parity.bench") -> str:
    """The command as typed, with paths inside the checkout made relative (a report names no machine's paths)."""
    words = []
    for word in argv:
        path = Path(word)
        words.append(_display_path(path.resolve()) if path.is_absolute() or os.sep in word else word)
    return " ".join([prefix, *words])


def measure_throughput(models: Sequence[str], threads: Sequence[int], job_for: Callable[..., BenchJob],
                       timeout: float, log: Callable[[str], None]) -> Tuple[Dict, Dict, bool]:
    """The machine's peak per thread count, and the plain network forward per (model, threads) in both frameworks."""
    peaks: Dict[str, Dict] = {}
    networks: Dict[str, Dict] = {}
    all_ok = True
    for count in threads:
        result, wall, error = run_worker(job_for("peak", "torch", count), timeout)
        if error:
            all_ok = False
            log(f"bench peak t{count}: FAILED: {error_headline(error, 300)}")
        else:
            peaks[str(count)] = result
            log(f"bench peak t{count}: {result['gflops_per_second']:.1f} GFLOP/s (process {wall:.1f} s)")
        for model in models:
            entry: Dict = {}
            for framework in FRAMEWORKS:
                result, wall, error = run_worker(job_for("throughput", framework, count, model=model), timeout)
                if error:
                    all_ok = False
                    entry[framework] = {"error": error}
                    log(f"bench forward {model} t{count} {framework}: FAILED: {error_headline(error, 300)}")
                else:
                    entry[framework] = result
                    log(f"bench forward {model} t{count} {framework}: {json.dumps(result['seconds'])} (process {wall:.1f} s)")
            flops = (entry.get("torch") or {}).get("flops_per_forward")
            entry["flops_per_forward"] = flops
            bests = [best_forward_throughput(entry[f], flops) for f in FRAMEWORKS if "seconds" in entry.get(f, {})]
            bests = [b for b in bests if b]
            entry["best"] = max(bests, key=lambda b: b["gflops_per_second"]) if bests else None
            networks[f"{model} t{count}"] = entry
    return peaks, networks, all_ok


def run_bench(args: argparse.Namespace, argv: Sequence[str]) -> Tuple[Dict, bool]:
    from paddle_impl.image_io import load_rgb_image

    out = Path(args.out)
    timing = _find_parity_timing(args.parity_log, out)  # a bad --parity-log stops the run before it starts
    image = _resolve_path(args.image)
    rgb, _ = load_rgb_image(image)
    image_size = [args.size, args.size] if args.size is not None else list(rgb.shape[:2])
    cells = shard_cells(bench_cells(args.model, args.batch, args.threads, args.smooth, resolve_methods(args.methods)),
                        args.shard)
    weights = {model: _ensure_weights(model) for model in dict.fromkeys(cell[0] for cell in cells)}
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix="parity-bench-") as work:
        counter = iter(range(1, 10**9))

        def job_for(kind: str, framework: str, threads: int, model: str = DEFAULT_MODEL, batch: int = 1,
                    smooth: str = "no_smooth", method: str = "") -> BenchJob:
            torch_weights, paddle_weights = weights.get(model, ("", ""))
            label = "-".join(str(part) for part in (next(counter), kind, framework, model, f"b{batch}", f"t{threads}", smooth, method) if part)
            calls = args.heavy_calls if method and _is_heavy(method) else args.calls
            return BenchJob(kind=kind, framework=framework, threads=threads, out_dir=str(Path(work) / label), model=model,
                            layers=target_layer(model), method=method, smooth=smooth, batch=batch, size=model_size(model, args.size),
                            image=str(image), dtype=args.dtype, torch_weights=str(torch_weights),
                            paddle_weights=str(paddle_weights), calls=calls,
                            throughput_batches=list(args.throughput_batches), matmul_size=args.matmul_size)

        def run(cell: Cell, framework: str):
            model, batch, threads, smooth, method = cell
            return run_worker(job_for("cam", framework, threads, model, batch, smooth, method), args.timeout)

        summary, all_ok = measure_cells(cells, args.repeat, args.heavy_repeat, args.remeasure, run, log)
        heavy = [cell for cell in cells if _is_heavy(cell[4])]
        # A cell above 1.0x gets its measured reason: the plain network forward of both frameworks, same threads.
        slower = [cell for cell in cells if (summary.get(_key(cell)) or {}).get("ratio", 0) and summary[_key(cell)]["ratio"] > 1.0]
        peaks, networks = {}, {}
        if heavy or slower:
            peaks, networks, throughput_ok = measure_throughput(
                list(dict.fromkeys(cell[0] for cell in heavy + slower)),
                list(dict.fromkeys(cell[2] for cell in heavy + slower)), job_for, args.timeout, log)
            all_ok = all_ok and throughput_ok
    data = {
        "machine": _machine(list(args.threads), load_before),
        "settings": {
            "threads": list(args.threads),
            "repeat": args.repeat,
            "heavy_repeat": args.heavy_repeat,
            "calls": args.calls,
            "heavy_calls": args.heavy_calls,
            "remeasure_pairs": args.remeasure,
            "image": _display_path(image),
            "image_size": image_size,
            "dtype": args.dtype,
            "device": "cpu",
            "target_layer": TARGET_LAYER,
            "models": list(args.model),
            "batches": list(args.batch),
            "smoothing": list(args.smooth),
            "shard": list(args.shard) if args.shard else None,
            "throughput_batches": list(args.throughput_batches),
            "flops_source": "torch.utils.flop_counter.FlopCounterMode on the torch model, one image at the bench's size",
            "order": "per cell, alternating " + ", ".join(FRAMEWORKS) + ", each run a fresh process",
            "command": _command(argv),
        },
        "cells": summary,
        "peak": peaks,
        "network_throughput": networks,
        "parity_run": timing,
    }
    return data, all_ok


# -- merging and measuring again --------------------------------------------------------
def _render_main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m parity.bench render",
        description="Write each bench JSON's markdown again beside it (STEM.md), from the JSON alone: after a change "
                    "to how reports read, nothing is measured again and the numbers stay those of their commits.")
    parser.add_argument("reports", nargs="+", help="bench JSON files, e.g. reports/bench_zoo.json")
    args = parser.parse_args(argv)
    texts = []
    for name in args.reports:
        try:
            texts.append((Path(name), render_markdown(json.loads(Path(name).read_text(encoding="utf-8")))))
        except (OSError, ValueError, KeyError, TypeError) as error:
            parser.error(f"cannot render {name}: {error}")
    for path, text in texts:  # every file read and rendered first: a bad one leaves all as they were
        print(f"bench: {write_text(path.with_suffix('.md'), text)}", file=sys.stderr)
    return 0


def _merge_main(argv: List[str]) -> int:
    parser = build_merge_parser()
    args = parser.parse_args(argv)
    parts = []
    for name in args.inputs:
        try:
            parts.append(json.loads(Path(name).read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            parser.error(f"cannot read {name}: {error}")
    try:
        data = merge_data(parts, _command(argv, "python -m parity.bench merge"))
    except (ValueError, KeyError) as error:
        parser.error(str(error))
    json_path, md_path = write_outputs(data, Path(args.out), args.name)
    print(f"bench: merged {len(parts)} file(s), {len(data['settings']['merged_commands'])} part(s), into {json_path} "
          f"and {md_path}", file=sys.stderr)
    return 0


def _run_part(arguments: List[str]) -> int:
    """One part in a process of its own, from the checkout's root (a part's recorded paths are relative to it)."""
    return subprocess.call([sys.executable, "-m", "parity.bench", *arguments], cwd=REPO_ROOT)


def _rerun_main(argv: List[str], run_part: Callable[[List[str]], int] = _run_part) -> int:
    parser = build_rerun_parser()
    args = parser.parse_args(argv)
    plans, report_of = [], {}
    for name in args.reports:
        path = Path(name)
        try:
            report_of[path] = json.loads(path.read_text(encoding="utf-8"))
            plans.append((path, rerun_plan(report_of[path])))
        except (OSError, ValueError, KeyError, TypeError) as error:
            parser.error(f"cannot plan {name} again: {error}")
    chosen = _chosen_parts(parser, args, plans)
    if chosen is not None:
        plans = [(path, [step if step.part in chosen else step._replace(arguments=None) for step in plan])
                 for path, plan in plans]
    total = 0.0
    for path, plan in plans:
        for step in plan:
            if step.arguments is None and chosen is not None:
                continue
            if step.arguments is None:
                print(f"{path.stem} part {step.part}: skipped, a later part measured all its cells again",
                      file=sys.stderr)
                continue
            total += step.seconds_shown
            print(f"{path.stem} part {step.part}: {step.cells_shown} cell(s), {step.seconds_shown / 60:.1f} min of "
                  f"workers when measured: {step.command}", file=sys.stderr)
    print(f"bench rerun: {len(plans)} report(s), about {total / 60:.0f} min of workers (what their cells took; "
          "throughput lines and replaced cells come on top)", file=sys.stderr)
    if args.dry_run:
        return 0
    status = 0
    for path, plan in plans:
        work = Path(args.work).resolve() / path.stem  # the parts run from the checkout's root, this may not
        outputs = []
        for step in plan:
            if step.arguments is None:
                continue
            arguments = step.arguments + ["--out", str(work), "--name", f"part{step.part}"]
            code = run_part(arguments)
            if code not in (0, 1):  # 1: a cell failed, and its part says so; anything else: the part broke
                print(f"bench rerun: {path.stem} part {step.part} ended with status {code}; {path.stem} left as it "
                      "was", file=sys.stderr)
                return code
            status = max(status, code)
            output = json.loads((work / f"part{step.part}.json").read_text(encoding="utf-8"))
            outputs.append(output if chosen is None else _only_cells_shown_of(output, report_of[path], step.part))
        measured = len(outputs)
        if chosen is not None:  # the report's other parts stay, with their cells and commits
            outputs.insert(0, report_of[path])
        data = without_unshown_parts(merge_data(outputs, _command(["rerun", *argv])))
        json_path, md_path = write_outputs(data, Path(args.out) if args.out else path.parent, path.stem)
        print(f"bench rerun: {measured} part(s) measured again into {json_path} and {md_path}", file=sys.stderr)
    return status


def _only_cells_shown_of(output: Dict, report: Dict, part: int) -> Dict:
    """``output`` (part ``part`` measured again) less the cells that a later part of ``report`` measured again:
    the later part's measurement of such a cell (more samples, set-up apart) is the one the report keeps."""
    cells = {key: cell for key, cell in output["cells"].items()
             if key in report["cells"] and part_of(report["cells"][key]) == part}
    return dict(output, cells=cells)


def _chosen_parts(parser: argparse.ArgumentParser, args: argparse.Namespace, plans: List) -> Optional[set]:
    """The part numbers ``--parts`` names (None: every part), each one that this report still shows."""
    if args.parts is None:
        return None
    if len(plans) != 1:
        parser.error("--parts measures parts of one report; name one")
    try:
        chosen = {int(word) for word in args.parts.split(",")}
    except ValueError:
        parser.error(f"--parts takes part numbers separated by commas, not {args.parts!r}")
    runnable = {step.part for step in plans[0][1] if step.arguments is not None}
    missing = sorted(chosen - runnable)
    if missing:
        parser.error(f"{plans[0][0].name} has no part {missing[0]} whose cells it still shows; its parts: "
                     + ", ".join(map(str, sorted(runnable))))
    return chosen


def write_outputs(data: Dict, out: Path, name: str = "bench") -> Tuple[Path, Path]:
    out = Path(out)
    json_path = write_text(out / f"{name}.json", render_json(data))
    md_path = write_text(out / f"{name}.md", render_markdown(data))
    return json_path, md_path


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (a killed make, a CI timeout) ends the bench like Ctrl-C, so that the running worker's process
    group is killed too instead of running on alone."""
    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        return _merge_main(argv[1:])
    if argv[:1] == ["rerun"]:
        return _rerun_main(argv[1:])
    if argv[:1] == ["render"]:
        return _render_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    from paddle_impl.errors import UserError

    try:
        with _terminate_as_interrupt():
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
    print(table_for_stdout(data))
    print(f"bench: wrote {json_path} and {md_path}", file=sys.stderr)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
