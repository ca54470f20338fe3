"""``python -m parity``: the whole matrix (or a slice of it), compared and reported."""
from __future__ import annotations

import argparse
import importlib.util
import contextlib
import json
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path
from dataclasses import replace
from typing import Dict, List, Optional, Tuple, Union

# Paddle warns on import when ccache is missing (this process imports it to convert
# weights or to check --device gpu); it is about compiling C++ extensions, never done here.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

from paddle_impl.errors import UserError, cli_errors  # noqa: E402
from parity.outcome import error_headline  # noqa: E402
from paddle_impl.locations import data_root, default_image  # noqa: E402
from parity.model_zoo import arch_names  # noqa: E402
from parity.config import DEFAULT_THREADS  # noqa: E402
from parity.registry import METHODS, PROFILES, SMOOTH_MODES, Setup, resolve_methods  # noqa: E402

__all__ = ["main", "build_parser"]

REPO_ROOT = data_root()  # the checkout, or the per-user data directory when installed
DEFAULT_IMAGE = default_image()


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


def _shard(text: str) -> Tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise argparse.ArgumentTypeError(f"invalid shard {text!r}: expected K/N with 1 <= K <= N, e.g. 3/8")
    return int(match.group(1)), int(match.group(2))


def _size(text: str) -> Tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: expected WIDTHxHEIGHT, e.g. 32x40")
    return int(match.group(1)), int(match.group(2))


def _layer_paths(text: str) -> str:
    from paddle_impl.layer_paths import parse_layer_paths

    try:
        parse_layer_paths(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _pair(text: str) -> str:
    from parity.model_zoo import pair_by_id

    try:
        return pair_by_id(text).name
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
            "and weights, compare every stage, and write a reviewer report (parity.md, parity.html, parity.json, "
            "images). Exit status 0 only if every selected case passed (a model whose paddle.vision architecture "
            "differs from torchvision's is reported as such, not failed). "
            "`python -m parity merge DIR... --out DIR` combines the parts of a --shard run."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--profile", choices=list(PROFILES), default="full",
                        help="; ".join(f"{name}: {profile.description}" for name, profile in PROFILES.items()))
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="precision of the model, the input and every stage on both sides")
    # String defaults go through ``type`` like a typed value (a list) and read well in --help.
    parser.add_argument("--methods", type=_csv_choices(["all", "seed", *METHODS], "method"), default=None,
                        help="comma-separated methods; 'seed' is the eight of the original reproduction, 'all' every "
                        "CAM class of upstream 1.5.7 (default: the profile's)")
    parser.add_argument("--smooth", type=_csv_choices(list(SMOOTH_MODES), "smoothing mode"), default=None,
                        help=f"comma-separated subset of {', '.join(SMOOTH_MODES)} (default: the profile's); "
                        "a method without a mode (FinerCAM has no aug_smooth) skips it")
    parser.add_argument("--model", choices=arch_names(), default=None,
                        help="run the profile on this model of the zoo, at its default target layer unless --target-layers "
                        "(default: ResNet50, or the models the zoo and upstream-suite profiles choose)")
    parser.add_argument("--pair", type=_pair, default=None, metavar="timm/NAME:paddleclas/NAME",
                        help="run one timm <-> PaddleClas pair of the registry (parity.hubs), e.g. "
                        "timm/resnet50d:paddleclas/ResNet50_vd: both models with seeded weights, the verified transfer, "
                        "and the hubs profile's methods on it; a pair without an entry needs --target-layers and "
                        "--paddle-target-layers (default: no pair; --profile hubs runs them all)")
    parser.add_argument("--target-layers", type=_layer_paths, default=None, metavar="EXPR[,EXPR...]",
                        help="target layers as attribute/index paths on the model, e.g. 'layer4[-1],layer4[-2]' "
                        "(evaluated on both frameworks' models; default: the profile's, or the model's default)")
    parser.add_argument("--paddle-target-layers", type=_layer_paths, default=None, metavar="EXPR[,EXPR...]",
                        help="the Paddle model's target layers when its layers are named differently (default: --target-layers)")
    parser.add_argument("--batch", type=_positive_int, default=None,
                        help="repeat the image to a batch of N, as upstream's own tests do (default: 1)")
    parser.add_argument("--size", type=_size, default=None, metavar="WxH",
                        help="resize the image to WxH (default: the profile's: its own size, 64x64 for ScoreCAM/AblationCAM in quick)")
    parser.add_argument("--weights", default="default",
                        help="'default' (seeded torchvision init of the model, made once under fixtures/weights), "
                        "'imagenet' (torchvision download) or a torchvision .pth state dict of the model")
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
    parser.add_argument("--weights-units", choices=["auto", "always", "never"], default="auto",
                        help="run each aug_smooth variant of ScoreCAM/AblationCAM in a process of its own (its channel "
                        "weights), then the cases with those weights: 'auto' when a variant is long enough to be worth "
                        "it; the numbers are the same either way")
    parser.add_argument("--shard", type=_shard, default=None, metavar="K/N",
                        help="run only the K-th of N cost-balanced parts of the run and write them to --out as a "
                        "partial result; `merge` combines the N parts into one report, e.g. on N CI runners "
                        "(default: the whole run, and the report)")
    parser.add_argument("--print-cache-key", action="store_true",
                        help="print the key of this run's upstream results (versions, image, weights of its models, "
                        "threads) and exit: a CI cache of fixtures/cache/torch keyed on it is restored only where "
                        "the cached results can be used (default: run)")
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
    from parity.weights import sha256_of

    fallback = False
    if spec is None:
        path = DEFAULT_IMAGE
        if not path.exists():
            from paddle_impl.locations import fallback_image

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


