"""``pip install .``: the wheel's metadata, its console scripts, and where an installed copy reads and writes.

The wheel is built offline from a copy of the sources (``pip wheel --no-deps
--no-build-isolation --no-index``: setuptools is in the project's venv, and a
build in the checkout would leave ``build/`` and ``*.egg-info`` in it).  It is
installed with ``--no-deps --no-index`` into a throwaway venv that reuses the
project's installed dependencies through a ``.pth`` file, so nothing is
downloaded.  The console scripts then run from a directory outside the repo,
with no ``PYTHONPATH`` and ``HOME`` pointing into the test's tmp dir, and the
test checks that what they write lands in the output directory and the
per-user data directory, never in site-packages or the checkout.

About 35 s on one core, most of it a 48x48 ResNet50 CAM run three times (installed,
``cam.py``, and a deliberately broken install) and two forward-verified weights conversions.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import pytest

from paddle_impl import locations

REPO_ROOT = Path(__file__).resolve().parent.parent
CAM_SCRIPT = "paddle-gradcam"
PARITY_SCRIPT = "paddle-gradcam-parity"
# A name no other test or tool uses, so any file carrying it in the repo was written by this test's commands.
PROBE = "packaging_probe"

pytestmark = pytest.mark.timeout(300)


@dataclass
class Installed:
    wheel: Path
    venv: Path
    site_packages: Path
    bin: Path
    home: Path  # HOME of every command run from the venv
    workdir: Path  # their working directory, outside the repo

    def env(self, **extra: str) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", locations.HOME_ENV_VAR)}
        env.update(HOME=str(self.home), PYTHONNOUSERSITE="1", PADDLE_GRADCAM_PROGRESS="0", OMP_NUM_THREADS="1")
        env.update(extra)
        return env

    def run(self, *args: str, timeout: float = 240, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(a) for a in args], cwd=self.workdir, env=self.env(**extra_env),
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip


def _pip(python: Path, *args: str) -> None:
    # --isolated: no pip.conf or PIP_* variable (PIP_FIND_LINKS, ...) changes what is built or installed.
    result = subprocess.run(
        [str(python), "-m", "pip", "--isolated", "--disable-pip-version-check", *args],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


def _snapshot(root: Path) -> Dict[str, Tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under ``root``."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() or path.is_symlink():
            stat = path.lstat()
            found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


def _repo_paths_named(fragment: str) -> List[Path]:
    hits = []
    for directory, dirnames, filenames in os.walk(REPO_ROOT):
        if Path(directory) == REPO_ROOT:
            dirnames[:] = [d for d in dirnames if d != ".git"]
        hits += [Path(directory, name) for name in dirnames + filenames if fragment in name]
    return hits


def _install(base: Path, patch: Optional[Callable[[Path], None]] = None) -> Installed:
    """Build the wheel from a copy of the sources (``patch`` may edit the copy) and install it into a new venv."""
    source = base / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for package in ("paddle_impl", "parity"):
        shutil.copytree(REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if patch is not None:
        patch(source)
    dist = base / "dist"
    _pip(Path(sys.executable), "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(source))
    (wheel,) = dist.glob("paddle_gradcam_parity-*.whl")

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    # addsitedir (not a bare path line) so the reused site-packages' own .pth files are processed too;
    # it is appended after the venv's own site-packages, so the installed wheel wins over anything there.
    reused = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site_packages / "_reuse_project_venv.pth").write_text(
        "".join(f"import site; site.addsitedir({path!r})\n" for path in reused)
    )
    _pip(python, "install", "--no-deps", "--no-index", str(wheel))

    home, workdir = base / "home", base / "work"
    home.mkdir()
    workdir.mkdir()
    return Installed(wheel, venv, site_packages, venv / "bin", home, workdir)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    return _install(tmp_path_factory.mktemp("packaging"))


# -- the wheel ---------------------------------------------------------------------


def test_wheel_metadata_declares_the_runtime_and_the_extras(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(wheel.read(metadata_name).decode())
        (entry_points_name,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = wheel.read(entry_points_name).decode()
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"paddle_impl", "parity"}, packages  # not tests/, tools/ or the fixtures
    assert "paddle_impl/locations.py" in names and "paddle_impl/cam_command.py" in names
    assert not any(name.startswith(("paddle_impl/fixtures", "fixtures/")) for name in names)

    requires = metadata.get_all("Requires-Dist")
    base = {r.split(";")[0].replace(" ", "") for r in requires if "extra ==" not in r}
    names_only = {r.split("<")[0].split(">")[0].split("=")[0].split("~")[0].lower() for r in base}
    assert names_only == {
        "paddlepaddle", "numpy", "opencv-python-headless", "scipy", "scikit-learn", "threadpoolctl", "matplotlib", "pillow",
        "tqdm",
    }, base  # fmt: skip
    assert not any(r.lower().startswith("opencv-python") and "headless" not in r.lower() for r in requires), requires
    parity = {r.split(";")[0].strip() for r in requires if 'extra == "parity"' in r}
    assert parity == {"torch==2.14.1", "torchvision==0.29.1", "grad-cam==1.5.7", "ttach==0.0.3", "markdown-it-py<5,>=4.3"}, parity
    test = {r.split(";")[0].strip() for r in requires if 'extra == "test"' in r}
    assert "paddle-gradcam-parity[parity]" in test and {t.split(">")[0].split("<")[0] for t in test} >= {
        "pytest", "pytest-xdist", "pytest-timeout",
    }, test  # fmt: skip
    assert f"{CAM_SCRIPT} = paddle_impl.cam_command:main" in entry_points, entry_points
    assert f"{PARITY_SCRIPT} = parity.cli:console_main" in entry_points, entry_points
    # paddle-gradcam reaches the harness's torchvision converter only through this entry point
    assert "[paddle_gradcam.torch_weights]\ntorchvision = parity.cam_weight_source:converted_weights" in entry_points


def test_lock_satisfies_the_declared_ranges(installed):
    """requirements.lock (the CI environment) must be one of the environments the wheel accepts."""
    from packaging.requirements import Requirement

    locked = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            locked[name.strip().lower().replace("_", "-")] = version.strip()
    with zipfile.ZipFile(installed.wheel) as wheel:
        (metadata_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(wheel.read(metadata_name).decode())
    for text in metadata.get_all("Requires-Dist"):
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        if name == "paddle-gradcam-parity":
            continue
        assert name in locked, f"{name} is declared but not in requirements.lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock has {name}=={locked[name]}, outside the declared {requirement.specifier}"
        )


# -- the installed commands ----------------------------------------------------------


def test_installed_packages_come_from_the_wheel(installed):
    result = installed.run(
        installed.bin / "python", "-c",
        "import paddle_impl, parity; from paddle_impl import locations; "
        "print(paddle_impl.__file__); print(parity.__file__); print(locations.checkout_root()); print(locations.data_root())",
        **{locations.HOME_ENV_VAR: str(installed.workdir / "data")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    impl_file, parity_file, checkout, data_root = result.stdout.splitlines()
    for path in (impl_file, parity_file):
        assert Path(path).is_relative_to(installed.site_packages), path
    assert checkout == "None"
    assert Path(data_root) == installed.workdir / "data"  # $PADDLE_GRADCAM_HOME wins over ~/.cache


def test_console_scripts_help(installed):
    cam = installed.run(installed.bin / CAM_SCRIPT, "--help")
    assert cam.returncode == 0, cam.stderr
    assert cam.stdout.startswith(f"usage: {CAM_SCRIPT} ")
    assert "class activation map" in cam.stdout and "PaddlePaddle port" in cam.stdout
    # Installed, the default image is the per-user one, not a path inside site-packages.
    expected_default = installed.home / ".cache" / locations.PROJECT_NAME / "fixtures" / "both.png"
    assert str(expected_default) in "".join(cam.stdout.split()), cam.stdout  # argparse wraps long paths
    assert str(installed.site_packages) not in cam.stdout

    harness = installed.run(installed.bin / PARITY_SCRIPT, "--help")
    assert harness.returncode == 0, harness.stderr
    assert "upstream pytorch_grad_cam" in harness.stdout and "--profile" in harness.stdout


@pytest.fixture(scope="module")
def probe_inputs(installed, reference_image, weights_pair) -> Tuple[Path, Path]:
    """A 48x48 image and a copy of the default ResNet50 checkpoint, both outside the repo."""
    image = installed.workdir / f"{PROBE}.png"
    cv2.imwrite(str(image), cv2.resize(cv2.imread(str(reference_image)), (48, 48), interpolation=cv2.INTER_AREA))
    weights = installed.workdir / f"{PROBE}.pth"
    shutil.copyfile(weights_pair[0], weights)
    return image, weights


@dataclass
class ProbeRun:
    result: subprocess.CompletedProcess
    out: Path
    package_changes: List[Tuple[str, Tuple[int, int]]]  # files added, removed or rewritten in site-packages
    repo_hits: List[Path]  # paths in the checkout named after the probe
    repo_output_created: bool


def _run_probe_cam(installed: Installed, image: Path, weights: Path) -> ProbeRun:
    """gradcam on the probe image with the installed console script, from outside the repo, and what it touched."""
    package_before = _snapshot(installed.site_packages)
    repo_had_output = (REPO_ROOT / "output").exists()
    result = installed.run(installed.bin / CAM_SCRIPT, "--image-path", image, "--weights", weights,
                           "--output-dir", "out")  # fmt: skip
    package_after = _snapshot(installed.site_packages)
    return ProbeRun(
        result=result,
        out=installed.workdir / "out",
        package_changes=sorted(set(package_before.items()) ^ set(package_after.items())),
        repo_hits=_repo_paths_named(PROBE),
        repo_output_created=(REPO_ROOT / "output").exists() and not repo_had_output,
    )


def test_installed_cam_writes_only_outputs_and_user_data(installed, probe_inputs, weights_pair, tmp_path):
    image, weights = probe_inputs
    probe = _run_probe_cam(installed, Path(image.name), Path(weights.name))
    result, out = probe.result, probe.out
    assert result.returncode == 0, result.stderr

    names = [f"gradcam_{suffix}" for suffix in ("cam.jpg", "gb.jpg", "cam_gb.jpg", "cam.npy")]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert result.stdout.splitlines() == [f"wrote {Path('out') / name}" for name in names]
    for name in names[:3]:
        picture = cv2.imread(str(out / name))
        assert picture is not None and picture.shape == (48, 48, 3)
    cam = np.load(out / "gradcam_cam.npy")
    assert cam.shape == (48, 48) and cam.dtype == np.float32 and 0.0 <= cam.min() and cam.max() <= 1.0

    # Nothing went into the installed package or the checkout ...
    assert not probe.package_changes, f"the installed package changed: {probe.package_changes[:10]}"
    assert probe.repo_hits == [], f"the installed command wrote into the repository: {probe.repo_hits}"
    assert not probe.repo_output_created, "the installed command created output/ in the repository"
    # ... the conversion went to the per-user data directory (~/.cache/paddle-gradcam-parity with this HOME).
    converted = installed.home / ".cache" / locations.PROJECT_NAME / "fixtures" / "weights" / "converted"
    assert sorted(p.suffix for p in converted.glob(f"{PROBE}-*")) == [".identity", ".pdparams", ".sha256"], (
        sorted(installed.home.rglob("*"))
    )

    # Same numbers as the checkout's cam.py on the same image and weights (whose conversion the repo already has).
    reference_out = tmp_path / "checkout_out"
    checkout = subprocess.run(
        [sys.executable, str(REPO_ROOT / "cam.py"), "--image-path", str(image), "--weights", str(weights_pair[0]),
         "--output-dir", str(reference_out)],
        cwd=tmp_path, env=dict(installed.env(), PYTHONPATH=str(REPO_ROOT)), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert checkout.returncode == 0, checkout.stderr
    expected = np.load(reference_out / "gradcam_cam.npy")
    delta = float(np.max(np.abs(expected - cam)))
    assert np.array_equal(expected, cam), f"installed vs checkout CAM: max|Δ| = {delta:.3g}, expected identical"


def test_breakage_data_beside_the_package_is_detected(tmp_path_factory, probe_inputs):
    """The layout this issue removes (data root = the package's parent) must fail the check above."""

    def old_layout(source: Path) -> None:
        path = source / "paddle_impl" / "locations.py"
        text = path.read_text()
        marker = "def data_root() -> Path:\n"
        assert marker in text
        path.write_text(text.replace(marker, marker + "    return _PACKAGE_DIR.parent\n", 1))

    broken = _install(tmp_path_factory.mktemp("packaging_broken"), patch=old_layout)
    image, weights = probe_inputs
    probe = _run_probe_cam(broken, image, weights)
    assert probe.result.returncode == 0, probe.result.stderr
    written = {path for path, _ in probe.package_changes}
    assert any(path.startswith("fixtures/weights/converted/") for path in written), written
    assert probe.repo_hits == [] and not probe.repo_output_created


def test_installed_cam_without_torch_says_what_to_install(installed, probe_inputs, tmp_path):
    """A base install has no PyTorch: converting .pth weights is then one line naming the [parity] extra
    (the harness is installed, so the converter is found through its entry point and fails on torch)."""
    image, _ = probe_inputs
    weights = tmp_path / "unconverted.pth"  # never converted before, so the conversion needs torch
    shutil.copyfile(probe_inputs[1], weights)
    blocker = tmp_path / "no_torch"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch' (hidden by test_packaging)\", name='torch')\n"
    )
    out = tmp_path / "out"
    result = installed.run(installed.bin / CAM_SCRIPT, "--image-path", image, "--weights", weights,
                           "--output-dir", out, PYTHONPATH=str(blocker))  # fmt: skip
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{CAM_SCRIPT}: error: "), result.stderr
    # the project is not on an index: the hint installs the extra from the wheel this venv was installed from
    assert "PyTorch" in lines[0] and f"pip install '{installed.wheel}[parity]'" in lines[0], lines[0]
    assert not out.exists()


