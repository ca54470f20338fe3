"""``python -m parity`` under bad input, interruption, faults and a full disk.

Every refusal goes through the public command (a subprocess, as a user runs
it) and is checked the same way: exit status 2, one line on stderr naming
the problem and the offending path or value, no traceback (unless
``--debug``), and nothing half-written in ``--out`` (an earlier report there
is left byte-identical; a missing ``--out`` is not created).

The runs that reach the workers use the tiny profile and one or two cheap
cases; the two baseline runs the determinism and disk-full tests need are
made once per session (shared between xdist workers under a file lock).
"""
from __future__ import annotations

import copy
import errno
import json
import re
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

from conftest import file_lock

REPO_ROOT = Path(__file__).resolve().parent.parent
PROG = "python -m parity"
ERROR_PREFIX = f"{PROG}: error: "
TINY = ["--profile", "tiny", "--no-cache"]
GRADCAM_TINY = [*TINY, "--methods", "gradcam", "--smooth", "no_smooth"]
REPORT_FILES = ("parity.json", "parity.md", "parity_diff.log", "parity_summary.md")

pytestmark = [pytest.mark.timeout(600), pytest.mark.filterwarnings("ignore:No ccache found:UserWarning")]


# -- helpers ------------------------------------------------------------------------------
def _env(tmpdir: Optional[Path] = None, **extra: str) -> Dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PADDLE_GRADCAM_PROGRESS="0", PYTHONUNBUFFERED="1")
    env.pop("PARITY_INJECT_FAULT", None)
    if tmpdir is not None:  # the workers' job files (and so their command lines) live under it
        tmpdir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    env.update(extra)
    return env


def run_parity(*args, tmpdir: Optional[Path] = None, timeout: float = 400, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "parity", *map(str, args)],
        cwd=REPO_ROOT, env=_env(tmpdir, **env), capture_output=True, text=True, timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, exactly one stderr line ``python -m parity: error: ...`` holding every fragment."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""
    return lines[0]


def assert_usage_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """argparse's refusal: the usage block, then one ``error:`` line; exit 2."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.rstrip("\n").splitlines()
    assert lines[0].startswith(f"usage: {PROG} "), result.stderr
    assert all(line.startswith(" ") for line in lines[1:-1]), result.stderr  # usage continuation lines
    assert lines[-1].startswith(ERROR_PREFIX), lines[-1]
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    assert result.stdout == ""
    return lines[-1]


def snapshot(directory: Path) -> Dict[str, bytes]:
    """Every file under ``directory`` (relative path -> bytes); {} if it does not exist."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def old_report(tmp_path) -> Path:
    """An --out directory holding an earlier run's report, which a refused run must not touch."""
    out = tmp_path / "out"
    out.mkdir()
    for name in REPORT_FILES:
        (out / name).write_text(f"earlier report: {name}\n")
    return out


def check_untouched(out: Path, before: Dict[str, bytes]) -> None:
    assert snapshot(out) == before, f"{out} changed: {sorted(set(snapshot(out)) ^ set(before))}"


def _proc_cmdlines() -> Dict[int, bytes]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                pass
    return found


def our_workers(tmpdir: Path) -> List[int]:
    """pids of ``parity.worker`` processes whose job file lies under ``tmpdir`` (i.e. started by this test)."""
    mark = str(tmpdir).encode()
    return [pid for pid, cmd in _proc_cmdlines().items() if b"parity.worker" in cmd and mark in cmd]


