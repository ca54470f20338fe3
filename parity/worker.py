"""Run one framework's side of a group of parity cases, in a process of its own.

``python -m parity.worker JOB.json`` reads a job (framework, methods, which
smoothing modes, image, setup, weights, dtype, device, threads), runs each
CAM as a user of that library would, and writes under the job's ``out_dir``:
``<method>/<smooth>/<stage>.npy`` for every recorded stage and
``result.json`` with timings.  One framework per process keeps torch's and
Paddle's thread pools from fighting and makes the timings fair.

The torch side imports the unmodified ``pytorch_grad_cam``; the only thing
the harness adds is the stage recorder (see ``parity.stages``), which passes
arguments and results through untouched.  Its copies cost time, so a case's
``seconds`` here is a recorded call's; the benchmark times the plain call in
``parity.bench_worker`` instead.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from parity.registry import Setup

__all__ = ["WorkerJob", "run_job", "job_file_main", "worker_environment", "THREAD_ENV_VARS", "load_input_image", "batch_of", "overlay_picture"]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def worker_environment(threads: int) -> Dict[str, str]:
    """The environment of a worker process: the repo on the path, no progress bars, ``threads`` threads.

    The thread count goes into the libraries' own variables too, so that every
    pool (OpenMP, MKL, OpenBLAS) a framework starts has the size the worker
    then sets with ``torch.set_num_threads`` / Paddle's ``set_num_threads``.
    """
    env = dict(os.environ)
    env.update(PYTHONPATH=str(Path(__file__).resolve().parent.parent), PADDLE_GRADCAM_PROGRESS="0", PYTHONUNBUFFERED="1")
    env.update({name: str(threads) for name in THREAD_ENV_VARS})
    return env


@dataclass
class WorkerJob:
    framework: str  # "torch" | "paddle"
    methods: List[str]
    aug_smooth: bool
    eigen_modes: List[bool]
    image: str
    setup: Setup
    torch_weights: str
    paddle_weights: str
    dtype: str
    device: str
    threads: int
    out_dir: str
    reuse_weights: bool = True
    batch_size: Optional[int] = None
    inject_fault: Optional[str] = None  # tests only: "crash" | "hang"
    # Non-augmented eigen modes run after the augmented ones in the same process.
    # aug_smooth's variant (no flip, factor 1) is the plain input itself, so with
    # weight reuse their channel weights come from that variant instead of
    # another full ScoreCAM/AblationCAM pass.
    plain_eigen_modes: List[bool] = field(default_factory=list)
    # A *weights unit*: compute only the channel weights of aug_smooth's variant ``variant``
    # (an index into the CAM's own test-time transforms) by a plain call of the CAM on that
    # variant's input, which hands ``get_cam_weights`` exactly the arguments the variant's pass
    # inside ``cam(aug_smooth=True)`` hands it.  The weights are written keyed by the digest of
    # those arguments.
    variant: Optional[int] = None
    # Directories of finished weights units: their weights seed the memo of a cases job, which then
    # finds every pass's weights there as long as its arguments are the same to the bit.
    weights_from: List[str] = field(default_factory=list)
    # False: the Paddle side runs every forward in the dynamic graph (a recheck of a float32 case, see
    # parity.runner.recheck_in_float64); True: the compiled engines a user's repeated calls get.
    compiled_engines: bool = True

    @property
    def modes(self) -> List[Tuple[bool, bool]]:
        """(aug_smooth, eigen_smooth) of each case, in the order they run."""
        return [(self.aug_smooth, e) for e in self.eigen_modes] + [(False, e) for e in self.plain_eigen_modes]

    @property
    def is_unit(self) -> bool:
        return self.variant is not None

    @property
    def method(self) -> str:
        """The method of a one-method job (weights units, the heavy methods' jobs, views)."""
        if len(self.methods) != 1:
            raise ValueError(f"a job of {len(self.methods)} methods has no single method")
        return self.methods[0]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "WorkerJob":
        data = json.loads(text)
        setup = dict(data.pop("setup"))
        if setup.get("size") is not None:
            setup["size"] = tuple(setup["size"])
        return cls(setup=Setup(**setup), **data)


def load_input_image(path: str, size: Optional[Union[int, Tuple[int, int]]], dtype: str) -> np.ndarray:
    """The RGB float image both sides start from (same loader, same resize to (width, height); an int is square)."""
    import cv2

    from paddle_impl.image_io import load_rgb_image

    rgb, _ = load_rgb_image(path)
    if isinstance(size, int):
        size = (size, size)
    if size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(size):
        rgb = cv2.resize(rgb, tuple(size), interpolation=cv2.INTER_AREA)
    return rgb.astype(dtype)


def batch_of(tensor, batch: int, framework: str):
    """The (1, C, H, W) input repeated to a batch of ``batch``, as upstream's own tests build theirs."""
    if batch == 1:
        return tensor
    if framework == "torch":
        return tensor.repeat(batch, 1, 1, 1)
    import paddle

    return paddle.tile(tensor, [batch, 1, 1, 1])


class _TorchSide:
    def __init__(self, job: WorkerJob) -> None:
        import torch

        torch.set_num_threads(job.threads)
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.image import preprocess_image, show_cam_on_image, show_factorization_on_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        from parity.weights import build_torch_model, load_torch_state_dict

        self.torch = torch
        self.library = pytorch_grad_cam
        self.preprocess_image = preprocess_image
        self.show_cam_on_image = show_cam_on_image
        self.show_factorization_on_image = show_factorization_on_image
        self.target_class = ClassifierOutputTarget
        self.device = torch.device("cuda" if job.device == "gpu" else "cpu")
        state = load_torch_state_dict(Path(job.torch_weights))
        self.model = build_torch_model(job.setup.model, state, job.dtype).to(self.device)

    def to_numpy(self, tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy().copy()

    def input_tensor(self, rgb: np.ndarray, batch: int):
        tensor = self.preprocess_image(rgb, mean=IMAGENET_MEAN, std=IMAGENET_STD).to(self.device)
        return batch_of(tensor, batch, "torch")


class _PaddleSide:
    def __init__(self, job: WorkerJob) -> None:
        import paddle

        paddle.set_device("gpu" if job.device == "gpu" else "cpu")
        paddle.base.core.set_num_threads(job.threads)
        import paddle_impl
        from paddle_impl.utils.image import preprocess_image, show_cam_on_image, show_factorization_on_image
        from paddle_impl.utils.model_targets import ClassifierOutputTarget
        from parity.weights import build_paddle_model, load_paddle_state_dict

        self.library = paddle_impl
        self.preprocess_image = preprocess_image
        self.show_cam_on_image = show_cam_on_image
        self.show_factorization_on_image = show_factorization_on_image
        self.target_class = ClassifierOutputTarget
        self.model = build_paddle_model(job.setup.model, load_paddle_state_dict(Path(job.paddle_weights)), job.dtype)

    def to_numpy(self, tensor) -> np.ndarray:
        return tensor.detach().numpy().copy()

    def input_tensor(self, rgb: np.ndarray, batch: int):
        return batch_of(self.preprocess_image(rgb, mean=IMAGENET_MEAN, std=IMAGENET_STD), batch, "paddle")


def _peak_rss_mb() -> Optional[float]:
    """This process's peak resident memory so far: interpreter, framework, model and the CAM calls."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KiB on Linux


def _inject_fault(job: WorkerJob) -> None:
    if job.inject_fault:
        # Something for the runner's output tail to show.
        print(f"parity.worker: injected fault {job.inject_fault!r} ({job.framework} {','.join(job.methods)})",
              file=sys.stderr, flush=True)
    if job.inject_fault == "crash":
        os.abort()
    if job.inject_fault == "hang":
        time.sleep(10**6)


def _weights_dir(out_dir: str) -> Path:
    return Path(out_dir) / "weights"


def _load_seeds(directories: List[str]) -> Dict[str, np.ndarray]:
    seeds = {}
    for directory in directories:
        for path in sorted(_weights_dir(directory).glob("*.npy")):
            seeds[path.stem] = np.load(path, allow_pickle=False)
    return seeds


def overlay_picture(side, spec, rgb: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The uint8 picture a user would look at: the CAM blended over the image (DFF: its concepts), per batch item."""
    from parity.recipes import factorization_colors

    if spec.recipe == "dff":
        return np.stack([
            side.show_factorization_on_image(rgb, np.array(item, copy=True), colors=factorization_colors(item.shape[0]),
                                             image_weight=0.3)
            for item in cam
        ])
    return np.stack([side.show_cam_on_image(rgb, item, use_rgb=True) for item in cam])


def _run_method(job: WorkerJob, side, name: str, rgb: np.ndarray, input_tensor, targets, seeds) -> Dict:
    """Every case of one method; returns its entry of ``result.json``."""
    if job.inject_fault == f"raise:{name}":
        raise RuntimeError(f"injected fault 'raise' ({job.framework} {name})")
    from paddle_impl.atomic import save_npy
    from paddle_impl.layer_paths import resolve_layers
    from parity.recipes import (attach_recorder, build_cam, call_cam, compiled_prefix_from_the_first_call,
                                dynamic_graph_only, released)
    from parity.registry import METHODS, smooth_name
    from parity.stages import StageRecorder

    spec = METHODS[name]
    torch_layers, paddle_layers = job.setup.layers()
    layers = resolve_layers(side.model, torch_layers if job.framework == "torch" else paddle_layers)
    recorder = StageRecorder(side.to_numpy, reuse_weights=job.is_unit or (job.reuse_weights and spec.reruns_network_per_channel))
    recorder.weights_memo.update(seeds)
    cases: Dict[str, Dict] = {}
    reshape = _reshape_transform(job, side.model)
    with released(build_cam(spec, side.library, job.framework, side.model, layers, reshape)) as cam:
        if job.batch_size is not None and hasattr(cam, "batch_size"):
            cam.batch_size = job.batch_size
        if hasattr(cam, "engine_threads"):
            cam.engine_threads = job.threads
        if job.compiled_engines:
            compiled_prefix_from_the_first_call(cam)
        else:
            dynamic_graph_only(cam)
        attach_recorder(spec, cam, recorder)
        if job.is_unit:
            variant = list(cam.tta_transforms)[job.variant]
            started = time.perf_counter()
            call_cam(spec, cam, variant.augment_image(input_tensor), targets, False, False)
            for key, weights in recorder.weights_memo.items():
                save_npy(_weights_dir(job.out_dir) / f"{key}.npy", weights)
            return {"kind": "weights", "variant": job.variant, "seconds": time.perf_counter() - started,
                    "keys": sorted(recorder.weights_memo)}
        for aug_smooth, eigen_smooth in job.modes:
            smooth = smooth_name(aug_smooth, eigen_smooth)
            if smooth not in spec.smooths:
                continue
            recorder.start_case()
            started = time.perf_counter()
            produced = call_cam(spec, cam, input_tensor, targets, aug_smooth, eigen_smooth)
            seconds = time.perf_counter() - started
            stages = recorder.stacked()
            stages.update(produced)
            stages["overlay"] = overlay_picture(side, spec, rgb, stages["cam"])
            for stage, array in stages.items():
                save_npy(Path(job.out_dir) / name / smooth / f"{stage}.npy", array)
            cases[smooth] = {
                "seconds": seconds,
                "stages": sorted(stages),
                "weights_reused": recorder.weights_reused,
                "weights_computed": recorder.weights_computed,
                "weights_seeded": bool(seeds),
                "target_categories": stages["targets"].tolist() if "targets" in stages else [],
            }
    return {"cases": cases}


def _reshape_transform(job: WorkerJob, model):
    """The model's reshape_transform on this side, as its zoo entry declares it (None for the CNNs)."""
    from parity.model_zoo import arch

    spec = arch(job.setup.model)
    declared = spec.torch_reshape if job.framework == "torch" else spec.paddle_reshape
    if not declared:
        return None
    from parity.hubs import resolve_reshape

    return resolve_reshape(declared, job.framework, model, job.setup.size)


_METHOD_ERROR_CHARS = 3000


def method_error(result: Optional[Dict], method: str) -> Optional[str]:
    """What one method of a shared worker raised (its traceback's end), or None."""
    return ((result or {}).get("method_errors") or {}).get(method)


def run_job(job: WorkerJob) -> Dict:
    from paddle_impl.atomic import write_text

    _inject_fault(job)
    side = _TorchSide(job) if job.framework == "torch" else _PaddleSide(job)
    rgb = load_input_image(job.image, job.setup.size, job.dtype)
    input_tensor = side.input_tensor(rgb, job.setup.batch)
    category = job.setup.target_category
    targets = None if category is None else [side.target_class(category) for _ in range(job.setup.batch)]
    seeds = _load_seeds(job.weights_from)
    result: Dict = {"framework": job.framework, "methods": list(job.methods), "threads": job.threads}
    if job.is_unit:
        result.update(_run_method(job, side, job.method, rgb, input_tensor, targets, seeds))
    else:
        # Methods that share a process stay independent: one that raises fails its own cases only.
        result["cases"], result["method_errors"] = {}, {}
        for name in job.methods:
            try:
                result["cases"][name] = _run_method(job, side, name, rgb, input_tensor, targets, seeds)["cases"]
            except Exception:
                if len(job.methods) == 1:
                    raise
                text = traceback.format_exc()
                print(text, file=sys.stderr, flush=True)
                result["method_errors"][name] = f"{job.framework} side, {name}:\n" + text[-_METHOD_ERROR_CHARS:]
    # float32 results depend on the thread count in their last bits (oneDNN splits reductions by
    # thread), so the count travels with them into the cache and the report.
    result["peak_rss_mb"] = _peak_rss_mb()
    write_text(Path(job.out_dir) / "result.json", json.dumps(result, indent=1))
    return result


def job_file_main(argv: Optional[List[str]], program: str, load_job: Callable[[str], object],
                  run: Callable[[object], object]) -> int:
    """A worker process's entry point: ``python -m PROGRAM JOB.json``; 0 when ``run`` finished, 1 on its exception."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m {program} JOB.json", file=sys.stderr)
        return 2
    job = load_job(Path(argv[0]).read_text())
    os.environ.setdefault("PADDLE_GRADCAM_PROGRESS", "0")
    try:
        run(job)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return job_file_main(argv, "parity.worker", WorkerJob.from_json, run_job)


if __name__ == "__main__":
    sys.exit(main())
