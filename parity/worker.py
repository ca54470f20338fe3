"""Run one framework's side of a group of parity cases, in a process of its own.

``python -m parity.worker JOB.json`` reads a job (framework, method, which
smoothing modes, image, weights, dtype, device, threads), runs
the CAM as a user of that library would, and writes under the job's
``out_dir``: ``<smooth>/<stage>.npy`` for every recorded stage and
``result.json`` with timings.  One framework per process keeps torch's and
Paddle's thread pools from fighting and makes the timings fair.

The torch side imports the unmodified ``pytorch_grad_cam``; the only thing
the harness adds is the stage recorder (see ``parity.stages``), which passes
arguments and results through untouched.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = ["WorkerJob", "run_job", "worker_environment", "THREAD_ENV_VARS"]

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
    method: str
    aug_smooth: bool
    eigen_modes: List[bool]
    image: str
    image_size: Optional[int]
    target_layer: str
    torch_weights: str
    paddle_weights: str
    dtype: str
    device: str
    threads: int
    out_dir: str
    target_category: Optional[int] = None
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

    @property
    def modes(self) -> List[Tuple[bool, bool]]:
        """(aug_smooth, eigen_smooth) of each case, in the order they run."""
        return [(self.aug_smooth, e) for e in self.eigen_modes] + [(False, e) for e in self.plain_eigen_modes]

    @property
    def is_unit(self) -> bool:
        return self.variant is not None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "WorkerJob":
        return cls(**json.loads(text))


def load_input_image(path: str, size: Optional[int], dtype: str) -> np.ndarray:
    """The RGB float image both sides start from (same loader, same resize)."""
    import cv2

    from paddle_impl.image_io import load_rgb_image

    rgb, _ = load_rgb_image(path)
    if size is not None and rgb.shape[:2] != (size, size):
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return rgb.astype(dtype)


class _TorchSide:
    def __init__(self, job: WorkerJob) -> None:
        import torch

        torch.set_num_threads(job.threads)
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.image import preprocess_image, show_cam_on_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        from paddle_impl.weights import load_torch_state_dict, torch_resnet50

        self.torch = torch
        self.library = pytorch_grad_cam
        self.preprocess_image = preprocess_image
        self.show_cam_on_image = show_cam_on_image
        self.target_class = ClassifierOutputTarget
        self.device = torch.device("cuda" if job.device == "gpu" else "cpu")
        self.model = torch_resnet50(load_torch_state_dict(Path(job.torch_weights)), job.dtype).to(self.device)

    def to_numpy(self, tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy().copy()

    def input_tensor(self, rgb: np.ndarray):
        return self.preprocess_image(rgb, mean=IMAGENET_MEAN, std=IMAGENET_STD).to(self.device)


class _PaddleSide:
    def __init__(self, job: WorkerJob) -> None:
        import paddle

        paddle.set_device("gpu" if job.device == "gpu" else "cpu")
        paddle.base.core.set_num_threads(job.threads)
        import paddle_impl
        from paddle_impl.utils.image import preprocess_image, show_cam_on_image
        from paddle_impl.utils.model_targets import ClassifierOutputTarget
        from paddle_impl.weights import load_paddle_state_dict, paddle_resnet50

        self.library = paddle_impl
        self.preprocess_image = preprocess_image
        self.show_cam_on_image = show_cam_on_image
        self.target_class = ClassifierOutputTarget
        self.model = paddle_resnet50(load_paddle_state_dict(Path(job.paddle_weights)), job.dtype)

    def to_numpy(self, tensor) -> np.ndarray:
        return tensor.detach().numpy().copy()

    def input_tensor(self, rgb: np.ndarray):
        return self.preprocess_image(rgb, mean=IMAGENET_MEAN, std=IMAGENET_STD)


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
        print(f"parity.worker: injected fault {job.inject_fault!r} ({job.framework} {job.method})", file=sys.stderr, flush=True)
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


def run_job(job: WorkerJob) -> Dict:
    from paddle_impl.atomic import save_npy, write_text
    from parity.registry import METHODS, smooth_name
    from parity.stages import StageRecorder

    _inject_fault(job)
    spec = METHODS[job.method]
    side = _TorchSide(job) if job.framework == "torch" else _PaddleSide(job)
    cam_class = getattr(side.library, spec.torch_class_name if job.framework == "torch" else spec.paddle_class_name)
    rgb = load_input_image(job.image, job.image_size, job.dtype)
    input_tensor = side.input_tensor(rgb)
    targets = None if job.target_category is None else [side.target_class(job.target_category)]

    recorder = StageRecorder(side.to_numpy, reuse_weights=job.is_unit or (job.reuse_weights and spec.reruns_network_per_channel))
    seeds = _load_seeds(job.weights_from)
    recorder.weights_memo.update(seeds)
    target_layer = getattr(side.model, job.target_layer)
    cases = {}
    result = {"framework": job.framework, "method": job.method, "threads": job.threads}
    with cam_class(model=side.model, target_layers=[target_layer]) as cam:
        if job.batch_size is not None and hasattr(cam, "batch_size"):
            cam.batch_size = job.batch_size
        if hasattr(cam, "engine_threads"):
            cam.engine_threads = job.threads
        recorder.attach(cam)
        if job.is_unit:
            variant = list(cam.tta_transforms)[job.variant]
            started = time.perf_counter()
            cam(input_tensor=variant.augment_image(input_tensor), targets=targets)
            result.update(kind="weights", variant=job.variant, seconds=time.perf_counter() - started)
            for key, weights in recorder.weights_memo.items():
                save_npy(_weights_dir(job.out_dir) / f"{key}.npy", weights)
            result["keys"] = sorted(recorder.weights_memo)
        for aug_smooth, eigen_smooth in ([] if job.is_unit else job.modes):
            recorder.start_case()
            started = time.perf_counter()
            grayscale = cam(input_tensor=input_tensor, targets=targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
            seconds = time.perf_counter() - started
            stages = recorder.stacked()
            stages["cam"] = np.asarray(grayscale)
            stages["overlay"] = side.show_cam_on_image(rgb, grayscale[0], use_rgb=True)
            smooth = smooth_name(aug_smooth, eigen_smooth)
            for name, array in stages.items():
                save_npy(Path(job.out_dir) / smooth / f"{name}.npy", array)
            cases[smooth] = {
                "seconds": seconds,
                "stages": sorted(stages),
                "weights_reused": recorder.weights_reused,
                "weights_computed": recorder.weights_computed,
                "weights_seeded": bool(seeds),
                "target_categories": stages["targets"].tolist(),
            }
    # float32 results depend on the thread count in their last bits (oneDNN splits reductions by
    # thread), so the count travels with them into the cache and the report.
    result.update(cases=cases, peak_rss_mb=_peak_rss_mb())
    write_text(Path(job.out_dir) / "result.json", json.dumps(result, indent=1))
    return result


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m parity.worker JOB.json", file=sys.stderr)
        return 2
    job = WorkerJob.from_json(Path(argv[0]).read_text())
    os.environ.setdefault("PADDLE_GRADCAM_PROGRESS", "0")
    try:
        run_job(job)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