def wait_no_workers(tmpdir: Path, grace: float = 10.0) -> List[int]:
    deadline = time.monotonic() + grace
    while (left := our_workers(tmpdir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture
def worker_tmpdir(tmp_path):
    """TMPDIR for one run; afterwards no worker started under it may be left (killed, by pid, if one is)."""
    tmpdir = tmp_path / "tmpdir"
    yield tmpdir
    left = wait_no_workers(tmpdir, grace=5.0)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"parity.worker processes left running: {left}"


def _shared_run(shared_dir: Path, name: str, args: List[str]) -> Path:
    """One CLI run per session (xdist workers share it): the out directory, read-only by convention."""
    base = shared_dir / "cli-robustness" / name
    with file_lock(shared_dir / "cli-robustness" / f"{name}.lock"):
        done = base / "done.json"
        if not done.exists():
            shutil.rmtree(base, ignore_errors=True)
            result = run_parity(*args, "--out", base / "out", tmpdir=base / "tmp")
            base.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps({"rc": result.returncode, "stdout": result.stdout, "stderr": result.stderr}))
    info = json.loads(done.read_text())
    assert info["rc"] == 0, info
    return base / "out"


@pytest.fixture(scope="session")
def gradcam_baseline(shared_dir, weights_pair, reference_image) -> Path:
    return _shared_run(shared_dir, "gradcam-quick", GRADCAM_TINY)


def npy_files(out: Path) -> Dict[str, bytes]:
    files = {}
    for top in ("stages", "output_paddle", "output_torch"):
        for path in sorted((out / top).rglob("*.npy")):
            files[str(path.relative_to(out))] = path.read_bytes()
    return files


# -- 1, 2: the image ----------------------------------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG with an IHDR claiming ``width`` x ``height`` and no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _make_image(kind: str, tmp_path: Path, reference_image: Path) -> Path:
    path = tmp_path / f"{kind}.png"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_an_image":
        path.write_text("this is not an image\n")
    elif kind == "truncated":
        data = reference_image.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


IMAGE_CASES = {
    "missing": "image not found: {path}",
    "directory": "image path is a directory, not a file: {path}",
    "empty": "image is an empty file: {path}",
    "not_an_image": "not an image (or not a format this tool can read): {path}",
    "truncated": "image {path} is truncated or corrupt: ",
}


@pytest.mark.parametrize("kind", list(IMAGE_CASES))
def test_bad_image_is_refused_in_one_line(kind, tmp_path, old_report, reference_image):
    image = _make_image(kind, tmp_path, reference_image)
    before = snapshot(old_report)
    line = assert_one_line_error(
        run_parity("--image", image, "--out", old_report, *GRADCAM_TINY), IMAGE_CASES[kind].format(path=image)
    )
    check_untouched(old_report, before)
    # and a fresh --out is not even created
    fresh = tmp_path / "fresh-out"
    assert run_parity("--image", image, "--out", fresh, *GRADCAM_TINY).stderr.strip() == line
    assert not fresh.exists()


def test_debug_shows_the_traceback_for_a_bad_image(tmp_path, reference_image):
    image = _make_image("truncated", tmp_path, reference_image)
    result = run_parity("--image", image, "--out", tmp_path / "out", "--debug", *GRADCAM_TINY)
    assert result.returncode == 1, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert f"paddle_impl.errors.UserError: image {image} is truncated or corrupt" in result.stderr
    assert not (tmp_path / "out").exists()


def test_oversized_image_is_refused_from_its_header(tmp_path, old_report):
    from paddle_impl.image_io import MAX_IMAGE_SIDE

    side = MAX_IMAGE_SIDE + 808  # 9000 x 9000
    image = tmp_path / "huge.png"
    # Only a header: were any pixel decoded, this would be reported as truncated instead.
    image.write_bytes(_png_header_only(side, side))
    before = snapshot(old_report)
    assert_one_line_error(
        run_parity("--image", image, "--out", old_report, *GRADCAM_TINY),
        f"image {image} is {side}x{side} pixels, too large: the limit is {MAX_IMAGE_SIDE} pixels per side",
    )
    check_untouched(old_report, before)

    # One pixel past the limit in one direction only, in a real (tiny) file.
    import cv2

    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.zeros((1, MAX_IMAGE_SIDE + 1, 3), np.uint8))
    assert_one_line_error(
        run_parity("--image", wide, "--out", old_report, *GRADCAM_TINY),
        f"image {wide} is {MAX_IMAGE_SIDE + 1}x1 pixels, too large",
    )
    check_untouched(old_report, before)


