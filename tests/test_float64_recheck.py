"""A float32 case that fails after the two models agree is rerun in float64, which tells rounding from a bug."""
from __future__ import annotations

import pytest

from parity.cache import ResultCache
from parity.config import make_config
from parity.registry import Setup
from parity.runner import LiveProcesses, recheck_in_float64, run_matrix

pytestmark = pytest.mark.filterwarnings("ignore:No ccache found:UserWarning")


@pytest.mark.timeout(600)
def test_an_ill_conditioned_float32_case_is_explained_by_its_float64_rerun(tmp_path, reference_image):
    """The seeded ShuffleNet's score moves by ~1e-7 when one conv5 channel is ablated (y = 0.031): AblationCAM's
    weights (y - y_k)/y are then a few float32 ulps of y, and float32 cannot tell the two sides apart."""
    from paddle_impl.weights import ensure_default_weights, ensure_paddle_weights, sha256_of, weights_identity

    arch = "shufflenet_v2_x1_0"
    torch_path = ensure_default_weights(arch=arch)
    config = make_config(
        profile="quick", dtype="float32", out=tmp_path / "out", image=reference_image,
        image_sha256=sha256_of(reference_image), methods=["ablationcam", "gradcam"], smooths=["no_smooth"],
        weights={arch: (torch_path, ensure_paddle_weights(torch_path, arch=arch), weights_identity(torch_path, arch=arch))},
        setup_transform=lambda setup: Setup(model=arch, size=(64, 64)), jobs=1, threads=1,
    )
    config.cache = ResultCache(tmp_path / "cache", enabled=False)
    records = {r["id"]: r for r in run_matrix(config)}
    rerun = []
    recheck_in_float64(config, list(records.values()), LiveProcesses(), on_start=rerun.append)
    ablation, gradcam = records["ablationcam-no_smooth"], records["gradcam-no_smooth"]
    assert not ablation["passed"] and ablation["first_divergent_stage"] == "weights", ablation["message"]
    assert rerun == [1] and "float64_check" not in gradcam  # only the failed case is rerun
    assert ablation["float64_check"]["passed"] and ablation["float64_check"]["cam_max_abs_diff"] < 1e-6
    assert "Rerun in float64: passes" in ablation["message"] and "not the port" in ablation["message"]
