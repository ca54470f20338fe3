"""``cam.py``: upstream's command line on the Paddle port: outputs, spellings and one-line refusals."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from paddle_impl.method_table import METHODS

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
    assert (defaults.method, defaults.output_dir, defaults.weights) == ("gradcam", "output/", "seeded")
    assert defaults.model == "resnet50" and not defaults.list_layers and not defaults.verbose
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
        "--model", "--target-layers", "--list-layers", "--verbose",
    ):  # fmt: skip
        assert option in result.stdout, option
    for default in ("fixtures/both.png", "gradcam", "output/", "seeded", "resnet50"):
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


# -- models, weights and inputs without torch ----------------------------------------------------
@pytest.mark.slow  # make test's 10-minute budget: the slow tier (make test-all, the workflow) runs it
def test_torchvision_default_weights_are_the_harness_conversion(tmp_path, small_image, weights_pair):
    """--weights default goes through the harness's converter: same CAM as its .pdparams given directly."""
    outputs = {}
    for name, weights in (("default", "default"), ("pdparams", str(weights_pair[1]))):
        out = tmp_path / name
        result = run_cam("--image-path", small_image, "--weights", weights, "--output-dir", out)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        outputs[name] = np.load(out / "gradcam_cam.npy")
    assert np.array_equal(outputs["default"], outputs["pdparams"])


@pytest.mark.slow  # make test's 10-minute budget: the slow tier (make test-all, the workflow) runs it
def test_seeded_weights_are_deterministic(tmp_path, small_image):
    maps = []
    for run in ("a", "b"):
        result = run_cam("--image-path", small_image, "--weights", "seeded", "--method", "eigencam",
                         "--output-dir", tmp_path / run)
        assert result.returncode == 0, result.stderr
        maps.append(np.load(tmp_path / run / "eigencam_cam.npy"))
    assert np.array_equal(maps[0], maps[1])


@pytest.mark.slow  # make test's 10-minute budget: the slow tier (make test-all, the workflow) runs it
def test_pdparams_that_does_not_fit_the_model_is_one_line(tmp_path, small_image):
    import paddle

    weights = tmp_path / "resnet18.pdparams"
    paddle.save(paddle.vision.models.resnet18().state_dict(), str(weights))
    out = tmp_path / "out"
    line = assert_one_line_error(
        run_cam("--image-path", small_image, "--model", "resnet50", "--weights", weights, "--output-dir", out),
        str(weights), "does not fit the model", "missing keys",
    )
    assert "other shapes" in line
    assert not out.exists()


@pytest.mark.slow  # make test's 10-minute budget: the slow tier (make test-all, the workflow) runs it
def test_folder_of_images_gives_one_output_set_per_image(tmp_path, small_image):
    images = tmp_path / "images"
    images.mkdir()
    first = cv2.imread(str(small_image))
    cv2.imwrite(str(images / "first.png"), first)
    cv2.imwrite(str(images / "second.jpg"), cv2.flip(first, 1))
    (images / "notes.txt").write_text("not an image, not read")
    out = tmp_path / "out"
    result = run_cam("--image-path", images, "--method", "gradcam++", "--output-dir", out)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert sorted(p.name for p in out.iterdir()) == ["first", "second"]
    for name in ("first", "second"):
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(p.name for p in expected_files(out, "gradcam++"))
    assert len(result.stdout.splitlines()) == 8
    first_map, second_map = (np.load(out / name / "gradcam++_cam.npy") for name in ("first", "second"))
    assert not np.array_equal(first_map, second_map)  # each image explained on its own


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cam("--image-path", tmp_path / "empty", "--output-dir", tmp_path / "out"), "no image")


def test_list_layers_prints_paths_the_target_option_resolves(tmp_path):
    result = run_cam("--model", "shufflenet_v2_x1_0", "--list-layers")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    import paddle

    from paddle_impl.layer_paths import resolve_layer

    model = paddle.vision.models.shufflenet_v2_x1_0()
    lines = result.stdout.splitlines()
    assert len(lines) == len(list(model.named_sublayers()))
    by_name = dict(model.named_sublayers())
    for line, (name, layer) in zip(lines, by_name.items()):
        path, kind = line.split()
        assert resolve_layer(model, path) is layer, (path, name)
        assert kind == type(layer).__name__
    assert any(line.startswith("2_1") for line in lines)  # its blocks' names are not identifiers, yet resolve