# -- 3, 4: option values --------------------------------------------------------------------
@pytest.mark.parametrize(
    "option, value, fragments",
    [
        ("--methods", "gradcam,nosuchcam", ["argument --methods: invalid method 'nosuchcam' (choose from all, seed, gradcam, gradcam++, xgradcam, ablationcam, scorecam, eigencam, eigengradcam, layercam, hirescam,", "dff)"]),
        ("--methods", ",", ["argument --methods: invalid method ',' (choose from all, seed, gradcam,"]),
        ("--model", "alexnet", ["argument --model: invalid choice: 'alexnet' (choose from", "resnet18", "shufflenet_v2_x1_0"]),
        ("--size", "32x", ["argument --size: invalid size '32x': expected WIDTHxHEIGHT, e.g. 32x40"]),
        ("--batch", "0", ["argument --batch: expected a whole number >= 1, got '0'"]),
        ("--target-layers", "__import__('os')", ["argument --target-layers:", "__import__('os')"]),
        ("--smooth", "blur", ["argument --smooth: invalid smoothing mode 'blur' (choose from no_smooth, aug_smooth, eigen_smooth, aug_eigen_smooth)"]),
        ("--dtype", "float16", ["argument --dtype: invalid choice: 'float16' (choose from", "float32", "float64"]),
        ("--device", "tpu", ["argument --device: invalid choice: 'tpu' (choose from", "cpu", "gpu"]),
        ("--profile", "medium", ["argument --profile: invalid choice: 'medium' (choose from", "full", "quick"]),
        ("--target-category", "1000", ["argument --target-category: category 1000 is outside 0..999"]),
        ("--target-category", "-1", ["argument --target-category: category -1 is outside 0..999"]),
        ("--target-category", "abc", ["argument --target-category: invalid category 'abc': an ImageNet class index 0..999"]),
        ("--jobs", "0", ["argument --jobs: expected a whole number >= 1, got '0'"]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_option_value_is_an_argparse_error(option, value, fragments, old_report):
    before = snapshot(old_report)
    assert_usage_error(run_parity(option, value, "--out", old_report, *TINY), *fragments)
    check_untouched(old_report, before)


# -- 5: weights -----------------------------------------------------------------------------
class _Payload:
    """Unpickling this calls ``Path(marker).touch()``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory, weights_pair) -> Dict[str, Path]:
    import torch

    torch_path, paddle_path, _ = weights_pair
    d = tmp_path_factory.mktemp("weights")
    files = {"missing": d / "missing.pth", "marker": d / "PWNED", "sanity_marker": d / "SANITY"}
    files["text"] = d / "text.pth"
    files["text"].write_text("this is not a checkpoint\n")
    files["truncated"] = d / "truncated.pth"
    files["truncated"].write_bytes(torch_path.read_bytes()[:1000])
    files["pdparams"] = d / paddle_path.name
    shutil.copyfile(paddle_path, files["pdparams"])
    files["wrong_keys"] = d / "wrong_keys.pth"
    torch.save({"foo": torch.zeros(1)}, files["wrong_keys"])
    state = torch.load(torch_path, map_location="cpu", weights_only=True)
    state["fc.weight"] = torch.zeros(10, 2048)
    files["wrong_shapes"] = d / "wrong_shapes.pth"
    torch.save(state, files["wrong_shapes"])
    files["malicious"] = d / "malicious.pth"
    torch.save({"fc.weight": _Payload(files["marker"])}, files["malicious"])
    # The payload is live: an unsafe load of its twin does run it.
    sanity = d / "sanity.pth"
    torch.save({"fc.weight": _Payload(files["sanity_marker"])}, sanity)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.load(sanity, map_location="cpu", weights_only=False)
    assert files["sanity_marker"].exists()
    return files


WEIGHTS_CASES = {
    "missing": ["weights file not found: {path}"],
    "text": ["weights file {path} "],
    "truncated": ["weights file {path} is not a readable PyTorch checkpoint (truncated or corrupt?)"],
    "pdparams": ["weights file {path} is a Paddle .pdparams; pass the torchvision .pth it was converted from"],
    "wrong_keys": ["weights file {path}: the state dict does not fit torchvision's resnet50: missing keys: ", "(267 in all)", "unexpected keys: foo"],
    "wrong_shapes": ["weights file {path}: the state dict does not fit torchvision's resnet50: wrong shapes: fc.weight (10, 2048)", "(expected (1000, 2048))"],
    "malicious": ["weights file {path} was refused: its pickle needs more than tensors to load (it could run code), so it was not loaded"],
}


@pytest.mark.parametrize("kind", list(WEIGHTS_CASES))
def test_bad_weights_are_refused_in_one_line(kind, bad_weights, old_report):
    from parity.weights import DEFAULT_WEIGHTS_DIR

    path = bad_weights[kind]
    converted = DEFAULT_WEIGHTS_DIR / "converted"
    before, converted_before = snapshot(old_report), set(os.listdir(converted))
    assert_one_line_error(
        run_parity("--weights", path, "--out", old_report, *GRADCAM_TINY),
        *(fragment.format(path=path) for fragment in WEIGHTS_CASES[kind]),
    )
    check_untouched(old_report, before)
    # no conversion of a refused file was cached
    assert not [n for n in set(os.listdir(converted)) - converted_before if n.startswith(path.stem)]
    if kind == "malicious":
        assert not bad_weights["marker"].exists(), "the pickle's payload ran"


# -- 6: device ------------------------------------------------------------------------------
@pytest.mark.skipif(
    Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None, reason="a GPU may be visible here"
)
def test_gpu_without_cuda_is_refused(old_report):
    before = snapshot(old_report)
    line = assert_one_line_error(run_parity("--device", "gpu", "--out", old_report, *GRADCAM_TINY), "--device gpu: ")
    assert "CUDA" in line and "GPU" in line and "--device cpu" in line
    check_untouched(old_report, before)


# -- 7: the output directory ----------------------------------------------------------------
def test_output_directory_under_a_regular_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file\n")
    out = blocker / "out"
    assert_one_line_error(run_parity("--out", out, *GRADCAM_TINY), f"output directory {out} is not writable (Not a directory)")
    assert blocker.read_text() == "a regular file\n"
    assert_one_line_error(
        run_parity("--out", blocker, *GRADCAM_TINY), f"output directory {blocker} exists and is not a directory"
    )
    assert blocker.read_text() == "a regular file\n"


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _report_files(out: Path) -> Dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in REPORT_FILES}


def _assert_disk_full_refusal(exc_info, capsys, out: Path, before: Dict[str, bytes]) -> str:
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(ERROR_PREFIX)]
    assert errors == [f"{ERROR_PREFIX}cannot write the report to {out}: No space left on device"], err
    assert err.rstrip("\n").splitlines()[-1] == errors[0]
    assert _report_files(out) == before, "an earlier report was changed"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    return errors[0]


def test_disk_full_while_writing_the_report_keeps_the_old_one(tmp_path, gradcam_baseline, monkeypatch, capsys):
    """A real run in this process; writing anything for parity.md fails with ENOSPC."""
    import parity.cli

    out = tmp_path / "out"
    shutil.copytree(gradcam_baseline, out)
    before = _report_files(out)
    real_write_text = pathlib.Path.write_text

    def write_text(self, *args, **kwargs):
        if self.is_relative_to(out) and "parity.md" in self.name:
            raise _enospc()
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(SystemExit) as exc_info:
        parity.cli.main(["--out", str(out), *GRADCAM_TINY])
    _assert_disk_full_refusal(exc_info, capsys, out, before)


def _fake_matrix(monkeypatch, baseline: Path) -> None:
    """Skip the workers: run_matrix returns the baseline run's records (the report is what is tested)."""
    import parity.runner

    records = json.loads((baseline / "parity.json").read_text())["cases"]
    monkeypatch.setattr(parity.runner, "run_matrix", lambda config, live=None, **callbacks: copy.deepcopy(records))


@pytest.mark.parametrize("failing", REPORT_FILES)
def test_failure_renaming_any_report_file_keeps_all_old_ones(failing, tmp_path, gradcam_baseline, monkeypatch, capsys):
    import parity.cli

    out = tmp_path / "out"
    shutil.copytree(gradcam_baseline, out)
    before = _report_files(out)
    _fake_matrix(monkeypatch, gradcam_baseline)
    real_replace, failed = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == failing and not failed:
            failed.append(dst)
            raise _enospc()
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)  # = paddle_impl.atomic.os.replace
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(SystemExit) as exc_info:
        parity.cli.main(["--out", str(out), *GRADCAM_TINY])
    assert failed
    _assert_disk_full_refusal(exc_info, capsys, out, before)


def test_report_files_are_all_replaced_when_nothing_fails(tmp_path, gradcam_baseline, monkeypatch, capsys):
    import parity.cli

    out = tmp_path / "out"
    shutil.copytree(gradcam_baseline, out)
    for name in REPORT_FILES:
        (out / name).write_text("stale\n")
    _fake_matrix(monkeypatch, gradcam_baseline)
    monkeypatch.chdir(REPO_ROOT)
    assert parity.cli.main(["--out", str(out), *GRADCAM_TINY]) == 0
    assert all((out / name).read_text() != "stale\n" for name in REPORT_FILES)
    assert json.loads((out / "parity.json").read_text())["summary"]["passed"] == 1
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert capsys.readouterr().err == ""


# -- 8: interruption ------------------------------------------------------------------------
@pytest.mark.parametrize("signum, status, line", [
    (signal.SIGINT, 130, f"{PROG}: interrupted"),
    (signal.SIGTERM, 143, f"{PROG}: terminated (SIGTERM)"),
], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_workers_and_writes_no_report(signum, status, line, tmp_path, old_report, worker_tmpdir, weights_pair):
    before = snapshot(old_report)
    args = ["--methods", "scorecam", "--smooth", "aug_smooth", "--out", old_report]
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        # The Paddle worker hangs, so the run is still going when the signal comes: on an idle
        # machine the tiny case can finish within the second this test waits after the workers start.
        # SIGINT back to its default in the child: a shell that runs this suite in the background
        # (`.ci/run &`, nohup) hands its children SIGINT ignored, and Python then installs no
        # KeyboardInterrupt handler, so the Ctrl-C this test sends would never arrive.
        proc = subprocess.Popen(
            [sys.executable, "-m", "parity", *TINY, *map(str, args)],
            cwd=REPO_ROOT, env=_env(worker_tmpdir, PARITY_INJECT_FAULT="paddle:scorecam=hang"), stdout=stdout, stderr=stderr,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + 120
            while not our_workers(worker_tmpdir):
                assert proc.poll() is None, (tmp_path / "stderr").read_text()
                assert time.monotonic() < deadline, "no worker started within 120 s"
                time.sleep(0.2)
            time.sleep(1.0)
            sent = time.monotonic()
            proc.send_signal(signum)
            try:
                returncode = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running 20 s after {signal.Signals(signum).name}")
            elapsed = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    err = (tmp_path / "stderr").read_text()
    assert returncode == status, (returncode, err)
    # before the interruption, only the schedule line ("... 2 worker processes to run, 2 at a time ...") was printed
    lines = err.strip().splitlines()
    assert lines[-1:] == [line] and all(" to run, " in l for l in lines[:-1]), err
    assert elapsed < 20
    assert wait_no_workers(worker_tmpdir) == []
    check_untouched(old_report, before)  # the earlier report is still there, unchanged
    assert not [p for p in worker_tmpdir.iterdir() if p.name.startswith("parity-work-")], "work directory left behind"


# -- 9: worker crash and hang ---------------------------------------------------------------
def _faulty_run(tmp_path: Path, worker_tmpdir: Path, fault: str, *extra: str):
    out = tmp_path / "out"
    result = run_parity(
        *TINY, "--methods", "gradcam,scorecam", "--smooth", "no_smooth", "--out", out, *extra,
        tmpdir=worker_tmpdir, PARITY_INJECT_FAULT=fault,
    )
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert (out / "parity.md").is_file() and (out / "parity_summary.md").is_file()
    results = json.loads((out / "parity.json").read_text())
    cases = {case["id"]: case for case in results["cases"]}
    # gradcam (224x224, layer4) and scorecam (64x64, layer2) are different setups: different workers
    assert sorted(cases) == ["gradcam-no_smooth", "scorecam-no_smooth"]
    assert results["summary"] == dict(results["summary"], cases=2, passed=1, errors=1)
    scorecam = cases["scorecam-no_smooth"]
    assert scorecam["error"] is None and scorecam["passed"], scorecam["message"]
    assert "gradcam-no_smooth" in (out / "parity.md").read_text()
    return result, cases["gradcam-no_smooth"]


def test_crashing_worker_is_one_error_case_and_the_rest_runs(tmp_path, worker_tmpdir, weights_pair):
    result, gradcam = _faulty_run(tmp_path, worker_tmpdir, "torch:gradcam=crash")
    error = gradcam["error"]
    assert not gradcam["passed"]
    assert error.startswith("torch worker was killed by SIGABRT (status -6); its output ends:\n"), error
    assert "parity.worker: injected fault 'crash' (torch gradcam)" in error  # the worker's output tail
    assert "gradcam-no_smooth" in result.stderr and "ERROR" in result.stderr


def test_hanging_worker_times_out_and_the_rest_runs(tmp_path, worker_tmpdir, weights_pair):
    # 30 s rather than 20: on a busy 2-core machine a healthy quick worker can take ~20 s.
    result, gradcam = _faulty_run(tmp_path, worker_tmpdir, "paddle:gradcam=hang", "--case-timeout", "30")
    error = gradcam["error"]
    assert not gradcam["passed"]
    assert error.startswith("paddle worker timed out after 30 s; its output ends:\n"), error
    assert "parity.worker: injected fault 'hang' (paddle gradcam)" in error
    assert "timed out" in result.stderr


def test_a_method_that_raises_in_a_shared_worker_fails_only_its_own_cases(tmp_path, worker_tmpdir, weights_pair):
    """gradcam and eigencam share one worker per framework; eigencam raising on the torch side
    must leave gradcam's cases compared and fail eigencam's with the torch side's traceback."""
    out = tmp_path / "out"
    result = run_parity(*TINY, "--methods", "gradcam,eigencam", "--smooth", "no_smooth", "--out", out,
                        tmpdir=worker_tmpdir, PARITY_INJECT_FAULT="torch:eigencam=raise")
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    cases = {case["id"]: case for case in json.loads((out / "parity.json").read_text())["cases"]}
    assert cases["gradcam-no_smooth"]["passed"], cases["gradcam-no_smooth"]["message"]
    eigencam = cases["eigencam-no_smooth"]
    assert not eigencam["passed"] and eigencam["error"].startswith("torch side, eigencam:"), eigencam["error"]
    assert "injected fault 'raise' (torch eigencam)" in eigencam["error"]
    # the console line names the exception, not only the side and the method
    assert re.search(r"eigencam-no_smooth\s+ERROR torch side, eigencam: RuntimeError: injected fault 'raise' "
                     r"\(torch eigencam\)", result.stderr), result.stderr


def test_a_target_layer_missing_from_its_model_is_refused_before_any_worker(old_report):
    """A layer name that one side's model lacks would end every case in the same worker traceback."""
    before = snapshot(old_report)
    line = assert_one_line_error(
        run_parity(*GRADCAM_TINY, "--target-layers", "layer4", "--paddle-target-layers", "stages[3]", "--out", old_report),
        "--paddle-target-layers on the paddle side of resnet50:", "bad target-layer expression 'stages[3]'",
        "has no sub-layer 'stages' (it has: conv1,")
    assert "worker" not in line
    check_untouched(old_report, before)


# -- 10: --help -----------------------------------------------------------------------------
def test_help_lists_every_option_with_its_default():
    from parity.cli import build_parser

    result = run_parity("--help", timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    text = result.stdout
    entries: Dict[str, str] = {}
    current = None
    for raw in text.split("\noptions:\n", 1)[1].splitlines():
        if raw.startswith("  -"):
            current = raw.split()[0].rstrip(",")
            entries[current] = raw
        elif current is not None:
            entries[current] += " " + raw.strip()
    for action in build_parser()._actions:
        if action.dest == "help":
            continue
        option = action.option_strings[0]
        assert option in entries, f"{option} is missing from --help"
        entry = " ".join(entries[option].split())
        assert "default" in entry, entry
        if action.default is not None:
            assert str(action.default) in entry, entry
    # list-valued options read as the user would type them, not as a Python list
    assert "['" not in text and "(default: None)" not in text


# -- 11: determinism ------------------------------------------------------------------------
def test_gradcam_runs_are_byte_identical(tmp_path, gradcam_baseline):
    result = run_parity(*GRADCAM_TINY, "--out", tmp_path / "again", tmpdir=tmp_path / "tmp")
    assert result.returncode == 0, result.stderr
    first, second = npy_files(gradcam_baseline), npy_files(tmp_path / "again")
    assert len(first) >= 20 and sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []


@pytest.mark.timeout(1500)
def test_scorecam_runs_are_byte_identical(tmp_path, weights_pair, reference_image):
    args = [*TINY, "--methods", "scorecam", "--smooth", "no_smooth"]
    outs = []
    for run in ("first", "second"):
        result = run_parity(*args, "--out", tmp_path / run, tmpdir=tmp_path / f"tmp-{run}", timeout=580)
        assert result.returncode == 0, result.stderr
        outs.append(npy_files(tmp_path / run))
    first, second = outs
    assert "stages/log_no_smooth/scorecam/weights_paddle.npy" in first and sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []


# -- 12: flat and NaN CAMs, in this process --------------------------------------------------
def _tiny_models(kind: str):
    """The same tiny classifier in Paddle and torch: conv -> (ReLU | log) -> pool -> linear.

    ``flat``: the conv's weights and bias are zero, so the target layer (the
    ReLU) outputs zeros.
    ``nan``: the conv is random and the next layer is ``log``, so every
    negative conv output becomes NaN (and every logit NaN).
    """
    import paddle
    import torch

    rng = np.random.default_rng(0)
    conv_w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    if kind == "flat":
        conv_w[:] = 0
    lin_w = rng.standard_normal((3, 4)).astype(np.float32)  # torch layout (out, in)
    lin_b = np.array([0.1, 0.5, -0.2], np.float32)

    class PaddleLog(paddle.nn.Layer):
        def forward(self, x):
            return paddle.log(x)

    class TorchLog(torch.nn.Module):
        def forward(self, x):
            return torch.log(x)

    pm = paddle.nn.Sequential(
        paddle.nn.Conv2D(3, 4, 3, padding=1), paddle.nn.ReLU() if kind == "flat" else PaddleLog(),
        paddle.nn.AdaptiveAvgPool2D(1), paddle.nn.Flatten(), paddle.nn.Linear(4, 3),
    )
    pm[0].weight.set_value(conv_w)
    pm[0].bias.set_value(np.zeros(4, np.float32))
    pm[4].weight.set_value(np.ascontiguousarray(lin_w.T))
    pm[4].bias.set_value(lin_b)
    tm = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU() if kind == "flat" else TorchLog(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3),
    )
    with torch.no_grad():
        tm[0].weight.copy_(torch.from_numpy(conv_w))
        tm[0].bias.zero_()
        tm[4].weight.copy_(torch.from_numpy(lin_w))
        tm[4].bias.copy_(torch.from_numpy(lin_b))
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    return pm.eval(), tm.eval(), x


def _run_both(kind: str):
    """GradCAM on both sides with every warning an error; the recorded stages plus ``cam``."""
    import paddle
    import pytorch_grad_cam
    import torch

    import paddle_impl
    from parity.stages import StageRecorder

    pm, tm, x = _tiny_models(kind)
    sides = {}
    for name, library, model, tensor, to_numpy in (
        ("paddle", paddle_impl, pm, paddle.to_tensor(x), lambda t: t.detach().numpy().copy()),
        ("torch", pytorch_grad_cam, tm, torch.from_numpy(x), lambda t: t.detach().cpu().numpy().copy()),
    ):
        recorder = StageRecorder(to_numpy)
        with warnings.catch_warnings(), np.errstate(all="raise"):
            warnings.simplefilter("error")
            with library.GradCAM(model=model, target_layers=[model[1]]) as cam:
                recorder.attach(cam)
                recorder.start_case()
                grayscale = cam(input_tensor=tensor, targets=None)
        stages = recorder.stacked()
        stages["cam"] = np.asarray(grayscale)
        sides[name] = stages
    return sides


def test_flat_cam_is_all_zeros_on_both_sides_without_warnings():
    from parity.compare import compare_case
    from parity.registry import METHODS
    from parity.case_record import stage_flags

    sides = _run_both("flat")
    for name, stages in sides.items():
        assert stages["cam"].shape == (1, 8, 8) and stages["cam"].dtype == np.float32, name
        assert not np.any(stages["cam"]), name  # 0 / (1e-7 + 0) = 0: no division warning either side
        # zero activations; the gradients (w.r.t. the ReLU's output) are not zero, but weigh zeros
        assert not np.any(stages["activations"]) and np.all(np.isfinite(stages["gradients"])), name
        assert stage_flags(stages) == ["flat CAM (all zeros)"], name
    assert sides["paddle"]["cam"].tobytes() == sides["torch"]["cam"].tobytes()
    assert sides["paddle"]["targets"].tolist() == sides["torch"]["targets"].tolist() == [[1]]  # argmax of the bias
    assert compare_case("tiny-flat", METHODS["gradcam"], "float32", sides["paddle"], sides["torch"]).passed


def test_nan_activations_give_the_same_nan_cam_and_are_flagged():
    from parity.compare import compare_case, compare_stage, stage_bounds
    from parity.registry import METHODS
    from parity.case_record import stage_flags

    sides = _run_both("nan")
    for name, stages in sides.items():
        activations = stages["activations"]
        assert np.isnan(activations).any() and not np.isnan(activations).all(), name
        assert np.isnan(stages["logits"]).all(), name
        # NaN logits: both argmaxes take the first NaN, class 0
        assert stages["targets"].tolist() == [[0]], name
        # d logit / d log-output does not involve the NaNs: finite gradients
        assert np.isfinite(stages["gradients"]).all(), name
        # the NaNs reach the CAM: every pixel NaN (no warning raised on the way, on either side)
        assert np.isnan(stages["cam"]).all(), name
        assert stage_flags(stages) == ["non-finite CAM", "non-finite activations"], name
    assert np.array_equal(np.isnan(sides["paddle"]["activations"]), np.isnan(sides["torch"]["activations"]))
    comparison = compare_case("tiny-nan", METHODS["gradcam"], "float32", sides["paddle"], sides["torch"])
    assert comparison.passed, comparison.message()  # NaN at the same place on both sides agrees
    assert comparison.stage("cam").max_abs_diff == 0.0
    # NaN on one side only is a mismatch
    one_sided = sides["paddle"]["cam"].copy()
    one_sided[..., 0, 0] = 0.5
    diff = compare_stage("cam", one_sided, sides["torch"]["cam"], stage_bounds(METHODS["gradcam"], "float32")["cam"])
    assert not diff.passed and diff.elements_over == 1 and diff.max_abs_diff == float("inf")


def test_an_error_headline_is_the_first_line_and_the_exception_a_traceback_ends_in():
    from parity.outcome import error_headline

    traceback_text = ("paddle side, gradcam:\nTraceback (most recent call last):\n  File \"w.py\", line 3, in f\n"
                      "    g()\npaddle_impl.errors.UserError: bad target-layer expression 'x'\n")
    assert error_headline(traceback_text) == ("paddle side, gradcam: paddle_impl.errors.UserError: "
                                              "bad target-layer expression 'x'")
    assert error_headline("worker timed out after 5 s\n") == "worker timed out after 5 s"
    assert error_headline("") == "(no message)"
    assert error_headline("x" * 300, limit=10) == "x" * 9 + "…"
