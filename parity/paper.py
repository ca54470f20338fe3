"""``python -m parity.paper``: the Grad-CAM++ paper's faithfulness table, the port and upstream side by side.

Chattopadhyay et al., "Grad-CAM++" (WACV 2018, https://arxiv.org/abs/1710.11063), compare explanation
methods by how much of the class's confidence the explanation alone keeps.  For image i, class c its
top class, Y_i the model's probability of c on the image and O_i on the image multiplied by its
explanation map::

    Average Drop %                 = 100/N · Σ_i max(0, Y_i − O_i) / Y_i
    % Increase in Confidence       = 100/N · Σ_i [Y_i < O_i]

Upstream implements the two per image as metrics (``DropInConfidence`` gives max(0, Y − O),
``IncreaseInConfidence`` gives [O > Y]) on the *normalised* input tensor; the port has the same
classes (``paddle_impl.metrics.cam_mult_image``).  Each framework runs in a process of its own: every
method explains each image's top class, and the metrics score the softmax probability of that class
(``ClassifierOutputSoftmaxTarget``).  The table puts the two frameworks' averages next to each other,
with the largest per-image differences of the maps and of the metrics.

With the seeded default weights the network is untrained (its top class on an image is an accident of the
initialisation, however confident), so the table checks that the port computes what upstream computes and
says nothing about the paper's claim; with ``--weights imagenet`` (downloads torchvision's checkpoint) or your own checkpoint it is the
paper's experiment, on these images rather than ImageNet's validation set.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from paddle_impl.errors import UserError, cli_errors
from paddle_impl.locations import data_root, default_image, fallback_image
from parity.compare import vacuous_images
from parity.registry import METHODS, Setup

__all__ = ["main", "build_parser", "average_drop", "increase_in_confidence", "render_markdown", "default_images"]

PROG = "python -m parity.paper"
# A factorisation explains concepts, not a class: it has no map of the explained class to score.
PAPER_METHODS = [name for name, spec in METHODS.items() if spec.recipe != "dff"]


def default_images() -> List[Path]:
    """both.png, and the photographs matplotlib ships (what the project can use without a download)."""
    images = [default_image()]
    sample = fallback_image()
    if sample is not None:
        images += [sample, sample.with_name("Minduka_Present_Blue_Pack.png")]
    return [path for path in images if path.is_file()]


def average_drop(drops: List[float], y: List[float]) -> float:
    """100/N Σ max(0, Y − O) / Y, from upstream's per-image DropInConfidence (max(0, Y − O)) and Y."""
    return float(100.0 * np.mean(np.asarray(drops, np.float64) / np.asarray(y, np.float64)))


def increase_in_confidence(increases: List[float]) -> float:
    """100/N Σ [Y < O], from upstream's per-image IncreaseInConfidence ([O > Y] as 0/1)."""
    return float(100.0 * np.mean(np.asarray(increases, np.float64)))


