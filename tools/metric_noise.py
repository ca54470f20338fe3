"""Where the port's CAM metrics part from upstream's, at batch 2 with several target layers and meta-methods.

    python -m tools.metric_noise [--size 64] [--dtype float32 float64] [--targets softmax logit] [--seeds 4]
    python -m tools.metric_noise --distribution 12 --cases SESS:GradCAM

Setting: the seeded ResNet18 pair (``seeded_torch_state(..., randomize_batch_norm=True)``,
so the maps have structure), ``both.png`` and its mirror image as a batch of two,
each image's top class; the CAM is RefineCAM over GradCAM, GradCAM++ and EigenCAM
at ``layer3[-1]`` and ``layer4[-1]``, and SESS over GradCAM at both layers.  For
every metric of ``paddle_impl.metrics`` it prints the largest per-image |Δ|
between the port and upstream in four comparisons:

* ``same CAM, same noise``: upstream's CAM handed to both metrics, and the port's
  ROAD imputer drawing its noise as upstream does (``torch.randn_like`` after
  the same ``torch.manual_seed``): what the metric code itself contributes;
* ``own CAM, same noise``: each side scores its own CAM (CAM noise included);
* ``own CAM, own generator``: each side with its own generator seeded with the
  same number (``torch.manual_seed`` / ``paddle.seed``), as a user would run them;
* ``upstream vs upstream``: the largest difference between upstream's own
  results under ``--seeds`` different torch seeds (same CAM, same model): how
  far ROAD's noise alone moves the metric.

ROAD imputes removed pixels and adds ``0.01 * N(0, 1)`` noise to them, drawn
from the framework's generator; torch's and Paddle's generators give different
numbers for the same seed, so the third comparison can only agree as well as
the fourth shows upstream agrees with itself; ``--distribution N`` compares the
two sides' means and standard deviations over N seeds each instead.  ARCC inherits this through its
ROAD term, and amplifies it where ``clip(2 * ROADCombined, 0, 1)`` is small:
the harmonic mean is then about ``3 * 2 * ROADCombined``, so ARCC's relative
change is ROAD's.

float64: upstream's imputer cannot write its float32 solution into a float64
image (torch refuses the assignment), so the float64 reference is upstream's
imputer with that one assignment cast, everything else unmodified.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ARCH = "resnet18"
ROAD_PERCENTILES = [20, 40, 60, 80]
SINGLE_PERCENTILE = 70
# SESS's patches at two scales keep the run short (upstream's default is 12 scales).
SESS_SCALES = 2


def input_batch(size: int, dtype: str) -> np.ndarray:
    """both.png resized to ``size`` x ``size`` and ImageNet-normalised, with its mirror image: (2, 3, size, size)."""
    import cv2

    bgr = cv2.imread(str(REPO_ROOT / "fixtures" / "both.png"))
    if bgr is None:
        raise SystemExit("fixtures/both.png is missing: run `make fixtures`")
    rgb = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_AREA)
    chw = ((rgb.astype(np.float32) / 255 - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1)
    return np.ascontiguousarray(np.stack([chw, chw[:, :, ::-1]])).astype(dtype)


_STATES: Dict[str, Tuple[dict, dict]] = {}


def model_pair(dtype: str):
    """(torch model, Paddle model) of the seeded ResNet18 with randomised batch norms, in ``dtype``."""
    from parity.weights import build_paddle_model, build_torch_model, seeded_torch_state, torch_to_paddle_state_dict

    if ARCH not in _STATES:
        torch_state = {k: v.numpy() for k, v in seeded_torch_state(ARCH, 0, randomize_batch_norm=True).items()}
        _STATES[ARCH] = (torch_state, torch_to_paddle_state_dict(torch_state, arch=ARCH))
    torch_state, paddle_state = _STATES[ARCH]
    return build_torch_model(ARCH, torch_state, dtype), build_paddle_model(ARCH, paddle_state, dtype)


def float64_capable_upstream_imputer():
    """Upstream's ``NoisyLinearImputer`` whose float32 fill is cast to the image's dtype before it is written."""
    import torch
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    import pytorch_grad_cam.metrics.road as upstream_road

    class CastingImputer(upstream_road.NoisyLinearImputer):
        def __call__(self, img, mask):
            flat = img.reshape(img.shape[0], -1)
            removed = np.argwhere(mask.reshape(-1) == 0).flatten()
            A, b = upstream_road.NoisyLinearImputer.setup_sparse_system(
                mask.numpy(), img.numpy(), upstream_road.neighbors_weights)
            solution = torch.tensor(spsolve(csc_matrix(A), b), dtype=torch.float)
            filled = flat.clone()
            filled[:, removed] = (solution.t() + self.noise * torch.randn_like(solution.t())).to(img.dtype)
            return filled.reshape_as(img)

    return CastingImputer


def upstream_noise_for_port(like: np.ndarray) -> np.ndarray:
    """The port's ``draw_noise`` replaced by upstream's call on a tensor of the same shape, dtype and layout."""
    import torch

    return torch.randn_like(torch.from_numpy(like)).numpy()


class Side:
    """One framework's model, input, targets, CAM objects and metric modules."""

    def __init__(self, framework: str, dtype: str, size: int, target_kind: str) -> None:
        self.framework = framework
        x = input_batch(size, dtype)
        torch_model, paddle_model = model_pair(dtype)
        if framework == "torch":
            import torch

            import pytorch_grad_cam as library
            import pytorch_grad_cam.metrics.arcc as arcc
            import pytorch_grad_cam.metrics.cam_mult_image as cam_mult
            import pytorch_grad_cam.metrics.perturbation_confidence as perturbation
            import pytorch_grad_cam.metrics.road as road
            from pytorch_grad_cam.refine_cam import RefineCAM
            from pytorch_grad_cam.sess import SESS
            from pytorch_grad_cam.utils import model_targets

            self.model, self.x = torch_model, torch.from_numpy(x)
            with torch.no_grad():
                logits = torch_model(self.x).numpy()
        else:
            import paddle

            import paddle_impl as library
            import paddle_impl.metrics.arcc as arcc
            import paddle_impl.metrics.cam_mult_image as cam_mult
            import paddle_impl.metrics.perturbation_confidence as perturbation
            import paddle_impl.metrics.road as road
            from paddle_impl.refine_cam import RefineCAM
            from paddle_impl.sess import SESS
            from paddle_impl.utils import model_targets

            self.model, self.x = paddle_model, paddle.to_tensor(x)
            with paddle.no_grad():
                logits = paddle_model(self.x).numpy()
        self.library, self.RefineCAM, self.SESS = library, RefineCAM, SESS
        self.arcc, self.cam_mult, self.perturbation, self.road = arcc, cam_mult, perturbation, road
        # Both sides explain upstream's top classes (float64 logits could tie differently in float32).
        self.logits = logits
        self.target_class = (model_targets.ClassifierOutputSoftmaxTarget if target_kind == "softmax"
                             else model_targets.ClassifierOutputTarget)

    def targets(self, classes: Sequence[int]) -> List[Callable]:
        return [self.target_class(int(c)) for c in classes]

    def layers(self):
        return [self.model.layer3[-1], self.model.layer4[-1]]

    def cam_object(self, meta: str, base: str):
        base_method = getattr(self.library, base)
        if meta == "RefineCAM":
            return self.RefineCAM(self.model, self.layers(), base_method=base_method)
        return self.SESS(self.model, self.layers(), base_method=base_method, num_scales=SESS_SCALES)