def test_installed_cam_missing_default_image_names_where_it_looked(installed, tmp_path):
    home = tmp_path / "data"
    result = installed.run(installed.bin / CAM_SCRIPT, "--output-dir", tmp_path / "out",
                           **{locations.HOME_ENV_VAR: str(home)})  # fmt: skip
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = result.stderr.strip()
    assert line.startswith(f"{CAM_SCRIPT}: error: ") and "\n" not in line, result.stderr
    assert str(home / "fixtures" / "both.png") in line and locations.HOME_ENV_VAR in line, line
    assert not (tmp_path / "out").exists()


# -- paddle_impl.locations, in this process ---------------------------------------------


def test_checkout_is_recognised():
    assert locations.checkout_root() == REPO_ROOT
    assert locations.data_root() == REPO_ROOT
    assert locations.default_image() == REPO_ROOT / "fixtures" / "both.png"
    assert locations.weights_dir() == REPO_ROOT / "fixtures" / "weights"
    assert locations.cache_dir() == REPO_ROOT / "fixtures" / "cache" / "torch"
    from parity.weights import DEFAULT_WEIGHTS_DIR

    assert DEFAULT_WEIGHTS_DIR == locations.weights_dir()


def _fake_package(root: Path, pyproject: str = "") -> Path:
    package = root / "paddle_impl"
    package.mkdir(parents=True)
    if pyproject:
        (root / "pyproject.toml").write_text(pyproject)
    return package