# -- one framework, in a process of its own ---------------------------------------------------
def _worker(job: Dict) -> Dict:
    from parity.recipes import build_cam, call_cam, released
    from parity.worker import IMAGENET_MEAN, IMAGENET_STD, load_input_image

    framework = job["framework"]
    if framework == "torch":
        import pytorch_grad_cam as library
        import torch
        from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
        from pytorch_grad_cam.utils.image import preprocess_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

        from parity.weights import build_torch_model, load_torch_state_dict

        torch.set_num_threads(job["threads"])
        model = build_torch_model(job["model"], load_torch_state_dict(Path(job["torch_weights"])))

        def probabilities(x):
            with torch.no_grad():
                return torch.softmax(model(x), dim=-1).numpy()
    else:
        import paddle

        import paddle_impl as library
        from paddle_impl.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
        from paddle_impl.utils.image import preprocess_image
        from paddle_impl.utils.model_targets import ClassifierOutputSoftmaxTarget
        from parity.weights import build_paddle_model, load_paddle_state_dict

        paddle.base.core.set_num_threads(job["threads"])
        model = build_paddle_model(job["model"], load_paddle_state_dict(Path(job["paddle_weights"])))

        def probabilities(x):
            with paddle.no_grad():
                return paddle.nn.functional.softmax(model(x), axis=-1).numpy()

    from paddle_impl.layer_paths import resolve_layers

    def stacked(tensors):
        if len(tensors) == 1:
            return tensors[0]
        return torch.cat(tensors) if framework == "torch" else paddle.concat(tensors)

    results: Dict = {"framework": framework, "images": {}}
    batch = int(job.get("batch") or 1)
    # A batch of several images is explained and scored in one call per method, as a user's batch would
    # be; the scores are still recorded (and compared) per image.
    for first in range(0, len(job["images"]), batch):
        chunk = job["images"][first:first + batch]
        x = stacked([preprocess_image(load_input_image(image, tuple(job["size"]), "float32"),
                                      mean=IMAGENET_MEAN, std=IMAGENET_STD) for image in chunk])
        probs = probabilities(x)
        categories = [int(np.argmax(row)) for row in probs]
        per_image: List[Dict] = [{} for _ in chunk]
        for name in job["methods"]:
            spec = METHODS[name]
            layers = resolve_layers(model, job["refine_layers"] if spec.recipe == "refine" else job["layers"])
            started = time.perf_counter()
            with released(build_cam(spec, library, framework, model, layers)) as cam:
                if spec.draws_random:
                    np.random.seed(0)
                grayscale = call_cam(spec, cam, x, None, False, False)["cam"]
            targets = [ClassifierOutputSoftmaxTarget(category) for category in categories]
            drops = DropInConfidence()(x, grayscale, targets, model)
            increases = IncreaseInConfidence()(x, grayscale, targets, model)
            seconds = (time.perf_counter() - started) / len(chunk)
            for i, image in enumerate(chunk):
                np.save(Path(job["out"]) / f"{framework}-{Path(image).stem}-{name}.npy", grayscale[i:i + 1])
                per_image[i][name] = {"drop": float(drops[i]), "increase": float(increases[i]), "seconds": seconds}
        for i, image in enumerate(chunk):
            results["images"][image] = {"category": categories[i], "y": float(probs[i][categories[i]]),
                                        "methods": per_image[i]}
    return results


# -- both, compared ---------------------------------------------------------------------------
def _run_workers(job: Dict, work: Path) -> Dict[str, Dict]:
    from parity.worker import worker_environment

    procs = {}
    for framework in ("torch", "paddle"):
        path = work / f"{framework}.json"
        path.write_text(json.dumps(dict(job, framework=framework)))
        # output to files, not pipes: nothing is read until the end, and a full pipe would stall the worker
        with open(work / f"{framework}.log", "w") as log:
            procs[framework] = subprocess.Popen([sys.executable, "-m", "parity.paper", "--worker", str(path)],
                                                env=worker_environment(job["threads"]), stdout=log, stderr=log,
                                                stdin=subprocess.DEVNULL)
    _wait_with_progress(procs, work, len(job["images"]) * len(job["methods"]))
    results = {}
    for framework, proc in procs.items():
        if proc.returncode != 0:
            tail = (work / f"{framework}.log").read_text(errors="replace").strip()[-800:]
            raise UserError(f"the {framework} side failed (status {proc.returncode}): {tail}")
        results[framework] = json.loads((work / f"{framework}.result.json").read_text())
    return results


def _wait_with_progress(procs: Dict[str, subprocess.Popen], work: Path, total: int) -> None:
    """Wait for both sides, printing how many (image, method) maps each has made whenever that changes."""
    last = None
    while True:
        done = {framework: len(list(work.glob(f"{framework}-*.npy"))) for framework in procs}
        if done != last:
            print(f"{PROG}: " + ", ".join(f"{framework} {n}/{total}" for framework, n in done.items())
                  + " maps", file=sys.stderr, flush=True)
            last = done
        if all(proc.poll() is not None for proc in procs.values()):
            return
        time.sleep(2.0)