def metric_calls(side: Side, cam_object) -> Dict[str, Callable]:
    """Every metric of the module set, as ``call(x, cams, targets, model)`` returning a (B,) array."""
    p, road, cam_mult, arcc = side.perturbation, side.road, side.cam_mult, side.arcc

    def zeroing(img, keep):
        return img * (keep.astype(img.dtype) if side.framework == "paddle" else keep.to(img.dtype))

    def zeroing_lerf(percentile):
        return p.PerturbationConfidenceMetric(p.RemoveLeastRelevantFirst(percentile, zeroing))

    return {
        "CamMultImageConfidenceChange": cam_mult.CamMultImageConfidenceChange(),
        "DropInConfidence": cam_mult.DropInConfidence(),
        "IncreaseInConfidence": cam_mult.IncreaseInConfidence(),
        "PerturbationConfidenceMetric(zeroing LeRF 50)": zeroing_lerf(50),
        "AveragerAcrossThresholds(zeroing LeRF 30,70)": p.AveragerAcrossThresholds(zeroing_lerf, [30, 70]),
        f"ROADMostRelevantFirst({SINGLE_PERCENTILE})": road.ROADMostRelevantFirst(SINGLE_PERCENTILE),
        f"ROADLeastRelevantFirst({SINGLE_PERCENTILE})": road.ROADLeastRelevantFirst(SINGLE_PERCENTILE),
        "ROADMostRelevantFirstAverage": road.ROADMostRelevantFirstAverage(ROAD_PERCENTILES),
        "ROADLeastRelevantFirstAverage": road.ROADLeastRelevantFirstAverage(ROAD_PERCENTILES),
        "ROADCombined": road.ROADCombined(ROAD_PERCENTILES),
        "Complexity": lambda x, cams, targets, model: arcc.Complexity()(cams),
        "Coherency": lambda x, cams, targets, model: arcc.Coherency()(x, cams, targets, model, cam_object),
        "ARCC": arcc.ARCC(cam_object, road_percentiles=ROAD_PERCENTILES),
    }


