"""``cam.py``: upstream's command line on the Paddle port: outputs, spellings and one-line refusals."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from parity.registry import METHODS

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


def run_cam(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PADDLE_GRADCAM_PROGRESS="0")
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "cam.py"), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cam.py: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def cam_module():
    spec = importlib.util.spec_from_file_location("cam_cli_under_test", REPO_ROOT / "cam.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_image(tmp_path_factory, reference_image, weights_pair) -> Path:
    """64x64 area-resize of both.png (and the default weights made once, under the shared lock)."""
    path = tmp_path_factory.mktemp("img") / "small.png"
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(reference_image)), (64, 64), interpolation=cv2.INTER_AREA))
    return path


def expected_files(out: Path, method: str):
    return [out / f"{method}_{suffix}" for suffix in ("cam.jpg", "gb.jpg", "cam_gb.jpg", "cam.npy")]


# -- the happy path (a few seconds each: Paddle start-up, a 64x64 ResNet50 pass) --------


def test_gradcam_writes_four_files(tmp_path, small_image):
    out = tmp_path / "out"
    result = run_cam("--image-path", small_image, "--method", "gradcam", "--output-dir", out)
    assert result.returncode == 0, result.stderr
    files = expected_files(out, "gradcam")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files)  # no temp files left
    assert result.stdout.splitlines() == [f"wrote {p}" for p in files]
    assert result.stderr == ""
    for jpg in files[:3]:
        image = cv2.imread(str(jpg))
        assert image is not None and image.shape == (64, 64, 3) and image.dtype == np.uint8
    cam = np.load(files[3])
    assert cam.shape == (64, 64) and cam.dtype == np.float32
    assert 0.0 <= cam.min() and cam.max() <= 1.0 and cam.max() > 0.5


def test_smoothing_spellings_and_target_category(tmp_path, small_image):
    out = tmp_path / "out"
    result = run_cam(
        "--image-path", small_image, "--method", "eigencam", "--aug_smooth", "--eigen-smooth",
        "--target-category", "5", "--device", "cpu", "--output-dir", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert all(p.exists() for p in expected_files(out, "eigencam"))
    assert np.load(out / "eigencam_cam.npy").shape == (64, 64)


def test_every_spelling_parses(cam_module):
    parser = cam_module.build_parser()
    for aug, eigen in (("--aug_smooth", "--eigen_smooth"), ("--aug-smooth", "--eigen-smooth")):
        args = parser.parse_args([aug, eigen])
        assert args.aug_smooth and args.eigen_smooth
    defaults = parser.parse_args([])
    assert (defaults.method, defaults.output_dir, defaults.weights) == ("gradcam", "output/", "default")
    assert defaults.image_path is None and cam_module.DEFAULT_IMAGE == REPO_ROOT / "fixtures" / "both.png"
    assert not (defaults.aug_smooth or defaults.eigen_smooth or defaults.use_cuda or defaults.debug)
    assert defaults.target_category is None and defaults.device is None
    for name in METHODS:
        assert parser.parse_args(["--method", name]).method == name


# -- refusals ----------------------------------------------------------------------


def test_help_mentions_every_option():
    result = run_cam("--help")
    assert result.returncode == 0
    for option in (
        "--image-path", "--method", "--use-cuda", "--device", "--aug_smooth", "--aug-smooth",
        "--eigen_smooth", "--eigen-smooth", "--output-dir", "--weights", "--target-category", "--debug",
    ):  # fmt: skip
        assert option in result.stdout, option
    for default in ("fixtures/both.png", "gradcam", "output/", "default"):
        assert default in result.stdout
    for name in METHODS:
        assert name in result.stdout


def test_unknown_method_lists_choices(tmp_path):
    result = run_cam("--method", "nosuchcam", "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    assert "invalid choice: 'nosuchcam'" in result.stderr
    for name in METHODS:
        assert name in result.stderr
    assert not (tmp_path / "out").exists()


def test_target_category_out_of_range(tmp_path, small_image):
    out = tmp_path / "out"
    assert_one_line_error(
        run_cam("--image-path", small_image, "--target-category", "1000", "--output-dir", out),
        "--target-category", "0..999", "1000",
    )
    assert not out.exists()


def test_missing_image_writes_nothing(tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "nope.png"
    assert_one_line_error(run_cam("--image-path", missing, "--output-dir", out), "not found", str(missing))
    assert not out.exists()


def test_existing_output_dir_left_empty_on_bad_image(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert_one_line_error(run_cam("--image-path", bad, "--output-dir", out), "not an image")
    assert list(out.iterdir()) == []


def test_output_dir_is_a_file(tmp_path, small_image):
    out = tmp_path / "file"
    out.write_text("x")
    assert_one_line_error(run_cam("--image-path", small_image, "--output-dir", out), "output dir", str(out))


@pytest.mark.skipif(
    importlib.util.find_spec("paddle") is not None and __import__("paddle").device.cuda.device_count() > 0,
    reason="a GPU is visible here",
)
@pytest.mark.parametrize("flags", [["--use-cuda"], ["--device", "gpu"]])
def test_cuda_unavailable(tmp_path, small_image, flags):
    out = tmp_path / "out"
    line = assert_one_line_error(run_cam("--image-path", small_image, *flags, "--output-dir", out), "CUDA")
    assert "not available" in line
    assert not out.exists()


def test_bad_weights_file(tmp_path, small_image):
    out = tmp_path / "out"
    weights = tmp_path / "weights.pth"
    weights.write_text("not a checkpoint")
    assert_one_line_error(
        run_cam("--image-path", small_image, "--weights", weights, "--output-dir", out), str(weights)
    )
    assert not out.exists()


# -- other models, layers and methods -----------------------------------------------------------
def test_another_model_layers_and_a_method_beyond_the_seed_eight(tmp_path, small_image):
    out = tmp_path / "out"
    result = run_cam("--image-path", small_image, "--method", "fullgrad", "--model", "resnet18", "--output-dir", out)
    assert result.returncode == 0, result.stderr
    cam = np.load(out / "fullgrad_cam.npy")
    assert cam.shape == (64, 64) and 0.0 <= cam.min() and cam.max() <= 1.0
    result = run_cam("--image-path", small_image, "--method", "dff", "--target-layers", "layer4[-1]", "--output-dir", out)
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(out / "dff_cam.jpg")).shape == (64, 64, 3)


@pytest.mark.parametrize("args, fragment", [
    (["--method", "finercam", "--aug_smooth"], "--aug_smooth: finercam has no test-time augmentation smoothing"),
    (["--method", "dff", "--eigen-smooth"], "--eigen_smooth: dff has no eigen smoothing"),
    (["--target-layers", "layer4.__class__"], "bad target-layer expression"),
    (["--target-layers", "__import__('os').system('true')"], "only attribute names and integer indices are allowed"),
])
def test_impossible_method_options_and_bad_layers_are_refused_before_any_work(tmp_path, args, fragment):
    out = tmp_path / "out"
    assert_one_line_error(run_cam(*args, "--output-dir", out), fragment)
    assert not out.exists()