def compare(results: Dict[str, Dict], job: Dict, work: Path) -> List[Dict]:
    """One row per method: both frameworks' Average Drop % and % Increase, and their largest per-image gaps."""
    rows = []
    images = job["images"]
    for name in job["methods"]:
        row = {"method": name, "images": len(images)}
        for framework in ("paddle", "torch"):
            side = results[framework]["images"]
            row[f"{framework}_average_drop"] = average_drop([side[i]["methods"][name]["drop"] for i in images],
                                                            [side[i]["y"] for i in images])
            row[f"{framework}_increase"] = increase_in_confidence([side[i]["methods"][name]["increase"] for i in images])
            row[f"{framework}_seconds"] = float(sum(side[i]["methods"][name]["seconds"] for i in images))
        row["cam_max_abs_diff"] = max(
            float(np.max(np.abs(np.load(work / f"paddle-{Path(i).stem}-{name}.npy").astype(np.float64)
                                - np.load(work / f"torch-{Path(i).stem}-{name}.npy"))))
            for i in images)
        # a measure taken on two flat maps compares nothing: such images are counted and the row says so
        row["vacuous_images"] = sum(
            bool(vacuous_images(np.load(work / f"paddle-{Path(i).stem}-{name}.npy")[None],
                                np.load(work / f"torch-{Path(i).stem}-{name}.npy")[None]))
            for i in images)
        row["drop_max_abs_diff"] = max(abs(results["paddle"]["images"][i]["methods"][name]["drop"]
                                           - results["torch"]["images"][i]["methods"][name]["drop"]) for i in images)
        row["same_decisions"] = all(results["paddle"]["images"][i]["methods"][name]["increase"]
                                    == results["torch"]["images"][i]["methods"][name]["increase"] for i in images)
        rows.append(row)
    return rows


