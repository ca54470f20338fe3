"""parity.report: the markdown report and the |Δ| heatmaps, from fake results (no torch, no paddle)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest

from parity import report, report_pictures
from parity.report import (
    NB_HYPHEN,
    WORD_JOINER,
    default_files,
    render_markdown,
    render_summary_markdown,
    summary_line,
    write_diff_image,
    write_report,
)

REPO = Path(__file__).resolve().parent.parent
IMAGE_SHA = "ab" * 32
TORCH_SHA = "cd" * 32
PADDLE_SHA = "ef" * 32
ERROR_TEXT = "paddle worker crashed (exit 139)\nstderr tail: Segmentation fault in conv2d"
FAIL_MESSAGE = (
    "First divergent stage: 'logits'.\n"
    "eigencam-aug_smooth: stage 'logits' mismatched: 3 / 1000 elements (0.30%) exceed the bound."
)


def _stage(name, max_diff, bound, passed, shape=(1, 1, 1000)):
    return {
        "stage": name, "shape": list(shape), "max_abs_diff": max_diff, "mean_abs_diff": max_diff / 10,
        "bound": bound, "bound_rule": "|Δ| <= 0.0001 * max|torch|", "elements_over": 0 if passed else 3,
        "elements": int(np.prod(shape)), "worst_index": [0, 0, 5], "paddle_at_worst": 1.0,
        "torch_at_worst": 1.0, "passed": passed, "note": "",
    }


def _case(method, smooth, **overrides):
    case = {
        "id": f"{method}-{smooth}", "method": method, "smooth": smooth, "dtype": "float32", "passed": True,
        "error": None, "tolerance": 1e-4, "cam_max_abs_diff": 3.58e-6, "cam_mean_abs_diff": 7e-7,
        "overlay_identical_fraction": 1.0, "overlay_max_diff": 0, "first_divergent_stage": None,
        "message": f"{method}-{smooth}: all 3 stages within their bounds", "paddle_seconds": 0.4,
        "torch_seconds": 0.3, "torch_cached": False, "image_size": [16, 16], "target_layer": "layer4",
        "flags": [], "stages": [_stage("logits", 1e-6, 1e-3, True), _stage("cam", 3.58e-6, 1e-4, True, (1, 16, 16))],
        "files": default_files(method, smooth),
    }
    case.update(overrides)
    return case


def _results(fallback=False):
    cases = [
        _case("gradcam", "no_smooth"),
        _case("ablationcam", "no_smooth", overlay_identical_fraction=0.9998, overlay_max_diff=2, torch_cached=True,
              weights_reused={"torch": 1, "paddle": 0}),
        _case("eigencam", "aug_smooth", passed=False, first_divergent_stage="logits", message=FAIL_MESSAGE,
              cam_max_abs_diff=2.5e-3, overlay_identical_fraction=0.95, overlay_max_diff=9,
              flags=["flat CAM (all zeros)"],
              stages=[_stage("logits", 5e-2, 1e-3, False), _stage("cam", 2.5e-3, 1e-4, False, (1, 16, 16))]),
        _case("gradcam++", "eigen_smooth", passed=False, error=ERROR_TEXT, message=ERROR_TEXT,
              cam_max_abs_diff=None, cam_mean_abs_diff=None, overlay_identical_fraction=None,
              overlay_max_diff=None, paddle_seconds=None, torch_seconds=None, image_size=None, stages=[]),
    ]
    return {
        "provenance": {
            "date": "2025-01-01T00:00:00", "python": "3.11.7", "torch": "2.14.1", "torchvision": "0.29.1",
            "paddlepaddle": "3.3.1", "grad-cam": "1.5.7", "numpy": "2.4.6", "opencv": "5.0.0",
            "platform": "Linux-x86_64", "cpu": "Fake CPU", "device": "cpu", "dtype": "float32", "profile": "quick",
            "image": {"path": "fixtures/other.png" if fallback else "fixtures/both.png", "sha256": IMAGE_SHA,
                      "note": "RGBA: alpha dropped", "fallback": fallback},
            "weights": {"source": "default", "torch_path": "fixtures/weights/r50.pth", "torch_sha256": TORCH_SHA,
                        "paddle_path": "fixtures/weights/r50.pdparams", "paddle_sha256": PADDLE_SHA},
            "target_rule": "argmax", "jobs": 2, "cache": "on", "wall_seconds": 123.4,
            "command": "python -m parity --profile quick",
        },
        "summary": {"cases": 4, "passed": 2, "failed": 1, "errors": 1, "overlays_identical": 1},
        "cases": cases,
    }


def _write_fake_outputs(results, out_dir: Path, with_diffs: bool):
    """Tiny CAM .npy and overlay .jpg files for every non-error case."""
    rng = np.random.default_rng(0)
    for case in results["cases"]:
        if case["error"]:
            continue
        files = case["files"]
        cam = rng.random((1, 16, 16)).astype(np.float32)
        for side, delta in (("paddle", 1e-6), ("torch", 0.0)):
            npy = out_dir / files[f"{side}_cam_npy"]
            npy.parent.mkdir(parents=True, exist_ok=True)
            np.save(npy, cam + np.float32(delta))
            overlay = (cam[0, :, :, None] * 255).astype(np.uint8).repeat(3, axis=2)
            cv2.imwrite(str(out_dir / files[f"{side}_cam_jpg"]), overlay)
        if with_diffs:
            write_diff_image(cam + np.float32(1e-6), cam, out_dir / files["diff_jpg"])


def _image_links(markdown: str):
    """Markdown pictures and ``<img src>`` tags (the report uses the latter, for one width per table)."""
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown) + re.findall(r'<img [^>]*src="([^"]+)"', markdown)
    return [unquote(link) for link in links]


def _plain(markdown: str) -> str:
    """The text with its non-breaking hyphens and word joiners as a reader copies them."""
    return markdown.replace(NB_HYPHEN, "-").replace(WORD_JOINER, "")


# -- write_diff_image ---------------------------------------------------------------------
def test_diff_image_returns_max_and_writes_a_jpeg(tmp_path):
    torch_cam = np.zeros((1, 32, 32), np.float32)
    paddle_cam = torch_cam.copy()
    paddle_cam[0, 3, 4] = 3.5e-6
    paddle_cam[0, 10, 10] = -1e-6
    path = tmp_path / "diff" / "log_no_smooth" / "gradcam_absdiff.jpg"
    result = write_diff_image(paddle_cam, torch_cam, path)
    assert result == pytest.approx(3.5e-6, rel=1e-6)
    image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.ndim == 3
    # enlarged to a legible width, with the legend strip underneath
    assert image.shape[1] >= 224 and image.shape[0] == image.shape[1] + report_pictures._STRIP_HEIGHT
    assert path.stat().st_size < 40_000
    assert not list(path.parent.glob("*.tmp"))


def test_diff_image_keeps_the_cam_size_when_large_enough(tmp_path):
    rng = np.random.default_rng(1)
    torch_cam = rng.random((1, 224, 224)).astype(np.float32)
    paddle_cam = torch_cam + rng.normal(0, 1e-6, torch_cam.shape).astype(np.float32)
    path = tmp_path / "d.jpg"
    result = write_diff_image(paddle_cam, torch_cam, path)
    expected = float(np.abs(paddle_cam.astype(np.float64) - torch_cam.astype(np.float64)).max())
    assert result == pytest.approx(expected)
    image = cv2.imread(str(path))
    assert image.shape == (224 + report_pictures._STRIP_HEIGHT, 224, 3)
    assert image[:224].max() > 150  # the hottest pixel is bright in INFERNO


def test_identical_cams_give_the_identical_image(tmp_path):
    cam = np.random.default_rng(2).random((1, 64, 64)).astype(np.float32)
    path = tmp_path / "same.jpg"
    assert write_diff_image(cam, cam.copy(), path) == 0.0
    image = cv2.imread(str(path))
    assert image is not None
    # black except for the white "identical" text: no colour above the colour bar's strip
    image = image[:-report_pictures._STRIP_HEIGHT]
    assert np.median(image) < 10
    assert image.max() > 100
    channel_spread = image.astype(int).max(axis=2) - image.astype(int).min(axis=2)
    assert channel_spread.max() < 40


def test_diff_image_of_different_shapes_says_so(tmp_path):
    path = tmp_path / "bad.jpg"
    assert write_diff_image(np.zeros((1, 8, 8)), np.zeros((1, 16, 16)), path) == float("inf")
    assert cv2.imread(str(path)) is not None


def test_diff_image_with_nan_on_one_side(tmp_path):
    torch_cam = np.zeros((1, 8, 8), np.float32)
    paddle_cam = torch_cam.copy()
    paddle_cam[0, 0, 0] = np.nan
    paddle_cam[0, 1, 1] = 1e-5
    assert write_diff_image(paddle_cam, torch_cam, tmp_path / "nan.jpg") == float("inf")
    assert cv2.imread(str(tmp_path / "nan.jpg")) is not None


# -- the markdown -------------------------------------------------------------------------
def test_report_contents(tmp_path):
    results = _results()
    _write_fake_outputs(results, tmp_path, with_diffs=True)
    path = write_report(results, tmp_path)
    assert path == tmp_path / "parity.md"
    text = _plain(path.read_text(encoding="utf-8"))

    assert "**2/4 cases passed** · failed: 1 · overlays byte-identical: 1/4 · errors: 1" in text
    assert summary_line(results) == "**2/4 cases passed** · failed: 1 · overlays byte-identical: 1/4 · errors: 1"

    # provenance
    for needle in (IMAGE_SHA, TORCH_SHA, PADDLE_SHA, "3.11.7", "2.14.1", "0.29.1", "3.3.1", "1.5.7",
                   "fixtures/both.png", "RGBA: alpha dropped", "argmax", "123.40", "python -m parity --profile quick",
                   "quick", "float32"):
        assert needle in text, needle
    assert "WARNING" not in text

    # the two tables of the original reproduction, and the sections in order
    order = ["></a>Provenance", "></a>The \\|Δ\\| heatmaps", "></a>AblationCAM across the smoothing modes",
             "></a>The 2 methods, no smoothing", "></a>Metrics, all cases", "></a>Cases"]
    positions = [text.index(heading) for heading in order]
    assert positions == sorted(positions)
    assert 'src="output_paddle/log_no_smooth/ablationcam_cam.jpg" width="180"' in text
    assert 'src="output_torch/log_no_smooth/ablationcam_cam.jpg" width="180"' in text
    assert 'src="diff/log_no_smooth/ablationcam_absdiff.jpg" width="180"' in text

    # per-case sections in registry order: gradcam, gradcam++, ablationcam, eigencam
    sections = [text.index(f"<summary>{emoji} <b>{cid}</b>") for emoji, cid in
                (("✅", "gradcam-no_smooth"), ("💥", "gradcam++-eigen_smooth"),
                 ("✅", "ablationcam-no_smooth"), ("❌", "eigencam-aug_smooth"))]
    assert sections == sorted(sections)

    # numbers: 3 significant digits, seconds with 2 decimals, cached torch runs marked
    assert "3.58e-06" in text and "1.00e-04" in text
    # ... and cases whose channel weights were reused, with the reason under the table
    assert "0.40" in text and "0.30<sup>r,c</sup>" in text and "0.40<sup>r" not in text
    assert "identity variant" in text and "came from the cache" in text
    assert "| 99.98 | 2 |" in text

    # every image link points at a file that exists
    links = _image_links(text)
    assert links
    for link in links:
        assert not link.startswith("/") and (tmp_path / link).is_file(), link

    # each case folded under one line, with the command that reruns it alone
    assert text.count("<details><summary>✅ <b>") == 2
    assert "Rerun alone: `python -m parity --profile quick --methods eigencam --smooth aug_smooth --out rerun`" in text

    # the failing case: first divergent stage and its message in a code block
    assert "**logits** ⬅ first divergent" in text
    fenced = re.findall(r"```text\n(.*?)\n```", text, flags=re.S)
    assert any(FAIL_MESSAGE in block for block in fenced)
    assert "flat CAM (all zeros)" in text
    # the error case shows its error text, in a code block
    assert any(ERROR_TEXT in block for block in fenced)
    assert "💥" in text
    # bound rules with pipes do not break the tables
    assert "\\|Δ\\| <= 0.0001 * max\\|torch\\|" in text


def test_report_writes_missing_diff_images_from_the_npy_files(tmp_path):
    results = _results()
    _write_fake_outputs(results, tmp_path, with_diffs=False)
    text = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert (tmp_path / "diff" / "legend.png").is_file() and results["diff_images"]["cases"]
    diff_links = [link for link in _image_links(text) if link.startswith("diff/")]
    assert diff_links
    for link in diff_links:
        assert cv2.imread(str(tmp_path / link)) is not None


def test_missing_files_are_not_linked(tmp_path):
    results = _results()  # no files written at all
    text = render_markdown(results, out_dir=tmp_path)
    assert _image_links(text) == []
    assert "missing: `output_paddle/log_no_smooth/gradcam_cam.jpg`" in text
    # without a directory to check against, the links are written as given
    assert 'src="output_paddle/log_no_smooth/gradcam_cam.jpg"' in render_markdown(results)


def test_fallback_image_is_loud(tmp_path):
    text = render_markdown(_results(fallback=True))
    assert "WARNING" in text and "fixtures/other.png" in text and "fixtures/both.png" in text
    assert text.index("WARNING") < text.index("AblationCAM across the smoothing modes")
    assert "WARNING" in render_summary_markdown(_results(fallback=True))


def test_summary_markdown_is_short(tmp_path):
    results = _results()
    text = render_summary_markdown(results)
    assert summary_line(results) in text
    assert "></a>Metrics, all cases" in text
    assert _image_links(text) == []
    assert 'id="cases"' not in text
    assert "(parity.md#case-eigencam-aug_smooth)" in text  # the matrix links into the full report
    assert IMAGE_SHA in text and "3.3.1" in text
    assert FAIL_MESSAGE in text and ERROR_TEXT in text


def test_summary_counts_come_from_the_cases():
    results = _results()
    results["cases"] = results["cases"][:1]
    assert summary_line(results) == "**1/1 cases passed** · overlays byte-identical: 1/1 · errors: 0"
    assert summary_line({"cases": []}) == "**0/0 cases passed** · overlays byte-identical: 0/0 · errors: 0"


def test_report_is_written_atomically(tmp_path, monkeypatch):
    existing = tmp_path / "parity.md"
    existing.write_text("previous report\n", encoding="utf-8")

    def broken(*args, **kwargs):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(report, "render_markdown", broken)
    with pytest.raises(RuntimeError, match="rendering failed"):
        write_report(_results(), tmp_path)
    assert existing.read_text(encoding="utf-8") == "previous report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["parity.md"]


def test_report_module_imports_neither_torch_nor_paddle():
    code = (
        "import sys, parity.report, parity.report_html, parity.step_summary, parity.report_check, parity.compare, "
        "parity.runner, parity.cli;"
        "bad = [m for m in ('torch', 'paddle') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_error_case_links_no_leftover_images(tmp_path):
    results = _results()
    error_case = next(c for c in results["cases"] if c["error"])
    files = error_case["files"]
    for key in ("paddle_cam_jpg", "torch_cam_jpg"):  # left over from an earlier run
        (tmp_path / files[key]).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / files[key]), np.zeros((8, 8, 3), np.uint8))
    for key in ("paddle_cam_npy", "torch_cam_npy"):
        np.save(tmp_path / files[key], np.zeros((1, 8, 8), np.float32))
    text = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert not any("gradcam++" in link and "eigen_smooth" in link for link in _image_links(text))
    assert not (tmp_path / files["diff_jpg"]).exists()
    assert ERROR_TEXT.splitlines()[0] in text


@pytest.mark.parametrize("run", ["upstream-suite", "zoo", "quick"])
def test_the_rerun_command_parses_and_rebuilds_the_cases_setup(run):
    """Each case's one-line command is a valid ``python -m parity`` call that selects that case's setup alone."""
    import json
    import shlex

    from parity import cli
    from parity.registry import METHODS, PROFILES, Setup
    from parity.report_cases import rerun_command

    path = REPO / "reports" / run / "parity.json"
    if not path.is_file():
        pytest.skip(f"no committed {run} run")
    results = json.loads(path.read_text(encoding="utf-8"))
    for case in results["cases"][::7]:
        words = shlex.split(rerun_command(case, results["provenance"]))
        assert words[:3] == ["python", "-m", "parity"] and "--out" in words and "reports" not in words
        args = cli.build_parser().parse_args(words[3:])
        assert args.methods == [case["method"]] and args.smooth == [case["smooth"]]
        if not case.get("setup"):
            assert args.profile == results["provenance"]["profile"]
            continue
        setup = cli._setup_transform(args)(PROFILES[args.profile].setups_of(METHODS[case["method"]])[0])
        assert isinstance(setup, Setup) and setup.model == case["model"]
        assert setup.layers() == (case["target_layers"]["torch"], case["target_layers"]["paddle"])
        assert setup.batch == case["batch"] and list(setup.size or []) == list(case["size"] or [])
        assert setup.target_category == case.get("target_category")