def release_hooks(cam_object) -> None:
    """Remove the hooks of a meta-method's base CAMs (upstream's RefineCAM has no release of its own)."""
    for base_cam in list(getattr(cam_object, "base_cam_per_layer", [])) + [getattr(cam_object, "base_cam", None)]:
        if base_cam is not None:
            base_cam.activations_and_grads.release()


def seeded(framework: str, seed: int, call: Callable):
    """``call()`` after seeding torch (always: upstream's noise and the same-noise port) and Paddle."""
    import paddle
    import torch

    torch.manual_seed(seed)
    paddle.seed(seed)
    return np.asarray(call(), dtype=np.float64)


def measure(size: int, dtype: str, target_kind: str, seeds: int, cases: Sequence[Tuple[str, str]]) -> List[Dict]:
    import paddle_impl.metrics.road as port_road
    import pytorch_grad_cam.metrics.road as upstream_road

    rows = []
    upstream, port = Side("torch", dtype, size, target_kind), Side("paddle", dtype, size, target_kind)
    classes = upstream.logits.argmax(axis=1)
    t_targets, p_targets = upstream.targets(classes), port.targets(classes)
    own_draw = port_road.NoisyLinearImputer.draw_noise
    own_imputer = upstream_road.NoisyLinearImputer
    if dtype == "float64":
        upstream_road.NoisyLinearImputer = float64_capable_upstream_imputer()
    try:
        for meta, base in cases:
            t_cam_object, p_cam_object = upstream.cam_object(meta, base), port.cam_object(meta, base)
            t_cams = t_cam_object(upstream.x, t_targets)
            p_cams = p_cam_object(port.x, p_targets)
            spread = [float(c.max() - c.min()) for c in t_cams]
            if min(spread) <= 0.1:
                raise SystemExit(f"{meta}({base}): a flat CAM (max - min {spread}); the comparison would prove nothing")
            cam_delta = float(np.abs(t_cams.astype(np.float64) - p_cams).max())
            t_metrics, p_metrics = metric_calls(upstream, t_cam_object), metric_calls(port, p_cam_object)
            for name in t_metrics:
                def t_run(seed, cams=t_cams):
                    return seeded("torch", seed, lambda: t_metrics[name](upstream.x, cams, t_targets, upstream.model))

                def p_run(seed, cams, same_noise):
                    port_road.NoisyLinearImputer.draw_noise = (
                        (lambda self, like: upstream_noise_for_port(like)) if same_noise else own_draw)
                    try:
                        return seeded("paddle", seed, lambda: p_metrics[name](port.x, cams, p_targets, port.model))
                    finally:
                        port_road.NoisyLinearImputer.draw_noise = own_draw

                reference = t_run(0)
                noisy = "ROAD" in name or name == "ARCC"
                upstream_runs = [reference] + ([t_run(seed) for seed in range(1, seeds)] if noisy else [])
                rows.append({
                    "case": f"{meta}({base})", "dtype": dtype, "targets": target_kind, "metric": name,
                    "cam_delta": cam_delta, "upstream": reference,
                    "same_cam_same_noise": np.abs(p_run(0, t_cams, True) - reference),
                    "own_cam_same_noise": np.abs(p_run(0, p_cams, True) - reference),
                    "own_cam_own_generator": np.abs(p_run(0, p_cams, False) - reference) if noisy else None,
                    "upstream_seed_spread": np.ptp(np.stack(upstream_runs), axis=0) if noisy else None,
                })
            release_hooks(t_cam_object)
            release_hooks(p_cam_object)
    finally:
        upstream_road.NoisyLinearImputer = own_imputer
    return rows


