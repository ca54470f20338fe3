"""The transformer's parity report: upstream's ViT path (reshape_transform, AblationLayerVit) on a model pair.

    python -m tools.vit_report [--out reports/all-methods/vit] [--dtype float32]

No vision transformer has a twin in ``paddle.vision``, so the pair is the small
one the tests define (``tests/model_pairs.py``: patch embedding, class token, two
pre-norm attention blocks), explained at its last block's ``norm1`` as upstream's
ViT example does, through ``parity.compare_models``: the gradient methods,
EigenCAM, ScoreCAM, and AblationCAM with ``AblationLayerVit`` on each side.

Its LayerNorms are built with weight 1 and bias 0, and with those Paddle 3.3.1's
wrong LayerNorm input gradient under frozen weights (see
``paddle_impl/activations_and_gradients.py``) changes nothing, so a report on
them could not show the bug or its fix.  Every tensor the builder leaves
constant (the LayerNorm weights and biases here) gets the hub pairs' seeded
noise (``parity.hubs.seeding.randomize_constant_tensors``), and the weights
reach the Paddle model through ``parity.transfer_weights``, whose forward check
must pass.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
# Seed of the noise on the tensors the builder leaves constant (the LayerNorms' weights and biases).
SEED = 1
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

    from parity.hubs.seeding import constant_tensor_names, randomize_constant_tensors
    from parity.transfer import transfer_weights

    torch.set_num_threads(1)
    paddle.base.core.set_num_threads(1)
    torch_model, paddle_model = make_vit_pair(args.dtype)
    seeded = randomize_constant_tensors(torch_model, torch.Generator().manual_seed(SEED))
    if constant_tensor_names(torch_model) or not any(name.endswith("norm1.weight") for name in seeded):
        raise RuntimeError(f"the ViT's LayerNorms were not all seeded (seeded: {seeded})")
    images = np.random.RandomState(1).randn(2, 3, GRID * PATCH, GRID * PATCH).astype(args.dtype)
    transfer_weights(torch_model, paddle_model, [images], direction="torch_to_paddle")
    print(f"seeded noise on {len(seeded)} constant tensors: {', '.join(seeded)}")
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