@pytest.mark.slow  # make test's 10-minute budget: the slow tier (make test-all, the workflow) runs it
def test_a_factory_model_with_its_own_target(tmp_path, small_image):
    (tmp_path / "tiny_models.py").write_text(
        "import paddle\n"
        "class Tiny(paddle.nn.Layer):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3, padding=1), paddle.nn.ReLU())\n"
        "        self.pool = paddle.nn.AdaptiveAvgPool2D(1)\n"
        "        self.head = paddle.nn.Linear(8, 4)\n"
        "    def forward(self, x):\n"
        "        return self.head(self.pool(self.body(x)).flatten(1))\n"
        "def tiny():\n"
        "    return Tiny()\n"
    )
    out = tmp_path / "out"
    result = run_cam("--image-path", small_image, "--model", "tiny_models:tiny", "--target-category", "3",
                     "--output-dir", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert np.load(out / "gradcam_cam.npy").shape == (64, 64)
    assert_one_line_error(
        run_cam("--image-path", small_image, "--model", "tiny_models:tiny", "--target-category", "4",
                "--output-dir", tmp_path / "out4", cwd=tmp_path),
        "0..3", "4",
    )


@pytest.mark.slow  # make test's 10-minute budget: the slow tier (make test-all, the workflow) runs it
def test_unknown_model_and_jit_saved_model_are_explained(tmp_path, small_image):
    assert_one_line_error(run_cam("--model", "resnet51", "--image-path", small_image, "--output-dir", tmp_path / "o"),
                          "resnet51", "paddle.vision", "package.module:factory")
    import paddle

    model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3))
    paddle.jit.save(model, str(tmp_path / "saved"), input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32")])
    assert_one_line_error(run_cam("--model", tmp_path / "saved", "--image-path", small_image,
                                  "--output-dir", tmp_path / "o"), "paddle.jit.save", "package.module:factory")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # make test's 10-minute budget: the slow tier (make test-all, the workflow) runs it
def test_verbose_shows_what_a_normal_run_hides(tmp_path, small_image):
    if shutil.which("ccache"):
        pytest.skip("ccache is installed here, so Paddle has nothing to warn about on import")
    result = run_cam("--verbose", "--image-path", small_image, "--output-dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "ccache" in result.stderr


@pytest.mark.slow  # make test's 10-minute budget: the slow tier (make test-all, the workflow) runs it
def test_paddle_pretrained_weights_offline_is_one_line(tmp_path, small_image):
    import socket

    try:
        socket.create_connection(("paddle-hapi.bj.bcebos.com", 443), timeout=5).close()
        pytest.skip("paddle.vision's weights server is reachable from here: the download would run")
    except OSError:
        pass
    from paddle.utils.download import WEIGHTS_HOME

    if (Path(WEIGHTS_HOME) / "resnet50.pdparams").exists():
        pytest.skip(f"paddle.vision's resnet50 weights are already in {WEIGHTS_HOME}: nothing to download")
    out = tmp_path / "out"
    assert_one_line_error(run_cam("--weights", "paddle", "--image-path", small_image, "--output-dir", out),
                          "--weights paddle", "cannot be reached", ".pdparams")
    assert not out.exists()


@pytest.mark.slow  # make test's 10-minute budget: the slow tier (make test-all, the workflow) runs it
def test_a_paddleclas_model_by_name(tmp_path, small_image):
    if importlib.util.find_spec("paddleclas") is None:
        pytest.skip("PaddleClas is not installed")
    out = tmp_path / "out"
    result = run_cam("--model", "PPLCNet_x0_25", "--image-path", small_image, "--method", "layercam",
                     "--output-dir", out)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # nor PaddleClas's construction notices
    cam = np.load(out / "layercam_cam.npy")
    assert cam.shape == (64, 64) and cam.max() > 0
    listed = run_cam("--model", "PPLCNet_x0_25", "--list-layers")
    assert listed.returncode == 0 and "blocks6" in listed.stdout.split(), listed.stderr