def summarize(records: List[Dict]) -> Dict:
    """The run's counts by status, its verdict and verdict line (``parity.report_verdict.run_summary``)."""
    from parity.report_verdict import run_summary

    return run_summary({"cases": records})


def main(argv: Optional[List[str]] = None, prog: str = "python -m parity") -> int:
    """``python -m parity`` (``prog`` is the name the console script is called by); ``... merge DIR...`` merges shards."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        from parity.shard import RunCommand, build_merge_parser, merge

        args = build_merge_parser(f"{prog} merge").parse_args(argv[1:])
        command = RunCommand(parse_run_args=build_parser().parse_args, prepare_run=prepare_run,
                             write_results=write_results, print_progress=print_progress,
                             announce_recheck=announce_recheck)
        with cli_errors(prog, debug=args.debug):
            return merge(args, command)
    parser = build_parser()
    parser.prog = prog
    args = parser.parse_args(argv)
    args.argv = argv
    with cli_errors(prog, debug=args.debug):
        return _run(args)


_MULTI_MODEL_PROFILES = ("zoo", "upstream-suite", "upstream-suite-informative", "hubs")


def _apply_pair(args) -> None:
    """--pair runs the hubs profile on that one pair: it chooses the profile and leaves --model out."""
    if args.pair is None:
        return
    argv = getattr(args, "argv", []) or []
    chosen = [item for item in argv if item == "--profile" or item.startswith("--profile=")]
    if chosen and args.profile != "hubs":
        raise UserError(f"--pair runs the hubs profile on one pair; it cannot be combined with --profile {args.profile}")
    if args.model is not None:
        raise UserError("--pair names both models; it cannot be combined with --model")
    args.profile = "hubs"


def _setup_transform(args):
    """How the command line's --model/--target-layers/--batch/--size/--target-category change each setup."""
    given = {name: getattr(args, name) for name in ("model", "target_layers", "paddle_target_layers", "batch", "size")}
    if args.profile in ("upstream-suite", "upstream-suite-informative"):
        given["target_category"] = args.target_category
    if args.profile in _MULTI_MODEL_PROFILES and getattr(args, "pair", None) is None:
        clashing = [f"--{name.replace('_', '-')}" for name, value in given.items() if value is not None]
        if clashing:
            raise UserError(f"{', '.join(clashing)} cannot be combined with --profile {args.profile}, "
                            "which chooses its own models, layers, batches and sizes")
    if args.paddle_target_layers is not None and args.target_layers is None:
        raise UserError("--paddle-target-layers needs --target-layers (the torch side's layers)")

    def transform(setup: Setup) -> Setup:
        if args.model is not None and args.model != setup.model:
            # another architecture: the profile's ResNet50 layer names mean nothing there
            setup = replace(setup, model=args.model, torch_layers="", paddle_layers="")
        if args.target_layers is not None:
            setup = replace(setup, torch_layers=args.target_layers,
                            paddle_layers=args.paddle_target_layers or args.target_layers)
        if args.batch is not None:
            setup = replace(setup, batch=args.batch, cost_scale=setup.cost_scale * args.batch / setup.batch)
        if args.size is not None:
            setup = replace(setup, size=args.size)
        if args.target_category is not None:
            setup = replace(setup, target_category=args.target_category)
        return setup

    return transform