def _number(value: float, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _batch_text(batch: Optional[int]) -> str:
    return f" (explained and scored in batches of {batch}, compared per image)" if batch and batch > 1 else ""


def render_markdown(data: Dict) -> str:
    settings = data["settings"]
    lines = [
        "# The Grad-CAM++ paper's table: Average Drop % and % Increase in Confidence",
        "",
        f"Chattopadhyay et al., WACV 2018 (https://arxiv.org/abs/1710.11063), Table 1's two measures, for every "
        f"CAM method of the port and of upstream grad-cam {data['versions'].get('grad-cam', '?')}, on "
        f"{len(settings['images'])} image(s) at {settings['size'][0]}×{settings['size'][1]}"
        f"{_batch_text(settings.get('batch'))}, model "
        f"`{settings['model']}` (target layer `{settings['layers']}`), each image's top class.",
        "",
    ]
    project = data.get("project") or {}
    if project.get("commit"):
        state = {True: "uncommitted changes", False: "clean tree"}.get(project.get("dirty"), "tree state unknown")
        lines += [f"Computed at commit `{project['commit'][:12]}` ({state}) on {str(data.get('date', '?'))[:10]}.", ""]
    if settings["weights"] == "default":
        lines += [
            "> **These numbers say nothing about the paper's claim.** The weights are the seeded, untrained "
            "torchvision initialisation: the network has learned nothing, so the class it explains on each image "
            "is an accident of the initialisation, not a recognised object, however confident "
            f"(the explained classes' probabilities here: {', '.join(f'{y:.2e}' for y in data['y'])}). "
            "The table shows that the port and upstream compute the same measures; run "
            "`python -m parity.paper --weights imagenet` (downloads torchvision's IMAGENET1K_V1) or give your "
            "checkpoint for the paper's experiment.",
            "",
        ]
    lines += [
        "Average Drop % = 100/N Σ max(0, Y − O)/Y and % Increase = 100/N Σ [Y < O], where Y is the class's "
        "probability on the image and O on the image multiplied by the explanation (upstream's "
        "`DropInConfidence` / `IncreaseInConfidence` on the normalised input; lower drop and higher increase "
        "are better). max|Δ| columns: the largest per-image difference between the two frameworks, of the "
        "map and of max(0, Y − O). ⚪ vacuous: on that many images both maps are flat (max − min < 1e-6), so "
        "the two measures there compare nothing.",
        "",
        "| method | Avg Drop % Paddle | Avg Drop % upstream | % Increase Paddle | % Increase upstream "
        "| map max\\|Δ\\| | drop max\\|Δ\\| |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["rows"]:
        flat = row.get("vacuous_images") or 0
        method = row["method"] + (f" ⚪ vacuous on {flat} image(s)" if flat else "")
        lines.append(
            f"| {method} | {_number(row['paddle_average_drop'])} | {_number(row['torch_average_drop'])} "
            f"| {_number(row['paddle_increase'], 1)} | {_number(row['torch_increase'], 1)} "
            f"| {row['cam_max_abs_diff']:.1e} | {row['drop_max_abs_diff']:.1e} |"
        )
    lines += ["", "Images: " + ", ".join(f"`{Path(i).name}`" for i in settings["images"]) + ".",
              f"Command: `{settings['command']}`; {data['date']}."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    from parity.cli import _csv_choices, _positive_int

    parser = argparse.ArgumentParser(
        prog=PROG, description="The Grad-CAM++ paper's Average Drop % and % Increase in Confidence for every "
        "CAM method, the Paddle port and upstream side by side; writes OUT/paper.md and OUT/paper.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    choose_methods = _csv_choices(PAPER_METHODS, "method")
    parser.add_argument("--methods", type=lambda text: PAPER_METHODS if text == "all" else choose_methods(text),
                        default="all", help="comma-separated methods, or 'all': every CAM method but Deep Feature "
                        "Factorization, which explains concepts rather than one class")
    parser.add_argument("--images", default=None, help="comma-separated image paths; without it, both.png and "
                        "the photographs matplotlib ships")
    parser.add_argument("--size", type=_positive_int, default=224, help="images resized to SIZE x SIZE")
    parser.add_argument("--model", default="resnet50", help="model of the zoo")
    parser.add_argument("--weights", default="default", help="'default' (seeded, untrained), 'imagenet' or a .pth")
    parser.add_argument("--threads", type=_positive_int, default=1, help="threads each framework's process uses")
    parser.add_argument("--batch", type=_positive_int, default=1, help="explain and score the images in batches "
                        "of BATCH (one CAM call and one metric call per batch); the scores are compared per image")
    parser.add_argument("--out", default="reports/paper", help="output directory")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        job = json.loads(Path(args.worker).read_text())
        result = _worker(job)
        Path(args.worker).with_suffix(".result.json").write_text(json.dumps(result))
        return 0
    with cli_errors(PROG, debug=args.debug):
        return _run(args, argv if argv is not None else sys.argv[1:])


def _run(args, argv) -> int:
    from paddle_impl.atomic import write_text
    from paddle_impl.image_io import load_rgb_image
    from parity.model_zoo import arch
    from parity.weights import ensure_paddle_weights, resolve_weights
    from parity.provenance import base_provenance, portable, portable_command, project_state

    images = [Path(p.strip()) for p in args.images.split(",")] if args.images else default_images()
    for image in images:
        load_rgb_image(image)  # refuses a missing or broken image in one line, before any work
    torch_weights = resolve_weights(args.weights, arch=args.model)
    paddle_weights = ensure_paddle_weights(torch_weights, arch=args.model)
    layers = "layer4" if args.model == "resnet50" else Setup(model=args.model).layers()[0]
    job = {"methods": args.methods, "images": [str(i.resolve()) for i in images], "size": [args.size, args.size],
           "model": args.model, "torch_weights": str(torch_weights), "paddle_weights": str(paddle_weights),
           "layers": layers, "refine_layers": "layer2,layer3,layer4" if arch(args.model).family == "resnet" else layers,
           "threads": args.threads, "batch": args.batch}
    out = Path(args.out)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="parity-paper-") as work:
        job["out"] = work
        results = _run_workers(job, Path(work))
        rows = compare(results, job, Path(work))
    provenance = base_provenance()
    data = {
        "settings": {"images": [str(i) for i in images], "size": [args.size, args.size], "model": args.model,
                     "layers": layers, "weights": args.weights, "methods": args.methods, "batch": args.batch,
                     "command": portable_command(" ".join([PROG, *argv]))},
        "versions": {k: provenance.get(k) for k in ("torch", "paddlepaddle", "grad-cam")},
        "project": project_state(),
        "date": provenance["date"], "wall_seconds": round(time.perf_counter() - started, 1),
        "y": [results["torch"]["images"][i]["y"] for i in job["images"]], "rows": rows, "results": results,
    }
    data = portable(data)  # no directory of this machine in the committed table
    write_text(out / "paper.json", json.dumps(data, indent=1))
    write_text(out / "paper.md", render_markdown(data))
    print(render_markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
