"""The port without torch: what a Paddle user who ran ``pip install .`` gets.

Fast tier: the port imported, and its command run, in interpreters where
torch, torchvision, upstream and the harness cannot be imported (a directory
of packages that raise ImportError goes first on ``PYTHONPATH``); the method
table and the harness's registry agree.

Slow tier: the wheel built and installed into a new venv that has no torch at
all, its dependencies taken from the project's venv without downloading
anything (see :func:`_torchless_view`), and the issue's two commands run there
from outside the checkout.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pytest

from paddle_impl.method_table import METHODS

REPO_ROOT = Path(__file__).resolve().parent.parent
HIDDEN = ("torch", "torchvision", "pytorch_grad_cam", "ttach", "parity")
OUTPUT_SUFFIXES = ("cam.jpg", "gb.jpg", "cam_gb.jpg", "cam.npy")

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def blocker(tmp_path_factory) -> Path:
    """A directory whose torch, torchvision, pytorch_grad_cam, ttach and parity fail to import."""
    root = tmp_path_factory.mktemp("no_torch")
    for name in HIDDEN:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}' (hidden by test_port_standalone)\", name={name!r})\n"
        )
    return root


def run_hidden(blocker: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{blocker}{os.pathsep}{REPO_ROOT}", OMP_NUM_THREADS="1",
               PADDLE_GRADCAM_PROGRESS="0")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=400)


@pytest.fixture(scope="module")
def small_image(tmp_path_factory, reference_image) -> Path:
    path = tmp_path_factory.mktemp("img") / "small.png"
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(reference_image)), (64, 64), interpolation=cv2.INTER_AREA))
    return path


def test_the_port_imports_without_torch_and_quietly(blocker, tmp_path):
    code = (
        "import sys\n"
        "import paddle_impl\n"
        "from paddle_impl import GradCAM, ScoreCAM, DeepFeatureFactorization, cam_command, method_table, models\n"
        "from paddle_impl.utils.image import show_cam_on_image\n"
        "import paddle_impl.metrics.road\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'pytorch_grad_cam', 'parity'}))\n"
    )
    result = run_hidden(blocker, "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert result.stderr == ""  # not even Paddle's ccache warning


def test_the_command_runs_without_torch_and_says_what_torchvision_weights_need(blocker, small_image, tmp_path):
    out = tmp_path / "out"
    result = run_hidden(blocker, "-m", "paddle_impl.cam_command", "--image-path", str(small_image), "--method",
                        "gradcam++", "--output-dir", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert sorted(p.name for p in out.iterdir()) == sorted(f"gradcam++_{s}" for s in OUTPUT_SUFFIXES)

    for weights in ("default", str(tmp_path / "never_converted.pth")):
        (tmp_path / "never_converted.pth").write_bytes(b"a torchvision checkpoint would be here")
        refused = run_hidden(blocker, "-m", "paddle_impl.cam_command", "--image-path", str(small_image),
                             "--weights", weights, "--output-dir", str(tmp_path / "refused"), cwd=REPO_ROOT)
        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("paddle-gradcam: error: --weights "), refused.stderr
        assert "pip install '.[parity]'" in lines[0], lines[0]  # run from the checkout's root
        assert "pip install paddle-gradcam-parity" not in lines[0]  # the project is not on an index
        assert not (tmp_path / "refused").exists()


def test_the_checkout_script_names_the_extra_when_a_conversion_needs_torch(small_image, tmp_path):
    """cam.py hands .pth files to the harness; with torch hidden (the harness itself importable) it says what to add."""
    blocker = tmp_path / "no_torch_only"
    for name in ("torch", "torchvision"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n")
    weights = tmp_path / "unconverted.pth"
    weights.write_bytes(b"not converted before, so reading it needs torch")
    result = run_hidden(blocker, str(REPO_ROOT / "cam.py"), "--image-path", str(small_image), "--weights",
                        str(weights), "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("cam.py: error: --weights "), result.stderr
    assert "PyTorch" in line and f"pip install '{REPO_ROOT}[parity]'" in line, line


def test_the_harness_registry_is_built_on_the_ports_table():
    from parity.registry import METHODS as HARNESS_METHODS

    assert list(HARNESS_METHODS) == list(METHODS)
    import paddle_impl

    for name, method in METHODS.items():
        spec = HARNESS_METHODS[name]
        assert (spec.paddle_class_name, spec.torch_class_name) == (method.class_name, method.class_name)
        assert (spec.recipe, spec.smooths, spec.draws_random) == (method.recipe, method.smooths, method.draws_random)
        assert getattr(paddle_impl, method.class_name) is not None
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    assert all(hasattr(pytorch_grad_cam, method.class_name) for method in METHODS.values())


@pytest.mark.parametrize("model_name", ["resnet18", "densenet121", "mobilenet_v3_small"])
def test_every_listed_layer_path_resolves_to_that_layer(model_name):
    import paddle

    from paddle_impl.layer_paths import resolve_layer
    from paddle_impl.models import layer_paths_of

    model = getattr(paddle.vision.models, model_name)()
    listed = layer_paths_of(model)
    named = list(model.named_sublayers())
    assert len(listed) == len(named)
    for (path, kind), (_, layer) in zip(listed, named):
        assert resolve_layer(model, path) is layer, path
        assert kind == type(layer).__name__


@pytest.mark.slow
def test_every_method_and_mode_through_the_command(tmp_path, reference_image):
    """Each method of the table in each smoothing mode it has: four files, nothing on stderr (resnet18, 48x48)."""
    image = tmp_path / "tiny.png"
    cv2.imwrite(str(image), cv2.resize(cv2.imread(str(reference_image)), (48, 48), interpolation=cv2.INTER_AREA))
    flags = {"no_smooth": [], "aug_smooth": ["--aug_smooth"], "eigen_smooth": ["--eigen_smooth"],
             "aug_eigen_smooth": ["--aug_smooth", "--eigen_smooth"]}
    script = tmp_path / "all_methods.py"
    runs = [(name, mode) for name, method in METHODS.items() for mode in method.smooths]
    script.write_text(
        "import sys\n"
        "from paddle_impl.cam_command import main\n"
        f"runs = {[(name, mode, flags[mode]) for name, mode in runs]!r}\n"
        "for name, mode, extra in runs:\n"
        "    layers = ['--target-layers', 'layer3,layer4'] if name == 'refinecam' else []\n"
        f"    main(['--model', 'resnet18', '--image-path', {str(image)!r}, '--method', name, *extra, *layers,\n"
        f"          '--output-dir', {str(tmp_path)!r} + '/' + name + '-' + mode])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", PADDLE_GRADCAM_PROGRESS="0")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=580)
    assert result.returncode == 0, result.stderr[-4000:]
    # Upstream's own method warnings stay (HiResCAM warns that smoothing voids its guarantee); nothing
    # else may reach stderr: no framework warning, no log line.
    lines = result.stderr.splitlines()
    port_warning = re.compile(rf"{re.escape(str(REPO_ROOT))}/paddle_impl/\S+\.py:\d+: \w*Warning: ")
    port_warnings = {i for i, line in enumerate(lines) if port_warning.match(line)}
    others = [line for i, line in enumerate(lines) if i not in port_warnings and i - 1 not in port_warnings]
    assert others == [], result.stderr[-4000:]
    assert {lines[i].split(": ", 2)[2] for i in port_warnings} <= {
        "HiResCAM's faithfulness guarantees do not hold if smoothing is applied"}, result.stderr[-4000:]
    for name, mode in runs:
        out = tmp_path / f"{name}-{mode}"
        assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}_{s}" for s in OUTPUT_SUFFIXES), out
        cam = np.load(out / f"{name}_cam.npy")
        assert cam.shape == (48, 48) and np.isfinite(cam).all(), (name, mode)


# -- slow: the wheel in a venv with no torch at all ---------------------------------------------------
# What a venv made by `pip install <wheel>` (no extras) would not hold: torch and what only torch,
# torchvision, upstream and timm pull in (their packages and their .dist-info directories).
_TORCH_ONLY_PACKAGES = {"torch", "torchgen", "functorch", "torchvision", "torchvision.libs", "pytorch_grad_cam",
                        "ttach", "triton", "nvidia", "cuda", "timm"}
_TORCH_ONLY_DISTRIBUTIONS = {"torch", "torchvision", "grad_cam", "ttach", "triton", "timm", "paddle_gradcam_parity"}


def _torch_only(entry: str) -> bool:
    if entry.endswith(".dist-info"):
        distribution = entry.split("-")[0]
        return distribution in _TORCH_ONLY_DISTRIBUTIONS or distribution.startswith(("nvidia_", "cuda_"))
    return entry in _TORCH_ONLY_PACKAGES or entry.startswith("__editable__")


def _torchless_view(target: Path) -> Path:
    """The project venv's site-packages without torch and its kin, as a directory of links.

    The wheel's own dependencies (paddlepaddle, numpy, opencv-python-headless,
    ...) are installed there already, so linking them gives the new venv
    exactly what ``pip install`` would have downloaded, with no network; torch
    is not linked, so for the new venv it does not exist.
    """
    target.mkdir()
    for key in ("purelib", "platlib"):
        source = Path(sysconfig.get_paths()[key])
        for entry in sorted(os.listdir(source)):
            if _torch_only(entry) or entry.endswith(".pth") or (target / entry).exists():
                continue
            (target / entry).symlink_to(source / entry)
    return target


def _pip(python: Path, *args: str) -> None:
    result = subprocess.run([str(python), "-m", "pip", "--isolated", "--disable-pip-version-check", *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def torchless_install(tmp_path_factory) -> Dict[str, Path]:
    base = tmp_path_factory.mktemp("torchless")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for package in ("paddle_impl", "parity"):
        shutil.copytree(REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = base / "dist"
    _pip(Path(sys.executable), "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(source))
    (wheel,) = dist.glob("paddle_gradcam_parity-*.whl")

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site_packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        check=True, capture_output=True, text=True).stdout.strip())
    view = _torchless_view(base / "dependencies")
    (site_packages / "_dependencies.pth").write_text(f"import site; site.addsitedir({str(view)!r})\n")
    _pip(python, "install", "--no-deps", "--no-index", str(wheel))
    home, work = base / "home", base / "work"
    home.mkdir()
    work.mkdir()
    return {"venv": venv, "bin": venv / "bin", "python": python, "home": home, "work": work, "wheel": wheel}


def _run_installed(install: Dict[str, Path], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PADDLE_GRADCAM_HOME")}
    env.update(HOME=str(install["home"]), PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", PADDLE_GRADCAM_PROGRESS="0")
    return subprocess.run([str(a) for a in args], cwd=install["work"], env=env, capture_output=True, text=True,
                          timeout=400, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_the_installed_wheel_without_torch(torchless_install, reference_image):
    install = torchless_install
    python = install["python"]
    absent = _run_installed(install, python, "-c", "import importlib.util as u; print([n for n in "
                            "('torch', 'torchvision', 'pytorch_grad_cam', 'timm') if u.find_spec(n)])")
    assert absent.returncode == 0 and absent.stdout.strip() == "[]", (absent.stdout, absent.stderr)

    work = install["work"]
    (work / "fixtures").mkdir()
    shutil.copyfile(reference_image, work / "fixtures" / "both.png")
    made = _run_installed(install, python, "-c", "import paddle; paddle.seed(0); "
                          "paddle.save(paddle.vision.models.resnet50().state_dict(), 'seeded.pdparams')")
    assert made.returncode == 0, made.stderr

    # the command, word for word
    result = _run_installed(install, install["bin"] / "paddle-gradcam", "--model", "resnet50", "--weights",
                            "seeded.pdparams", "--image-path", "fixtures/both.png", "--method", "gradcam++")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    names = [f"gradcam++_{suffix}" for suffix in OUTPUT_SUFFIXES]
    assert result.stdout.splitlines() == [f"wrote {Path('output') / name}" for name in names]
    image = cv2.imread(str(work / "fixtures" / "both.png"))
    assert cv2.imread(str(work / "output" / "gradcam++_cam.jpg")).shape == image.shape
    cam = np.load(work / "output" / "gradcam++_cam.npy")
    assert cam.shape == image.shape[:2] and cam.dtype == np.float32 and 0 <= cam.min() and cam.max() <= 1

    # --weights seeded is the same init as the file the one-line script saved
    seeded = _run_installed(install, install["bin"] / "paddle-gradcam", "--weights", "seeded", "--image-path",
                            "fixtures/both.png", "--method", "gradcam++", "--output-dir", "seeded_out")
    assert seeded.returncode == 0 and seeded.stderr == "", seeded.stderr
    assert np.array_equal(np.load(work / "seeded_out" / "gradcam++_cam.npy"), cam)

    wheel_hint = f"pip install '{install['wheel']}[parity]'"
    harness = _run_installed(install, install["bin"] / "paddle-gradcam-parity")
    assert harness.returncode == 2, (harness.stdout, harness.stderr)
    lines = harness.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paddle-gradcam-parity: error: "), harness.stderr
    assert "torch" in lines[0] and wheel_hint in lines[0], lines[0]
    assert harness.stdout == ""

    torch_weights = _run_installed(install, install["bin"] / "paddle-gradcam", "--weights", "default",
                                   "--image-path", "fixtures/both.png", "--output-dir", "refused")
    assert torch_weights.returncode == 2, (torch_weights.stdout, torch_weights.stderr)
    line = torch_weights.stderr.strip()
    assert "\n" not in line and "PyTorch" in line and wheel_hint in line, line
    assert not (work / "refused").exists()