def _pair_cases(args, methods, transform):
    """The hubs profile's cases for the one pair of --pair (which may have no registry entry)."""
    from parity.model_zoo import UNREGISTERED_FAMILY, arch
    from parity.registry import all_cases

    spec = arch(args.pair)
    if spec.family == UNREGISTERED_FAMILY and (args.target_layers is None or args.paddle_target_layers is None):
        raise UserError(f"{spec.pair_id} has no registry entry (parity/hubs), so no default target layers: name them "
                        "on each side with --target-layers and --paddle-target-layers")

    def setups(method_spec):
        if method_spec.reruns_network_per_channel and not spec.heavy_methods or method_spec.name in dict(spec.skip_methods):
            return []
        size = spec.heavy_size if method_spec.reruns_network_per_channel else spec.input_size
        return [Setup(name=spec.name, model=spec.name, size=size)]

    profile = replace(PROFILES["hubs"], setups_of=setups)
    return all_cases(methods, args.smooth, profile, transform)


def _prepare_weights(args, models: List[str]):
    """Each model's weights pair and identity; the models whose paddle.vision twin differs, and why."""
    from parity.model_zoo import arch
    from parity.weight_transfer import ArchitecturesDiffer
    from parity.weights import ensure_paddle_weights, hub_transfer_facts, resolve_weights, sha256_of, weights_identity

    if args.weights != "default" and len(models) > 1:
        raise UserError(f"--weights {args.weights} names one model's weights, but this run uses {len(models)} models "
                        f"({', '.join(models)}); leave --weights at 'default' or choose one --model")
    pairs, provenance, unavailable = {}, {}, {}
    for model in models:
        torch_weights = resolve_weights(args.weights, arch=model)
        try:
            paddle_weights = ensure_paddle_weights(torch_weights, arch=model)
        except ArchitecturesDiffer as error:
            unavailable[model] = str(error) + _known_difference(model)
            continue
        except UserError as error:  # a key/shape mismatch does not say which file it is about
            if str(torch_weights) in str(error):
                raise
            raise UserError(f"weights file {torch_weights}: {error}") from None
        identity = weights_identity(torch_weights, arch=model)
        pairs[model] = (torch_weights, paddle_weights, identity)
        provenance[model] = {
            "source": args.weights, "identity": identity,
            "torch_path": _display(torch_weights), "torch_sha256": sha256_of(torch_weights),
            "paddle_path": _display(paddle_weights), "paddle_sha256": sha256_of(paddle_weights),
        }
        # A hub pair: which two models, the transfer's forward check, and any switch with its proof.
        provenance[model].update(hub_transfer_facts(paddle_weights))
        skipped = "; ".join(f"{name}: {why}" for name, why in arch(model).skip_methods)
        if skipped:
            provenance[model]["not run"] = skipped
    return pairs, provenance, unavailable


def _check_target_layers(args, config) -> None:
    """Layers named on the command line must exist in their side's model: refused here, before any worker runs.

    Otherwise every case of the run would end in the same worker traceback.  The
    registry's own layers are checked by its tests; only --target-layers and
    --paddle-target-layers are checked, on freshly built models of each case's
    architecture (the workers build theirs the same way, then load weights).
    """
    if args.target_layers is None:
        return
    import paddle

    from paddle_impl.layer_paths import resolve_layers
    from parity.model_zoo import arch

    wanted: Dict[str, set] = {}
    for case in config.cases:
        if case.setup.model not in config.unavailable:
            wanted.setdefault(case.setup.model, set()).add(case.setup.layers())
    paddle_option = "--paddle-target-layers" if args.paddle_target_layers is not None else "--target-layers"
    for model, layer_pairs in wanted.items():
        spec = arch(model)
        with paddle.utils.unique_name.guard():  # the workers' parameter names stay unsuffixed
            built = {"torch": spec.new_torch_model(), "paddle": spec.new_paddle_model()}
        for torch_layers, paddle_layers in sorted(layer_pairs):
            for side, option, expression in (("torch", "--target-layers", torch_layers),
                                             ("paddle", paddle_option, paddle_layers)):
                try:
                    resolve_layers(built[side], expression)
                except UserError as error:
                    raise UserError(f"{option} on the {side} side of {model}: {error}") from None


