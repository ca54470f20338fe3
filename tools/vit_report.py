"""The transformer's parity report: upstream's ViT path (reshape_transform, AblationLayerVit) on a model pair.

    python -m tools.vit_report [--out reports/all-methods/vit] [--dtype float32]

No vision transformer has a twin in ``paddle.vision``, so the pair is the small
one the tests define (``tests/model_pairs.py``: patch embedding, class token, two
pre-norm attention blocks, the Paddle copy holding the torch weights), explained at
its last block's ``norm1`` as upstream's ViT example does, through
``parity.compare_models``: the gradient methods, EigenCAM, ScoreCAM, and AblationCAM
with ``AblationLayerVit`` on each side.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "ablationcam"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.vit_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="reports/all-methods/vit")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args(argv)

    import paddle
    import torch
    from pytorch_grad_cam.ablation_layer import AblationLayerVit as TorchAblationLayerVit
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    import paddle_impl
    import parity
    from paddle_impl.utils.reshape_transforms import vit_reshape_transform as paddle_vit_reshape_transform

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from model_pairs import GRID, PATCH, make_vit_pair

    torch.set_num_threads(1)
    paddle.base.core.set_num_threads(1)
    torch_model, paddle_model = make_vit_pair(args.dtype)
    images = np.random.RandomState(1).randn(2, 3, GRID * PATCH, GRID * PATCH).astype(args.dtype)
    records = parity.compare_models(
        torch_model, paddle_model, images, torch_layers=["blocks[-1].norm1"], paddle_layers=["blocks[-1].norm1"],
        methods=METHODS, smooth=["no_smooth", "eigen_smooth"], name="vit",
        reshape_transform=(lambda t: vit_reshape_transform(t, GRID, GRID),
                           lambda t: paddle_vit_reshape_transform(t, GRID, GRID)),
        cam_kwargs={"ablationcam": ({"ablation_layer": TorchAblationLayerVit()},
                                    {"ablation_layer": paddle_impl.AblationLayerVit()})},
        out=Path(args.out),
    )
    for record in records:
        status = "pass" if record["passed"] else "FAIL"
        print(f"{record['id']:<34s} {status} cam max|Δ| {record['cam_max_abs_diff']:.2e}")
    return 0 if all(r["passed"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
