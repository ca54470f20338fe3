"""``python -m parity``: the whole matrix (or a slice of it), compared and reported."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Union

# Paddle warns on import when ccache is missing (this process imports it to convert
# weights or to check --device gpu); it is about compiling C++ extensions, never done here.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

from paddle_impl.errors import UserError, cli_errors  # noqa: E402
from parity.config import DEFAULT_THREADS  # noqa: E402
from parity.registry import METHODS, PROFILES, SMOOTH_MODES  # noqa: E402

__all__ = ["main", "build_parser"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = REPO_ROOT / "fixtures" / "both.png"


def _csv_choices(valid: List[str], what: str):
    def parse(text: str) -> List[str]:
        chosen = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in chosen if item not in valid]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(
                f"invalid {what} {', '.join(map(repr, unknown)) or repr(text)} (choose from {', '.join(valid)})"
            )
        return list(dict.fromkeys(chosen))

    return parse


def _category(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid category {text!r}: an ImageNet class index 0..999") from None
    if not 0 <= value <= 999:
        raise argparse.ArgumentTypeError(f"category {value} is outside 0..999 (ResNet50 has 1000 ImageNet classes)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each default, except ``None`` ones: their help says what happens instead."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parity",
        description=(
            "Run CAM methods through the Paddle port and through upstream pytorch_grad_cam on the same image "
            "and weights, compare every stage, and write a reviewer report (parity.md, parity.json, images). "
            "Exit status 0 only if every selected case passed."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full",
                        help="quick: ScoreCAM/AblationCAM on a 64x64 input at layer2 (minutes); full: every method on the image at its own size, layer4")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="precision of the model, the input and every stage on both sides")
    # String defaults go through ``type`` like a typed value (a list) and read well in --help.
    parser.add_argument("--methods", type=_csv_choices(list(METHODS), "method"), default=", ".join(METHODS),
                        help="comma-separated subset (default: all of %(default)s)")
    parser.add_argument("--smooth", type=_csv_choices(list(SMOOTH_MODES), "smoothing mode"), default=", ".join(SMOOTH_MODES),
                        help="comma-separated subset (default: all of %(default)s)")
    parser.add_argument("--weights", default="default",
                        help="'default' (seeded torchvision init, made once under fixtures/weights), 'imagenet' (torchvision download) or a torchvision ResNet50 .pth file")
    parser.add_argument("--image", default=None,
                        help=f"input image (default: {DEFAULT_IMAGE.relative_to(REPO_ROOT)}; if that is missing, matplotlib's grace_hopper.jpg, said loudly in the report)")
    parser.add_argument("--target-category", type=_category, default=None,
                        help="explain this ImageNet class (0..999) instead of each run's argmax (default: the argmax)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where both frameworks run")
    parser.add_argument("--jobs", type=_positive_int, default=2,
                        help="at most N worker processes at once (and no more than cores / --threads); "
                        "it changes the wall time, never a number")
    parser.add_argument("--threads", type=_positive_int, default=DEFAULT_THREADS,
                        help="threads each worker process computes with. float32 results of both frameworks depend "
                        "on it in their last bits, so it is fixed for the whole run (and part of the upstream cache key); "
                        "--jobs then only decides how many workers run side by side (at most cores / threads)")
    parser.add_argument("--out", default="reports", help="output directory for the report and artifacts")
    parser.add_argument("--no-cache", action="store_true", help="recompute the upstream side instead of reusing cached results")
    parser.add_argument("--no-weight-reuse", action="store_true",
                        help="recompute ScoreCAM/AblationCAM channel weights for every case instead of reusing them "
                        "from a byte-identical earlier pass (the eigen_smooth twin, aug_smooth's identity variant)")
    parser.add_argument("--case-timeout", type=float, default=3 * 3600.0, help="seconds after which a worker is killed and its cases reported as errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


def _check_device(device: str) -> None:
    if device != "gpu":
        return
    import paddle
    import torch

    if not (paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        raise UserError("--device gpu: this Paddle build has no CUDA or no GPU is visible; use --device cpu")
    if not torch.cuda.is_available():
        raise UserError("--device gpu: torch sees no CUDA device; use --device cpu")


def _check_writable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output directory {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"output directory {out} is not writable ({error.strerror})") from None


def _resolve_image(spec: Optional[str]):
    from paddle_impl.image_io import load_rgb_image
    from paddle_impl.weights import sha256_of

    fallback = False
    if spec is None:
        path = DEFAULT_IMAGE
        if not path.exists():
            from tools.fixtures import fallback_image

            found = fallback_image()
            if found is None:
                raise UserError(f"{DEFAULT_IMAGE} is missing (run `make fixtures`) and no fallback image is installed")
            path = Path(found)
            fallback = True
            print(f"warning: {DEFAULT_IMAGE} is missing (run `make fixtures`); using {path} instead", file=sys.stderr)
    else:
        path = Path(spec)
    rgb, note = load_rgb_image(path)
    info = {"path": os.path.relpath(path, REPO_ROOT) if path.is_absolute() else str(path),
            "sha256": sha256_of(path), "note": note, "fallback": fallback, "size": list(rgb.shape[:2])}
    return path.resolve(), info


def _replace_all(out: Path, texts: Dict[str, str]) -> None:
    """Replace every ``out/NAME`` with its text, or (on any error) leave every old file as it was.

    Each new file is first written in full under a temporary name (that is
    where a full disk shows), then all are renamed into place; if a rename
    fails, the ones already renamed are put back from backups (hard links, or
    the old bytes where the file system has no hard links).
    """
    from paddle_impl.atomic import write_bytes, write_text

    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    staged: Dict[Path, Path] = {}
    backups: Dict[Path, Union[None, Path, bytes]] = {}
    renamed: List[Path] = []
    try:
        for name, text in texts.items():
            staged[out / name] = write_text(out / f".{name}.{tag}.new", text)
        for target in staged:
            backups[target] = None
            if target.exists():
                link = out / f".{target.name}.{tag}.old"
                try:
                    os.link(target, link)
                    backups[target] = link
                except OSError:
                    backups[target] = target.read_bytes()
        for target, new in staged.items():
            os.replace(new, target)
            renamed.append(target)
    except BaseException:
        for target in reversed(renamed):
            backup = backups[target]
            with contextlib.suppress(OSError):
                if backup is None:
                    target.unlink()
                elif isinstance(backup, bytes):
                    write_bytes(target, backup)
                else:
                    os.replace(backup, target)
        raise
    finally:
        for leftover in [*staged.values(), *(b for b in backups.values() if isinstance(b, Path))]:
            with contextlib.suppress(OSError):
                leftover.unlink()


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_errors("python -m parity", debug=args.debug):
        return _run(args)


def _run(args) -> int:
    from paddle_impl.weights import ensure_paddle_weights, resolve_weights, sha256_of, weights_identity
    from parity.config import fault_injection_from_env, make_config
    from parity.provenance import base_provenance
    from parity.report import REPORT_NAME, ensure_diff_images, render_markdown, render_summary_markdown, summary_line
    from parity.runner import LiveProcesses, run_matrix
    from parity.schedule import schedule_in_words

    out = Path(args.out)
    _check_device(args.device)
    image, image_info = _resolve_image(args.image)
    torch_weights = resolve_weights(args.weights)
    try:
        paddle_weights = ensure_paddle_weights(torch_weights)
    except UserError as error:  # a key/shape mismatch does not say which file it is about
        if str(torch_weights) in str(error):
            raise
        raise UserError(f"weights file {torch_weights}: {error}") from None
    _check_writable(out)

    provenance = base_provenance()
    provenance.update(
        device=args.device, dtype=args.dtype, profile=args.profile, image=image_info,
        weights={"source": args.weights, "identity": weights_identity(torch_weights),
                 "torch_path": os.path.relpath(torch_weights, REPO_ROOT), "torch_sha256": sha256_of(torch_weights),
                 "paddle_path": os.path.relpath(paddle_weights, REPO_ROOT), "paddle_sha256": sha256_of(paddle_weights)},
        target_rule="argmax" if args.target_category is None else f"category {args.target_category}",
        threads=args.threads, jobs=args.jobs, cache="off" if args.no_cache else "on",
    )
    config = make_config(
        profile=args.profile, dtype=args.dtype, out=out, image=image, image_sha256=image_info["sha256"],
        torch_weights=torch_weights, paddle_weights=paddle_weights,
        weights_identity=provenance["weights"]["identity"], methods=args.methods, smooths=args.smooth,
        device=args.device, jobs=args.jobs, threads=args.threads, target_category=args.target_category, use_cache=not args.no_cache,
        reuse_weights=not args.no_weight_reuse, case_timeout=args.case_timeout,
        inject_fault=fault_injection_from_env(),
    )

    live = LiveProcesses()
    terminated = []

    def on_sigterm(signum, frame):
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    started = time.perf_counter()

    def progress(record, done, total):
        status = "ERROR" if record["error"] else ("pass" if record["passed"] else "FAIL")
        detail = f"cam max|Δ| {record['cam_max_abs_diff']:.2e}" if record["cam_max_abs_diff"] is not None else record["error"].splitlines()[0]
        print(f"[{done:2d}/{total}] {record['id']:<28s} {status:<5s} {detail}", file=sys.stderr, flush=True)

    def on_schedule(schedule):
        provenance["schedule"] = schedule_in_words(schedule)
        print(f"python -m parity: {schedule_in_words(schedule)}", file=sys.stderr, flush=True)

    try:
        records = run_matrix(config, live=live, progress=progress, on_schedule=on_schedule)
    except KeyboardInterrupt:
        live.kill_all()
        if terminated and not args.debug:
            print("python -m parity: terminated (SIGTERM)", file=sys.stderr)
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    except OSError as error:
        # Case artifacts are written as the run goes (each file atomically); a full disk stops it here.
        live.kill_all()
        raise UserError(f"cannot write results under {out}: {error.strerror or error}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    provenance["wall_seconds"] = round(time.perf_counter() - started, 1)

    results = {
        "provenance": provenance,
        "summary": {
            "cases": len(records),
            "passed": sum(r["passed"] for r in records),
            "failed": sum((not r["passed"]) and r["error"] is None for r in records),
            "errors": sum(r["error"] is not None for r in records),
            "overlays_identical": sum(r["overlay_identical_fraction"] == 1.0 for r in records),
        },
        "cases": records,
    }
    try:
        ensure_diff_images(results, out)
        _replace_all(out, {
            "parity.json": json.dumps(results, indent=1, allow_nan=True),
            "parity_diff.log": "\n\n".join(r["message"] for r in records) + "\n",
            REPORT_NAME: render_markdown(results, out_dir=out),
            "parity_summary.md": render_summary_markdown(results),
        })
    except OSError as error:
        raise UserError(f"cannot write the report to {out}: {error.strerror or error}") from None
    print(summary_line(results))
    print(f"report: {out / 'parity.md'}")
    return 0 if all(r["passed"] for r in records) else 1