def _known_difference(model: str) -> str:
    """What the model's zoo entry says about where and why its two sides differ ('' when it says nothing)."""
    from parity.model_zoo import arch

    known = arch(model).known_difference
    return f". The registry entry says: {known}" if known else ""


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path, REPO_ROOT)
    except ValueError:  # another drive
        return str(path)


def _reports_root(out: Path) -> Path:
    """Where the reports this one links to live: the repository's reports/ when ``out`` is inside it."""
    reports = REPO_ROOT / "reports"
    try:
        Path(out).resolve().relative_to(reports.resolve())
        return reports
    except ValueError:
        return Path(out)


def console_main() -> int:
    """The ``paddle-gradcam-parity`` console script."""
    prog = "paddle-gradcam-parity"
    if not {"-h", "--help"} & set(sys.argv[1:]):
        _require_the_parity_extra(prog)
    return main(prog=prog)


def _require_the_parity_extra(prog: str) -> None:
    """One line naming the extra to install when upstream's side is missing (a plain ``pip install .``)."""
    from paddle_impl.locations import install_command

    missing = [name for name in ("torch", "torchvision", "pytorch_grad_cam") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"{prog}: error: the harness runs upstream pytorch-grad-cam, which needs {', '.join(missing)}, "
              f"not installed here: {install_command('parity')}", file=sys.stderr)
        raise SystemExit(2)


def run_cache_key(config) -> str:
    """One digest of what every upstream result of a run depends on besides the case itself."""
    import hashlib

    fields = dict(config.cache_fields, profile=config.profile, dtype=config.dtype, device=config.device,
                  weights={model: pair[2] for model, pair in sorted(config.weights.items())})
    return f"{config.profile}-{config.dtype}-{hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]}"


def prepare_run(args):
    """Everything a run is asked to do, checked before any worker starts: (config, provenance)."""
    from parity.config import fault_injection_from_env, make_config
    from parity.provenance import base_provenance

    _apply_pair(args)
    out = Path(args.out)
    transform = _setup_transform(args)
    _check_device(args.device)
    image, image_info = _resolve_image(args.image)
    methods = resolve_methods(args.methods) if args.methods else None
    config = make_config(
        profile=args.profile, dtype=args.dtype, out=out, image=image, image_sha256=image_info["sha256"], weights={},
        methods=methods, smooths=args.smooth, setup_transform=transform, device=args.device, jobs=args.jobs,
        threads=args.threads, use_cache=not args.no_cache, reuse_weights=not args.no_weight_reuse,
        split_units={"auto": None, "always": True, "never": False}[args.weights_units],
        case_timeout=args.case_timeout, inject_fault=fault_injection_from_env(),
    )
    if args.pair is not None:
        config.cases = _pair_cases(args, methods, transform)
    if not config.cases:
        raise UserError(f"no case to run: none of the selected methods has any of the modes {', '.join(args.smooth or [])}")
    config.weights, weights_provenance, config.unavailable = _prepare_weights(args, config.models)
    _check_target_layers(args, config)
    _check_writable(out)

    provenance = base_provenance()
    provenance.update(
        device=args.device, dtype=args.dtype, profile=args.profile, image=image_info, weights=weights_provenance,
        target_rule="argmax" if args.target_category is None else f"category {args.target_category}",
        threads=args.threads, jobs=args.jobs, cache="off" if args.no_cache else "on",
    )
    return config, provenance


def print_progress(record, done, total) -> None:
    if record["architecture_differs"]:
        status, detail = "ARCH", "architectures differ: " + record["architecture_differs"].splitlines()[0][:160]
    else:
        status = "ERROR" if record["error"] else ("pass" if record["passed"] else "FAIL")
        detail = (f"cam max|Δ| {record['cam_max_abs_diff']:.2e}" if record["cam_max_abs_diff"] is not None
                  else error_headline(record["error"]))
    print(f"[{done:2d}/{total}] {record['id']:<28s} {status:<5s} {detail}", file=sys.stderr, flush=True)