@pytest.mark.parametrize(
    "layout, pyproject",
    [
        ("site-packages", ""),  # an installed copy: no pyproject.toml beside it
        ("vendored", '[project]\nname = "someone-else"\n'),  # another project's tree
    ],
)
def test_not_a_checkout_uses_the_user_directory(tmp_path, monkeypatch, layout, pyproject):
    package = _fake_package(tmp_path / layout, pyproject)
    monkeypatch.setattr(locations, "_PACKAGE_DIR", package)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(locations.HOME_ENV_VAR, raising=False)
    assert locations.checkout_root() is None and not locations.is_checkout()
    default = tmp_path / "home" / ".cache" / "paddle-gradcam-parity"
    assert locations.data_root() == default
    assert locations.weights_dir() == default / "fixtures" / "weights"
    monkeypatch.setenv(locations.HOME_ENV_VAR, str(tmp_path / "elsewhere"))
    assert locations.default_image() == tmp_path / "elsewhere" / "fixtures" / "both.png"
    assert locations.cache_dir() == tmp_path / "elsewhere" / "fixtures" / "cache" / "torch"
    monkeypatch.setenv(locations.HOME_ENV_VAR, "  ")  # empty means unset
    assert locations.data_root() == default
    for path in (locations.data_root(), locations.default_image(), locations.weights_dir(), locations.cache_dir()):
        assert not path.is_relative_to(package.parent), path


def test_a_copy_of_this_project_is_a_checkout(tmp_path, monkeypatch):
    package = _fake_package(tmp_path / "clone", (REPO_ROOT / "pyproject.toml").read_text())
    monkeypatch.setattr(locations, "_PACKAGE_DIR", package)
    monkeypatch.setenv(locations.HOME_ENV_VAR, str(tmp_path / "ignored"))  # a checkout keeps its own fixtures/
    assert locations.checkout_root() == tmp_path / "clone"
    assert locations.default_image() == tmp_path / "clone" / "fixtures" / "both.png"


def test_fallback_image_is_an_installed_file():
    pytest.importorskip("matplotlib")
    path = locations.fallback_image()
    assert path is not None and path.is_file() and path.name == "grace_hopper.jpg"