def noise_distribution(size: int, case: Tuple[str, str], seeds: int) -> None:
    """ROADCombined and ARCC on upstream's CAMs over ``seeds`` seeds of each framework's own generator.

    Same-seed numbers cannot match across generators, but their distributions
    must: the port's mean should lie within a few standard errors of upstream's,
    with a similar standard deviation.
    """
    import paddle
    import torch

    upstream, port = Side("torch", "float32", size, "softmax"), Side("paddle", "float32", size, "softmax")
    classes = upstream.logits.argmax(axis=1)
    t_targets, p_targets = upstream.targets(classes), port.targets(classes)
    t_cam_object, p_cam_object = upstream.cam_object(*case), port.cam_object(*case)
    cams = t_cam_object(upstream.x, t_targets)
    for name in ("ROADCombined", "ARCC"):
        t_metric = metric_calls(upstream, t_cam_object)[name]
        p_metric = metric_calls(port, p_cam_object)[name]
        t_runs, p_runs = [], []
        for seed in range(seeds):
            torch.manual_seed(seed)
            t_runs.append(t_metric(upstream.x, cams, t_targets, upstream.model))
            paddle.seed(seed)
            p_runs.append(p_metric(port.x, cams, p_targets, port.model))
        t_runs, p_runs = np.array(t_runs, np.float64), np.array(p_runs, np.float64)
        t_std, p_std = t_runs.std(axis=0, ddof=1), p_runs.std(axis=0, ddof=1)
        stderr = np.sqrt((t_std**2 + p_std**2) / seeds)
        z = np.divide(p_runs.mean(0) - t_runs.mean(0), stderr, out=np.zeros_like(stderr), where=stderr > 0)
        print(f"{case[0]}({case[1]}) {name} over {seeds} seeds: upstream mean {t_runs.mean(0)} std {t_std}; "
              f"port mean {p_runs.mean(0)} std {p_std}; (port - upstream) / standard error {z}")
    release_hooks(t_cam_object)
    release_hooks(p_cam_object)


def _cell(values) -> str:
    if values is None:
        return "—"
    return " ".join(f"{v:.1e}" for v in np.atleast_1d(values))


def print_table(rows: List[Dict]) -> None:
    header = ["case", "dtype", "targets", "metric", "upstream (img0 img1)", "same CAM+noise |Δ|",
              "own CAM, same noise |Δ|", "own CAM+generator |Δ|", "upstream seed spread"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join([
            row["case"], row["dtype"], row["targets"], row["metric"],
            " ".join(f"{v:.4g}" for v in row["upstream"]),
            _cell(row["same_cam_same_noise"]), _cell(row["own_cam_same_noise"]),
            _cell(row["own_cam_own_generator"]), _cell(row["upstream_seed_spread"]),
        ]) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.metric_noise", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--targets", nargs="+", default=["softmax"], choices=["softmax", "logit"])
    parser.add_argument("--seeds", type=int, default=4, help="torch seeds for upstream's own spread (default 4)")
    parser.add_argument("--cases", nargs="+", default=["RefineCAM:GradCAM", "RefineCAM:GradCAMPlusPlus",
                                                       "RefineCAM:EigenCAM", "SESS:GradCAM"])
    parser.add_argument("--metrics", nargs="+", default=None, help="only these metric names (default all)")
    parser.add_argument("--distribution", type=int, default=0, metavar="N",
                        help="instead of the table: ROADCombined and ARCC over N seeds of each side's own "
                        "generator, their means and standard deviations (float32)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO_ROOT))
    import paddle
    import torch

    torch.set_num_threads(1)
    paddle.base.core.set_num_threads(1)
    cases = [tuple(case.split(":")) for case in args.cases]
    if args.distribution:
        for case in cases:
            noise_distribution(args.size, case, args.distribution)
        return 0
    rows = []
    for dtype in args.dtype:
        for target_kind in args.targets:
            rows += measure(args.size, dtype, target_kind, args.seeds, cases)
    if args.metrics:
        rows = [row for row in rows if row["metric"] in args.metrics]
    print(f"ResNet18 (seeded, randomised batch norms), both.png + mirror at {args.size}x{args.size}, batch 2, "
          f"layers layer3[-1] + layer4[-1], ROAD percentiles {ROAD_PERCENTILES}; |Δ| per image (img0 img1)")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