def print_unit_progress(job, outcome, done, total) -> None:
    """``[unit  3/18] torch scorecam variant 1 done 151 s``: the weights units print before any case can."""
    what = f"{job.framework} {','.join(job.methods)} variant {job.variant}"
    status = f"done {outcome.seconds:.0f} s" if outcome.ok else "FAILED: " + error_headline(outcome.error or "", 160)
    print(f"[unit {done:2d}/{total}] {what:<32s} {status}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def interruptible(args, out: Path, live):
    """Ctrl-C and SIGTERM stop every worker and exit 130 / 143; a full disk is a one-line error."""
    terminated = []

    def on_sigterm(signum, frame):
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
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


def announce_recheck(count: int, what: str) -> None:
    why = ("to tell float32 rounding from a real difference" if what == "float64" else
           "whose float64 rerun agrees, to tell the compiled engines' rounding from the dynamic graph's")
    print(f"python -m parity: rerunning {count} failed case(s) in {what}, {why}", file=sys.stderr, flush=True)


def write_results(out: Path, provenance: Dict, records: List[Dict]) -> int:
    """parity.json, the reports and the diff log, all or nothing; prints the verdict; returns the exit status."""
    from parity.provenance import project_state
    from parity.report import render_all, sibling_reports, summary_line, write_diff_images

    provenance["project"] = project_state()
    results = {"provenance": provenance, "summary": summarize(records), "cases": records}
    # what moved since the run this one replaces (same profile and dtype), before it is overwritten
    from parity.report_first_screen import compare_with_previous

    with contextlib.suppress(OSError, ValueError):
        previous_run = compare_with_previous(json.loads((out / "parity.json").read_text(encoding="utf-8")), results)
        if previous_run is not None:
            results["previous_run"] = previous_run
    try:
        write_diff_images(results, out)  # one |Δ| scale for the whole report, recorded in results
        texts = render_all(results, out, siblings=sibling_reports(out, _reports_root(out)))
        _replace_all(out, {
            "parity.json": json.dumps(results, indent=1, allow_nan=True),
            "parity_diff.log": "\n\n".join(r["message"] for r in records) + "\n",
            **texts,
        })
    except OSError as error:
        raise UserError(f"cannot write the report to {out}: {error.strerror or error}") from None
    print(summary_line(results))
    print(f"report: {out / 'parity.md'}")
    root = _reports_root(out)
    if Path(root).resolve() != Path(out).resolve():
        # a report under reports/: the one index that lists every report gets its new verdict and commit
        from parity.report_index import write_index

        try:
            print(f"index: {write_index(root)}")
        except OSError as error:
            print(f"python -m parity: the index {root / 'README.md'} was not rewritten: {error}", file=sys.stderr)
    # A model whose paddle.vision twin computes another function is reported, not failed: no port can pass it.
    # Nor is a float32 case whose float64 rerun passes: the port computes what upstream computes.
    # A vacuous case (both maps flat) fails the run, except in upstream's own 32x32 matrix, which shows them.
    from parity.report_verdict import vacuous_allowed

    vacuous_ok = vacuous_allowed(provenance.get("profile"))
    return 0 if records and all(status_allows_success(r, vacuous_ok) for r in records) else 1


def status_allows_success(record: Dict, vacuous_ok: bool = False) -> bool:
    from parity.report_verdict import status_allows_success as allows

    return allows(record, vacuous_ok)


def _run(args) -> int:
    from parity.runner import LiveProcesses, recheck_in_float64, run_matrix
    from parity.schedule import schedule_in_words

    config, provenance = prepare_run(args)
    if args.print_cache_key:
        print(run_cache_key(config))
        return 0
    out = Path(args.out)
    live = LiveProcesses()
    started = time.perf_counter()

    def on_schedule(schedule):
        provenance["schedule"] = schedule_in_words(schedule)
        print(f"python -m parity: {schedule_in_words(schedule)}", file=sys.stderr, flush=True)

    if args.shard is not None:
        from parity.shard import run_shard

        with interruptible(args, out, live):
            return run_shard(config, provenance, args.shard, argv=args.argv, live=live)
    with interruptible(args, out, live):
        records = run_matrix(config, live=live, progress=print_progress, on_schedule=on_schedule,
                             unit_progress=print_unit_progress)
        recheck_in_float64(config, records, live, on_start=announce_recheck)
    provenance["wall_seconds"] = round(time.perf_counter() - started, 1)
    return write_results(out, provenance, records)
