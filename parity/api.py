"""Parity of your own model pair, from Python: ``parity.compare_models``.

The command line checks the model zoo; a user porting *their* network has a
torch model and its Paddle port in memory.  ``compare_models`` runs the
selected CAM methods on both, in this process, on the same input, records
every stage as the harness does, compares them with the same bounds, and
returns the same per-case records as ``parity.json`` holds; with ``out`` it
also writes the same report (``parity.md``, ``parity.json``, pictures).

    import parity
    records = parity.compare_models(
        torch_model, paddle_model, x,                       # x: (B, C, H, W) numpy array, or a list of them
        torch_layers=[torch_model.layer4[-1]], paddle_layers=["layer4[-1]"],
        methods=["gradcam", "scorecam"], smooth=["no_smooth", "eigen_smooth"], out="reports/mine")
    assert all(r["passed"] for r in records), [r["message"] for r in records]

Both models must be in eval mode and in the input's dtype; the Paddle model
must already hold the torch model's weights.  Layers are given as layer
objects or as path expressions (``"blocks[-1].norm1"``, resolved on each
model).  A transformer's tokens need a ``reshape_transform`` per framework:
``reshape_transform=(torch_fn, paddle_fn)``.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from parity.registry import METHODS, Case, Setup

__all__ = ["compare_models"]

Layers = Sequence[Union[str, Any]]


def _resolve(model: Any, layers: Layers) -> Tuple[List[Any], str]:
    """Layer objects, and their paths as one comma-separated text for the records."""
    from paddle_impl.layer_paths import path_of_layer, resolve_layer

    objects = [resolve_layer(model, layer) if isinstance(layer, str) else layer for layer in layers]
    return objects, ",".join(layer if isinstance(layer, str) else path_of_layer(model, layer) for layer in layers)


def _picture(input_array: np.ndarray) -> np.ndarray:
    """An (H, W, 3) float image in [0, 1] for the overlays: the first input, each channel min-max scaled."""
    first = np.asarray(input_array[0], dtype=np.float64).transpose(1, 2, 0)[:, :, :3]
    low, high = first.min(axis=(0, 1)), first.max(axis=(0, 1))
    return np.float32((first - low) / np.where(high > low, high - low, 1.0))


class _Side:
    """One framework's half: its library, its model, and how to turn its tensors into numpy."""

    def __init__(self, framework: str, model: Any, layers: Layers, reshape: Optional[Callable]) -> None:
        self.framework, self.model, self.reshape = framework, model, reshape
        self.layers, self.layer_text = _resolve(model, layers)
        if framework == "torch":
            import pytorch_grad_cam
            from pytorch_grad_cam.utils.image import show_cam_on_image, show_factorization_on_image
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            self.library = pytorch_grad_cam
        else:
            import paddle_impl
            from paddle_impl.utils.image import show_cam_on_image, show_factorization_on_image
            from paddle_impl.utils.model_targets import ClassifierOutputTarget

            self.library = paddle_impl
        self.show_cam_on_image, self.show_factorization_on_image = show_cam_on_image, show_factorization_on_image
        self.target_class = ClassifierOutputTarget

    def tensor(self, array: np.ndarray):
        if self.framework == "torch":
            import torch

            return torch.from_numpy(np.array(array, copy=True))
        import paddle

        return paddle.to_tensor(array)

    def to_numpy(self, tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy().copy() if self.framework == "torch" else tensor.detach().numpy().copy()


def _run_side(side: _Side, name: str, modes: List[str], input_array: np.ndarray, rgb: np.ndarray,
              categories: Optional[List[int]], out_dir: Path, extra: Optional[Dict] = None) -> Dict:
    """One framework's cases of one method, written as a worker writes them; its ``result.json``."""
    from paddle_impl.atomic import save_npy
    from parity.recipes import attach_recorder, build_cam, call_cam, compiled_prefix_from_the_first_call, released
    from parity.registry import SMOOTH_MODES
    from parity.stages import StageRecorder
    from parity.worker import overlay_picture

    spec = METHODS[name]
    recorder = StageRecorder(side.to_numpy, reuse_weights=spec.reruns_network_per_channel)
    targets = None if categories is None else [side.target_class(c) for c in categories]
    cases = {}
    with released(build_cam(spec, side.library, side.framework, side.model, side.layers, side.reshape, extra)) as cam:
        compiled_prefix_from_the_first_call(cam)
        attach_recorder(spec, cam, recorder)
        for smooth in modes:
            mode = SMOOTH_MODES[smooth]
            recorder.start_case()
            started = time.perf_counter()
            produced = call_cam(spec, cam, side.tensor(input_array), targets, mode.aug_smooth, mode.eigen_smooth)
            seconds = time.perf_counter() - started
            stages = recorder.stacked()
            stages.update(produced)
            stages["overlay"] = overlay_picture(side, spec, rgb, stages["cam"])
            for stage, array in stages.items():
                save_npy(out_dir / name / smooth / f"{stage}.npy", array)
            cases[smooth] = {"seconds": seconds, "weights_reused": recorder.weights_reused,
                             "weights_computed": recorder.weights_computed, "weights_seeded": False,
                             "target_categories": stages["targets"].tolist() if "targets" in stages else []}
    return {"framework": side.framework, "methods": [name], "threads": None, "cases": {name: cases}}


def compare_models(
    torch_model: Any,
    paddle_model: Any,
    input: Union[np.ndarray, Sequence[np.ndarray]],
    *,
    torch_layers: Layers,
    paddle_layers: Layers,
    methods: Sequence[str] = ("gradcam",),
    smooth: Sequence[str] = ("no_smooth",),
    reshape_transform: Tuple[Optional[Callable], Optional[Callable]] = (None, None),
    targets: Optional[Sequence[int]] = None,
    image: Optional[np.ndarray] = None,
    name: str = "custom",
    out: Optional[Union[str, Path]] = None,
    cam_kwargs: Optional[Dict[str, Tuple[Dict, Dict]]] = None,
) -> List[Dict]:
    """Compare the CAMs of ``torch_model`` (through upstream pytorch_grad_cam) and ``paddle_model`` (through the port).

    ``input`` is one (B, C, H, W) numpy array fed to both, or a list of
    them (different images and sizes): each is compared as its own setup
    (named ``NAME#i``) and its records are returned in order; ``targets`` the
    class index explained for each image (default: each image's argmax, as
    upstream); ``image`` the (H, W, 3) float picture in [0, 1] the overlays are
    drawn on (default: the first image of the input, min-max scaled; with a
    list of inputs, one picture per input); ``cam_kwargs`` maps a
    method to more constructor arguments for (torch, paddle), e.g.
    ``{"ablationcam": ({"ablation_layer": AblationLayerVit()}, {"ablation_layer": paddle_impl.AblationLayerVit()})}``.  Returns one record
    per (method, smoothing mode) the method has, as in ``parity.json``; with
    ``out`` the report, the pictures and ``parity.json`` are written there.
    A case over its bound at the logits or activations names the first layer
    whose outputs differ (``first_divergent_layer``).
    """
    arrays = _input_arrays(input)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    images = _images(image, arrays)
    categories = None if targets is None else [int(c) for c in targets]
    sides = {"torch": _Side("torch", torch_model, torch_layers, reshape_transform[0]),
             "paddle": _Side("paddle", paddle_model, paddle_layers, reshape_transform[1])}
    records: List[Dict] = []
    setups: List[Setup] = []
    with tempfile.TemporaryDirectory(prefix="parity-compare-") as work:
        work = Path(work)
        report_dir = Path(out) if out is not None else work / "report"
        for index, (input_array, rgb) in enumerate(zip(arrays, images)):
            # Each input is its own setup (its size and batch), named #index when there are several.
            setup_name = name if len(arrays) == 1 else f"{name}#{index}"
            setup = Setup(name=setup_name, model=type(torch_model).__name__, torch_layers=sides["torch"].layer_text,
                          paddle_layers=sides["paddle"].layer_text, size=(input_array.shape[3], input_array.shape[2]),
                          batch=input_array.shape[0], target_category=None if categories is None else categories[0])
            setups.append(setup)
            records.extend(_compare_input(torch_model, paddle_model, sides, setup, input_array, rgb, methods, smooth,
                                          categories, cam_kwargs, work / f"input{index}", report_dir))
        if out is not None:
            _write_report(records, report_dir, setups[0])
    return records


def _input_arrays(input: Any) -> List[np.ndarray]:
    """One (B, C, H, W) array, or a list of them (sizes may differ), as contiguous arrays of one dtype."""
    items = list(input) if isinstance(input, (list, tuple)) else [input]
    if not items:
        raise ValueError("input is an empty list: give at least one (B, C, H, W) array")
    arrays = [np.ascontiguousarray(item) for item in items]
    for index, array in enumerate(arrays):
        which = "input" if len(arrays) == 1 else f"input[{index}]"
        if array.ndim != 4:
            raise ValueError(f"{which} must be one (B, C, H, W) array, got shape {array.shape}")
    dtypes = sorted({str(array.dtype) for array in arrays})
    if len(dtypes) > 1:
        raise ValueError(f"the inputs must share one dtype (the models' own), got {', '.join(dtypes)}")
    return arrays


def _images(image: Any, arrays: List[np.ndarray]) -> List[np.ndarray]:
    """The overlay picture of each input: the given one(s), else each input's first image min-max scaled."""
    if image is None:
        return [_picture(array) for array in arrays]
    images = list(image) if isinstance(image, (list, tuple)) else [image]
    if len(images) != len(arrays):
        raise ValueError(f"image: {len(images)} picture(s) for {len(arrays)} input(s); give one per input or none")
    return [np.float32(picture) for picture in images]


def _compare_input(torch_model: Any, paddle_model: Any, sides: Dict[str, "_Side"], setup: Setup,
                   input_array: np.ndarray, rgb: np.ndarray, methods: Sequence[str], smooth: Sequence[str],
                   categories: Optional[List[int]], cam_kwargs: Optional[Dict[str, Tuple[Dict, Dict]]],
                   work: Path, report_dir: Path) -> List[Dict]:
    """Every case of one input: both sides run, every stage compared, one record per case."""
    from parity.case_record import finalize_case
    from parity.config import RunConfig
    from parity.outcome import JobOutcome

    dtype = str(input_array.dtype)
    cases = [Case(m, s, setup) for m in methods for s in smooth if s in METHODS[m].smooths]
    config = RunConfig(cases=cases, weights={}, dtype=dtype, device="cpu", image=Path("."), cache_fields={},
                       out=report_dir, profile="custom", threads=1)
    diagnosis: Dict = {}

    def diagnose_layers(case: Case, torch_out: JobOutcome, case_input: np.ndarray) -> Dict:
        if not diagnosis:
            from parity.weight_transfer import diagnose_first_divergence
            from parity.compare import stage_bounds

            found = diagnose_first_divergence(torch_model, paddle_model, case_input,
                                              rtol=stage_bounds(case.spec, dtype)["logits"].value)
            diagnosis.update({"found": False} if found is None else {**asdict(found), "found": True, "message": found.message})
        return diagnosis

    records = []
    for method in dict.fromkeys(case.method for case in cases):
        modes = [case.smooth for case in cases if case.method == method]
        outcomes = {}
        extras = (cam_kwargs or {}).get(method, ({}, {}))
        for (framework, side), extra in zip(sides.items(), extras):
            side_dir = work / framework
            result = _run_side(side, method, modes, input_array, rgb, categories, side_dir, extra)
            outcomes[framework] = JobOutcome(None, True, 0.0, side_dir, result=result)
        for case in (c for c in cases if c.method == method):
            records.append(finalize_case(config, case, outcomes["torch"], outcomes["paddle"], diagnose_layers))
    return records


def _write_report(records: List[Dict], out: Path, setup: Setup) -> None:
    from paddle_impl.atomic import write_text
    from parity.cli import summarize
    from parity.provenance import base_provenance, project_state
    from parity.report import render_all, write_diff_images

    provenance = base_provenance()
    provenance.update(profile="custom (parity.compare_models)", dtype=records[0]["dtype"] if records else None,
                      model=setup.model, command="parity.compare_models(...)", project=project_state())
    results = {"provenance": provenance, "summary": summarize(records), "cases": records}
    write_diff_images(results, out)
    texts = render_all(results, out)
    write_text(out / "parity.json", json.dumps(results, indent=1, allow_nan=True))
    for name, text in texts.items():
        write_text(out / name, text)
