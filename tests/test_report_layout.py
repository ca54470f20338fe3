"""The reviewer's report on synthetic runs of every profile's shape: first screen, one |Δ| scale, tables that fit.

No torch, no paddle: the results dicts and their files (tiny CAM .npy pairs and
overlay JPEGs) are made here, shaped as the harness writes them for the seed
profiles (one setup), the all-methods profile (methods with fewer modes), the
zoo (13 models x 8 methods, one of them with a paddle.vision architecture that
differs) and the upstream suite (8 setups x 8 methods x 2 modes).  Every
rendered markdown is checked as GitHub would render it (``parity.report_check``).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np
import pytest

from parity import report, report_pictures
from parity.report import (
    LEGEND_PATH,
    NB_HYPHEN,
    default_files,
    render_all,
    render_markdown,
    sibling_reports,
    summary_line,
    verdict_line,
    write_diff_images,
)
from parity.report_check import ARTICLE_WIDTH, check_markdown, render_gfm, table_widths

pytest.importorskip("markdown_it", reason="markdown-it-py renders the reports as GitHub does (requirements.lock)")

SEED = ["gradcam", "gradcam++", "xgradcam", "ablationcam", "scorecam", "eigencam", "eigengradcam", "layercam"]
MODES = ["no_smooth", "aug_smooth", "eigen_smooth", "aug_eigen_smooth"]
ZOO = ["resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "wide_resnet50_2", "vgg11", "vgg16",
       "mobilenet_v2", "mobilenet_v3_large", "densenet121", "squeezenet1_1", "shufflenet_v2_x1_0"]
SQUEEZE_TEXT = ("paddle.vision's squeezenet1_1 pads its first conv by 1 where torchvision pads by 0; "
                "no weight transfer can make the logits agree.")


def _record(method: str, smooth: str, setup: str = "", diff: float = 2e-6, **extra) -> Dict:
    case_id = f"{setup}/{method}-{smooth}" if setup else f"{method}-{smooth}"
    record = {
        "id": case_id, "method": method, "smooth": smooth, "setup": setup, "model": setup or "resnet50",
        "target_layers": {"torch": "layer4", "paddle": "layer4"}, "batch": 1, "size": None, "dtype": "float32",
        "tolerance": 5e-4 if method == "ablationcam" else 1e-4, "image_size": [16, 16], "passed": True,
        "error": None, "architecture_differs": None, "cam_max_abs_diff": diff, "cam_mean_abs_diff": diff / 5,
        "overlay_identical_fraction": 0.9999, "overlay_max_diff": 2, "first_divergent_stage": None,
        "first_divergent_layer": None, "message": f"{case_id}: all 9 stages within their bounds",
        "paddle_seconds": 0.41, "torch_seconds": 0.52, "torch_cached": False, "weights_reused": {"torch": 0, "paddle": 0},
        "target_categories": {"torch": [[243]], "paddle": [[243]]}, "threads": {"torch": 1, "paddle": 1}, "flags": [],
        "stages": [{"stage": "cam", "shape": [1, 16, 16], "max_abs_diff": diff, "mean_abs_diff": diff / 5,
                    "bound": 1e-4, "bound_rule": "|Δ| <= tolerance", "elements_over": 0, "elements": 256,
                    "passed": True, "note": ""}],
        "files": default_files(method, smooth, setup),
    }
    record.update(extra)
    return record


def _provenance(profile: str, weights=None) -> Dict:
    return {
        "date": "2026-12-01T00:00:00+00:00", "command": f"python -m parity --profile {profile}", "python": "3.11.7",
        "torch": "2.14.1", "torchvision": "0.29.1", "paddlepaddle": "3.3.1", "grad-cam": "1.5.7", "numpy": "2.4.6",
        "opencv": "5.0.0.93", "platform": "Linux-x86_64", "cpu": "Fake CPU (2 cores)", "device": "cpu",
        "dtype": "float32", "profile": profile,
        "image": {"path": "fixtures/both.png", "sha256": "8d" * 32, "note": "", "fallback": False, "size": [224, 224]},
        "weights": weights or {"resnet50": {"source": "default", "identity": "9d" * 32,
                                            "torch_path": "fixtures/weights/resnet50_seed0.pth", "torch_sha256": "ae" * 32,
                                            "paddle_path": "fixtures/weights/converted/resnet50.pdparams",
                                            "paddle_sha256": "2c" * 32}},
        "target_rule": "argmax", "threads": 1, "jobs": 2, "cache": "on",
        "schedule": "4 upstream results from the cache; 22 worker processes to run (12 weights units), 2 at a time, "
                    "1 thread each",
        "wall_seconds": 692.9, "project": {"commit": "7c" * 20, "dirty": True},
    }


def seed_results(profile: str = "full") -> Dict:
    cases = []
    for i, method in enumerate(SEED):
        for j, mode in enumerate(MODES):
            diff = 1.35e-4 if (method, mode) == ("ablationcam", "no_smooth") else (i + 1) * (j + 1) * 3e-7
            cases.append(_record(method, mode, diff=diff))
    return {"provenance": _provenance(profile), "summary": {}, "cases": cases}


def zoo_results() -> Dict:
    cases, weights = [], {}
    for model in ZOO:
        weights[model] = {"source": "seeded", "identity": f"{model[:2]}" * 32, "torch_path": f"fixtures/weights/{model}.pth",
                          "torch_sha256": "ab" * 32, "paddle_path": f"fixtures/weights/converted/{model}.pdparams",
                          "paddle_sha256": "cd" * 32}
        for method in SEED:
            extra = {"model": model}
            if model == "squeezenet1_1":
                extra.update(passed=False, architecture_differs=SQUEEZE_TEXT, first_divergent_stage="logits",
                             cam_max_abs_diff=0.61, overlay_identical_fraction=0.2, overlay_max_diff=180,
                             first_divergent_layer={"torch_path": "features.0", "paddle_path": "_conv",
                                                    "torch_shape": [1, 64, 111, 111], "paddle_shape": [1, 64, 112, 112],
                                                    "max_abs_diff": None, "bound": None, "kind": "architecture",
                                                    "message": "output shapes differ"})
            if model == "mobilenet_v3_large":
                extra["target_layers"] = {"torch": "features[-1]", "paddle": "lastconv"}
            if (model, method) == ("vgg16", "scorecam"):
                extra.update(passed=False, first_divergent_stage="weights", cam_max_abs_diff=3.2e-3,
                             message="vgg16/scorecam-no_smooth: stage 'weights' mismatched: 12 / 512 elements over")
            if (model, method) == ("densenet121", "layercam"):
                extra.update(passed=False, error="paddle worker crashed (exit 139)", cam_max_abs_diff=None,
                             cam_mean_abs_diff=None, overlay_identical_fraction=None, overlay_max_diff=None, stages=[])
            cases.append(_record(method, "no_smooth", setup=model, diff=1.1e-6 * (1 + len(model) % 5), **extra))
    return {"provenance": _provenance("zoo", weights), "summary": {}, "cases": cases}


def upstream_suite_results() -> Dict:
    cases = []
    for model in ("resnet18", "vgg11"):
        for batch, size in ((2, (32, 32)), (1, (32, 40))):
            for target in (None, 100):
                setup = f"{model}-b{batch}-{size[0]}x{size[1]}" + ("" if target is None else f"-t{target}")
                for method in SEED:
                    for mode in ("no_smooth", "eigen_smooth"):
                        cases.append(_record(method, mode, setup=setup, model=model, batch=batch, size=list(size),
                                             image_size=[size[1], size[0]], diff=7e-7))
    return {"provenance": _provenance("upstream-suite"), "summary": {}, "cases": cases}


def all_methods_results() -> Dict:
    plain = {"finercam", "refinecam", "sess"}
    cases = []
    for method in ["hirescam", "gradcamelementwise", "fullgrad", "shapleycam", "fem", "kpca_cam", "randomcam",
                   "finercam", "segeigencam", "refinecam", "sess", "dff"]:
        modes = ["no_smooth"] if method == "dff" else (["no_smooth", "eigen_smooth"] if method in plain else MODES)
        cases += [_record(method, mode, diff=4e-7) for mode in modes]
    return {"provenance": _provenance("all-methods"), "summary": {}, "cases": cases}


def write_files(results: Dict, out_dir: Path) -> None:
    """A CAM pair (.npy) and the two overlays (.jpg) for every case that ran; |Δ| as the record says."""
    rng = np.random.default_rng(0)
    for case in results["cases"]:
        if case.get("error"):
            continue
        files = case["files"]
        height, width = case.get("image_size") or [16, 16]
        cam = rng.random((1, height, width)).astype(np.float64) * 0.5
        delta = np.zeros_like(cam)
        if case.get("cam_max_abs_diff"):
            delta[0, height // 2, width // 3] = case["cam_max_abs_diff"]
        for side, value in (("paddle", cam + delta), ("torch", cam)):
            npy = out_dir / files[f"{side}_cam_npy"]
            npy.parent.mkdir(parents=True, exist_ok=True)
            np.save(npy, value.astype(np.float32) if case["dtype"] == "float32" else value)
            overlay = cv2.applyColorMap((value[0] * 255).astype(np.uint8), cv2.COLORMAP_JET)
            cv2.imwrite(str(out_dir / files[f"{side}_cam_jpg"]), overlay)


def render_dir(results: Dict, out_dir: Path, siblings: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    write_files(results, out_dir)
    write_diff_images(results, out_dir)
    texts = render_all(results, out_dir, siblings=siblings)
    for name, text in texts.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    return texts


def _first_screen(markdown: str) -> str:
    """Everything before the first section: what a reviewer sees before scrolling."""
    return markdown.split("\n## ", 1)[0]


def _assert_fits(markdown: str) -> None:
    for head, width in table_widths(markdown):
        assert width <= ARTICLE_WIDTH, f"table [{head.strip()[:50]}] needs ~{width:.0f} px > {ARTICLE_WIDTH} px"


def _numbers(text: str) -> List[str]:
    return re.findall(r"\d\.\d\de[-\u2011]\d\d", text)


# -- the first screen ---------------------------------------------------------------------
def test_seed_profile_first_screen_has_verdict_matrix_and_contents(tmp_path):
    results = seed_results()
    (tmp_path / "f64").mkdir()
    (tmp_path / "f64" / "parity.md").write_text("# f64\n", encoding="utf-8")
    texts = render_dir(results, tmp_path, siblings={"float64": "f64/parity.md", "bench": "bench.md"})
    text = texts["parity.md"]
    first = _first_screen(text)
    lines = first.splitlines()
    assert lines[0].startswith("# Paddle vs PyTorch Grad-CAM parity (float32 · full · cpu)")
    assert lines[2] == verdict_line(results) and lines[2].startswith("✅ **PASS** · **32/32 cases passed**")
    # the matrix: one row per method, one column per mode, share of the bound
    assert "| method | no_smooth | aug_smooth | eigen_smooth | aug_eigen_smooth |" in first
    assert "[✅\u00a027%](#case-ablationcam-no_smooth)" in first  # 1.35e-4 of 5e-4
    assert "[✅\u00a00.3%](#case-gradcam-no_smooth)" in first  # 3e-7 of 1e-4
    # contents: every section, and the siblings that exist (bench.md does not)
    for anchor in ("provenance", "heatmap-scale", "ablationcam-across-the-smoothing-modes", "methods-no-smoothing",
                   "metrics-all-cases", "cases"):
        assert f"](#{anchor})" in first, anchor
        assert f'<a name="{anchor}" id="{anchor}"></a>' in text, anchor
    assert "[float64](f64/parity.md)" in first and "bench.md" not in first
    assert "[summary (no pictures)](parity_summary.md)" in first and "[HTML (self-contained)](parity.html)" in first
    # how close: the five cases nearest their bound, the nearest first
    worst = first.split("Closest to the bound", 1)[1].split("\n\n", 2)[1].splitlines()
    assert len(worst) == 2 + 5 and worst[2].startswith("| [✅ ablationcam-no_smooth](#case-ablationcam-no_smooth) | 27% |")
    # short enough to be one screen: title, verdict, commit, 7 lines of worst cases, 10 matrix lines, legend,
    # contents, siblings
    assert len([line for line in lines if line.strip()]) <= 25
    assert check_markdown(tmp_path / "parity.md") == []
    assert check_markdown(tmp_path / "parity_summary.md") == []
    _assert_fits(text)


def test_failures_are_on_the_first_screen(tmp_path):
    results = seed_results()
    case = results["cases"][5]
    case.update(passed=False, first_divergent_stage="gradients", cam_max_abs_diff=2.5e-3, message="boom | bad")
    results["cases"][9].update(error="worker crashed\nSegmentation fault", passed=False, stages=[],
                               cam_max_abs_diff=None)
    text = render_markdown(results)
    first = _first_screen(text)
    assert first.splitlines()[2].startswith("❌ **FAIL** · **30/32 cases passed**")
    # where not: every failure with the stage it parted at, and the error's last line
    assert ("- [❌ `gradcam++-aug_smooth`](#case-gradcampp-aug_smooth) (failed): first divergent stage "
            "`gradients`") in first
    assert "- [💥 `xgradcam-aug_smooth`](#case-xgradcam-aug_smooth) (error): did not finish: Segmentation fault" in first
    assert "[💥\u00a0error](#case-xgradcam-aug_smooth)" in first
    assert "[❌\u00a025×](#case-gradcampp-aug_smooth)" in first
    # and it heads the cases closest to (here: over) their bound
    assert first.split("Closest to the bound", 1)[1].split("\n| [", 2)[1].startswith("❌ gradcam++-aug_smooth](")
    # the failing case's stage table is shown inside its fold, a passing one's is folded once more
    section = text.split('id="case-gradcampp-aug_smooth"', 1)[1].split("\n</details>\n\n<a name", 1)[0]
    assert section.count("<details>") == 1 and "boom | bad" in section
    assert "<details><summary>1 stages compared, all within their bounds</summary>" in text


def test_zoo_matrix_is_setup_by_method_with_architectures_differ(tmp_path):
    results = zoo_results()
    texts = render_dir(results, tmp_path)
    text = texts["parity.md"]
    first = _first_screen(text)
    header = next(line for line in first.splitlines() if line.startswith("| setup |"))
    assert header.count("|") == len(SEED) + 2
    assert "eigen\u00adgrad\u00adcam" in header  # may wrap between its parts, never mid-part
    squeeze = next(line for line in first.splitlines() if line.startswith("| [squeezenet1_<wbr>1](#setup-squeezenet1_1)"))
    assert "🔶 architectures differ at `features.0`" in squeeze
    assert squeeze.count("🔶\u00a0n/a") == len(SEED)
    # neither passed nor failed, yet in the denominator: every case that ran is counted
    assert summary_line(results) == ("**94/104 cases passed** · failed: 1 · architectures differ: 8 · "
                                     "overlays byte-identical: 0/104 · errors: 1")
    assert verdict_line(results).startswith("❌ **FAIL**")
    assert "Architectures differ (not counted as passed or failed):" in first
    assert "- 🔶 **squeezenet1_1** at torch `features.0` / paddle `_conv` (8 cases)" in first
    # the case section says why, and where
    section = text.split('id="case-squeezenet1_1-gradcam-no_smooth"', 1)[1].split("\n#### ", 1)[0]
    assert "🔶 **Architectures differ**" in section and "not a port failure" in section
    assert "**First divergent layer** (architecture): torch `features.0` 1×64×111×111 vs paddle `_conv`" in section
    # mixed target layers are named per side
    assert "target layers torch `features[-1]`, paddle `lastconv`" in text
    # the matrix's rows link every setup's cases; every link lands, every picture exists, every table fits
    for model in ZOO:
        assert f"| [{model.replace('_', '_<wbr>')}](#setup-{model})" in first
    assert check_markdown(tmp_path / "parity.md") == []
    assert check_markdown(tmp_path / "parity_summary.md") == []
    _assert_fits(text)
    _assert_fits(texts["parity_summary.md"])
    # weights of 13 models fold into one cell
    assert "<details><summary>13 models: resnet18, resnet34" in text


def test_zoo_shared_scale_leaves_out_the_architectures_that_differ(tmp_path):
    results = zoo_results()
    write_files(results, tmp_path)
    info = write_diff_images(results, tmp_path)
    comparable = [c["cam_max_abs_diff"] for c in results["cases"]
                  if not c["error"] and not c["architecture_differs"]]
    # the top is a decade past the largest bound of the cases that can pass, not set by squeezenet's 0.61
    bounds = {c["tolerance"] for c in results["cases"] if not c["error"] and not c["architecture_differs"]}
    assert info["bounds"] == sorted(bounds) and info["scale"] == pytest.approx(10 ** math.ceil(math.log10(max(bounds)) + 1))
    assert info["scale"] < 0.61 and max(comparable) < info["scale"]
    assert "densenet121/layercam-no_smooth" not in info["cases"]  # the error case is not drawn
    assert results["diff_images"] is info


def test_upstream_suite_matrix_rows_are_setup_and_mode(tmp_path):
    results = upstream_suite_results()
    texts = render_dir(results, tmp_path)
    first = _first_screen(texts["parity.md"])
    rows = [line for line in first.splitlines() if line.startswith("| [resnet18") or line.startswith("| [vgg11")]
    assert len(rows) == 8  # one per setup; a cell holds no_smooth, then eigen_smooth
    assert rows[0].startswith("| [resnet18-b2-32x32](#setup-resnet18-b2-32x32) | [✅\u00a00.7%](#case-resnet18-b2-32x32-gradcam-no_smooth)<br>[✅\u00a00.7%](#case-resnet18-b2-32x32-gradcam-eigen_smooth) |")
    assert "one line per smoothing mode: no_smooth, then eigen_smooth" in first
    assert "batch 2 · input 32×32 (W×H)" in texts["parity.md"]
    assert check_markdown(tmp_path / "parity.md") == []
    _assert_fits(texts["parity.md"])


def test_all_methods_marks_modes_a_method_does_not_have(tmp_path):
    results = all_methods_results()
    texts = render_dir(results, tmp_path)
    first = _first_screen(texts["parity.md"])
    dff = next(line for line in first.splitlines() if line.startswith("| dff |"))
    assert dff.count("·") == 3 and "· not part of this run" in first
    assert "## <a name=\"methods-no-smoothing\" id=\"methods-no-smoothing\"></a>The 12 methods, no smoothing" in texts["parity.md"]
    assert "AblationCAM across" not in texts["parity.md"]
    assert check_markdown(tmp_path / "parity.md") == []
    _assert_fits(texts["parity.md"])


# -- one scale, one legend, one width -----------------------------------------------------
def test_diff_images_share_one_scale_and_the_report_says_so(tmp_path):
    results = seed_results()
    write_files(results, tmp_path)
    info = write_diff_images(results, tmp_path)
    assert info["scale"] == pytest.approx(1e-2) and info["floor"] == 1e-9 and "largest bound" in info["rule"]
    assert (tmp_path / info["grid"]).is_file() and set(info["p999"]) == set(info["cases"])
    legend = cv2.imread(str(tmp_path / LEGEND_PATH))
    assert legend is not None and legend.shape[1] >= 2 * 600  # drawn at twice its display width
    # the same |Δ| gives the same colour in every picture: the colour of its place on the one scale
    for case_id in ("ablationcam-no_smooth", "gradcam-no_smooth"):
        assert _hottest_matches_the_scale(tmp_path, results, case_id, info["scale"]), case_id
    text = render_markdown(results, out_dir=tmp_path)
    section = text.split('id="heatmap-scale"', 1)[1].split("\n## ", 1)[0]
    assert "**one logarithmic scale**" in section and f"1.00e{NB_HYPHEN}02" in section
    assert '<img src="diff/grid.jpg"' in section
    assert '<img src="diff/legend.png" width="600"' in section
    # every picture of a table has the table's one width
    for table in re.findall(r"(?:^\|.*\n)+", text, flags=re.M):
        widths = set(re.findall(r'<img [^>]*width="(\d+)"', table))
        assert len(widths) <= 1, widths


def test_fixed_scale_and_saturation(tmp_path):
    results = seed_results()
    write_files(results, tmp_path)
    info = write_diff_images(results, tmp_path, scale=1e-4)
    assert info["scale"] == 1e-4 and info["rule"] == "a fixed top"


def test_pictures_without_cam_files_keep_their_own_scale_and_say_so(tmp_path):
    results = seed_results()
    write_files(results, tmp_path)
    (tmp_path / results["cases"][0]["files"]["paddle_cam_npy"]).unlink()
    info = write_diff_images(results, tmp_path)
    assert "gradcam-no_smooth" not in info["cases"]
    text = render_markdown(results, out_dir=tmp_path)
    assert "1 picture(s) could not be redrawn" in text and "(own scale)" in text
    # without write_diff_images (an older run), the report says every picture has its own scale
    del results["diff_images"]
    assert "scaled to **its own maximum**" in render_markdown(results)


def test_batch_cams_are_drawn_side_by_side(tmp_path):
    results = {"cases": [_record("gradcam", "no_smooth", image_size=[8, 8])]}
    files = results["cases"][0]["files"]
    for side, value in (("paddle", 0.5), ("torch", 0.25)):
        path = tmp_path / files[f"{side}_cam_npy"]
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.full((2, 8, 8), value, np.float32))
    write_diff_images(results, tmp_path)
    image = cv2.imread(str(tmp_path / files["diff_jpg"]))
    assert image.shape[1] == 2 * (image.shape[0] - report_pictures._STRIP_HEIGHT)


# -- tables that fit, numbers that hold together ------------------------------------------
def test_metrics_columns_are_named_and_empty_ones_dropped():
    text = render_markdown(seed_results())
    metrics = text.split('id="metrics-all-cases"', 1)[1].split("\n## ", 1)[0]
    header = next(line for line in metrics.splitlines() if line.startswith("| case"))
    assert "pixels identical %" in header and "max grey Δ (0–255)" in header
    assert "p99.9" not in header  # not recorded, not drawn: an empty column is left out
    assert "flags" not in header and "first divergent stage" not in header  # empty in every row
    assert "| 99.99 | 2 |" in metrics and "| 0.3% |" in metrics
    assert "mean" not in header
    results = seed_results()
    results["cases"][0]["flags"] = ["flat CAM (all zeros)"]
    metrics = render_markdown(results).split('id="metrics-all-cases"', 1)[1].split("\n## ", 1)[0]
    header = next(line for line in metrics.splitlines() if line.startswith("| case"))
    assert "flags" not in header  # a flag is a sentence under the table, not a column
    assert "Flags: [" in metrics and ": flat CAM (all zeros)." in metrics
    results["cases"][1]["cam_p999_abs_diff"] = 2.5e-7
    metrics = render_markdown(results).split('id="metrics-all-cases"', 1)[1].split("\n## ", 1)[0]
    header = next(line for line in metrics.splitlines() if line.startswith("| case"))
    assert header.split(" | ")[2].startswith("p99.9") and f"2.50e{NB_HYPHEN}07" in metrics


def test_numbers_never_break_and_pipes_hold_together():
    text = render_markdown(seed_results())
    outside_fences = re.sub(r"```.*?```", "", text, flags=re.S)
    assert _numbers(outside_fences) and all(NB_HYPHEN in n for n in _numbers(outside_fences))
    assert "max|Δ|" not in outside_fences.replace("\\|", "|").replace("|\u2060Δ|", "")


def test_seconds_marks_have_a_legend():
    results = seed_results()
    results["cases"][0].update(torch_cached=True, weights_reused={"torch": 0, "paddle": 1})
    text = render_markdown(results)
    assert "0.41<sup>r</sup>" in text and "0.52<sup>c</sup>" in text
    assert "<sup>r</sup> the case's channel weights" in text and "<sup>c</sup> upstream's result came from the cache" in text


# -- provenance ---------------------------------------------------------------------------
def test_provenance_has_a_real_header_the_project_state_and_words():
    results = seed_results()
    results["provenance"]["schedule"] = {"cached_jobs": 2, "worker_jobs": 28, "workers": 2, "threads_per_worker": 1}
    text = render_markdown(results)
    prov = text.split('id="provenance"', 1)[1].split("\n## ", 1)[0]
    assert "| field | value |" in prov and "|  |  |" not in prov
    assert f"commit `{'7c' * 20}` · **dirty**: uncommitted changes" in prov
    assert "2 upstream results from the cache; 28 worker processes to run, 2 at a time, 1 thread each" in prov
    assert f"identity `{'9d' * 32}`" in prov and "**resnet50**" in prov
    results["provenance"]["project"] = {"commit": None, "dirty": None}
    assert "not a git checkout" in render_markdown(results)
    # an older report's one flat weights dict still renders
    results["provenance"]["weights"] = {"source": "default", "torch_path": "a.pth", "torch_sha256": "ae" * 32}
    assert f"torch: <code>a.pth</code><br>sha256 `{'ae' * 32}`" in render_markdown(results)


def test_fallback_image_warning_is_on_the_first_screen():
    results = seed_results()
    results["provenance"]["image"].update(fallback=True, path="grace_hopper.jpg")
    first = _first_screen(render_markdown(results))
    assert "WARNING: `fixtures/both.png` was not used" in first


# -- the summary --------------------------------------------------------------------------
def test_summary_links_into_the_full_report(tmp_path):
    results = zoo_results()
    texts = render_dir(results, tmp_path)
    summary = texts["parity_summary.md"]
    assert "<img" not in summary and "![" not in summary
    assert "[✅ " in summary and "(parity.md#case-resnet18-gradcam-no_smooth)" in summary
    assert "[full report, with pictures](parity.md)" in summary
    assert "## <a name=\"failures-and-errors\"" in summary and "paddle worker crashed" in summary
    assert check_markdown(tmp_path / "parity_summary.md") == []


def test_render_all_renders_before_writing(tmp_path, monkeypatch):
    results = seed_results()
    write_files(results, tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("html failed")

    monkeypatch.setattr("parity.report_html.render_html", broken)
    with pytest.raises(RuntimeError, match="html failed"):
        report.write_report(results, tmp_path, html_report=True)
    assert not (tmp_path / "parity.md").exists()


def test_gfm_render_of_the_matrix_is_a_table():
    html = render_gfm(render_markdown(seed_results()))
    assert html.count("<table>") >= 4
    assert "<p>|" not in html


def test_results_dict_round_trips_through_json(tmp_path):
    results = seed_results()
    write_files(results, tmp_path)
    write_diff_images(results, tmp_path)
    again = json.loads(json.dumps(results))
    assert render_markdown(again, out_dir=tmp_path) == render_markdown(results, out_dir=tmp_path)


# -- the HTML report ----------------------------------------------------------------------
def test_html_report_is_self_contained(tmp_path):
    results = zoo_results()
    (tmp_path / "f64").mkdir()
    for name in ("parity.md", "parity.html"):
        (tmp_path / "f64" / name).write_text("f64\n", encoding="utf-8")
    texts = render_dir(results, tmp_path, siblings={"float64": "f64/parity.md"})
    page = texts["parity.html"]
    assert page.startswith("<!doctype html>") and "<meta charset=\"utf-8\">" in page
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(sources) == texts["parity.md"].count("<img ") and sources
    assert all(src.startswith(("data:image/jpeg;base64,", "data:image/png;base64,")) for src in sources)
    # nothing outside the file: no stylesheet, script, font or picture from elsewhere
    assert not re.search(r"<(link|script|iframe)\b", page) and "url(" not in page and "@import" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    # every in-page link lands; a sibling with an HTML twin is linked as HTML
    ids = set(re.findall(r'\bid="([^"]+)"', page))
    for anchor in re.findall(r'href="#([^"]+)"', page):
        assert anchor in ids, anchor
    assert 'href="f64/parity.html"' in page and 'href="parity.md"' in page
    assert "<table>" in page and "🔶" in page


def test_html_report_names_a_missing_picture(tmp_path):
    results = seed_results()
    write_files(results, tmp_path)
    (tmp_path / results["cases"][0]["files"]["torch_cam_jpg"]).unlink()
    from parity.report_html import render_html

    page = render_html(results, tmp_path)
    assert "missing: <code>output_torch/log_no_smooth/gradcam_cam.jpg</code>" in page


# -- the step summary ---------------------------------------------------------------------
def test_step_summary_has_no_local_paths_and_links_the_artifact(tmp_path):
    from parity.step_summary import render_step_summary

    results = zoo_results()
    url = "https://github.com/o/r/actions/runs/42"
    text = render_step_summary(results, artifact_url=url)
    html = render_gfm(text)
    assert text.splitlines()[2] == verdict_line(results)
    assert f"[run's artifact]({url})" in text
    assert "<img" not in html and 'href="#' not in html
    for href in re.findall(r'href="([^"]+)"', html):
        assert href.startswith("https://"), href
    assert "| setup |" in text and "paddle worker crashed" in text and "## Provenance" in text
    assert len(text.encode("utf-8")) < 200_000
    assert "artifact" in render_step_summary(results)


def test_step_summary_is_cut_to_its_size_limit(tmp_path):
    from parity.step_summary import render_step_summary

    results = zoo_results()
    for case in results["cases"][:40]:
        case.update(passed=False, first_divergent_stage="logits", message="x" * 20_000)
    text = render_step_summary(results, max_bytes=30_000)
    assert len(text.encode("utf-8")) <= 30_000
    assert text.splitlines()[2] == verdict_line(results)  # the verdict always comes first
    assert "left out to keep the summary under 30 kB" in text
    assert "cut at 3000 characters" in text
    # a cut never leaves a fenced block or a <details> open
    assert text.count("```") % 2 == 0 and text.count("<details>") == text.count("</details>")


# -- the project's own state --------------------------------------------------------------
def test_project_state_of_a_checkout(tmp_path):
    import shutil
    import subprocess

    from parity.provenance import project_state

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, env=env, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "one")
    state = project_state(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", state["commit"]) and state["dirty"] is False
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "parity.md").write_text("a run's own output\n")
    assert project_state(tmp_path)["dirty"] is False  # the run's output does not make the code dirty
    (tmp_path / "a.py").write_text("x = 2\n")
    assert project_state(tmp_path) == {"commit": state["commit"], "dirty": True}


def test_project_state_never_fails(tmp_path, monkeypatch):
    from parity.provenance import project_state

    assert project_state(tmp_path) == {"commit": None, "dirty": None}  # not a checkout
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert project_state() == {"commit": None, "dirty": None}


# -- the checks can fail ------------------------------------------------------------------
def test_checks_catch_a_broken_report(tmp_path, monkeypatch):
    results = seed_results()
    texts = render_dir(results, tmp_path)
    assert check_markdown(tmp_path / "parity.md") == []
    # links without targets, pictures that are not there, a table that does not parse
    broken = texts["parity.md"].replace('<a name="case-gradcam-no_smooth" id="case-gradcam-no_smooth"></a>', "")
    broken = broken.replace("diff/legend.png", "diff/legend-gone.png").replace("|---|---|", "|---|", 1)
    problems = "\n".join(check_markdown(tmp_path / "parity.md", text=broken))
    assert "in-page link '#case-gradcam-no_smooth' has no target" in problems
    assert "picture 'diff/legend-gone.png' does not exist" in problems
    assert "a table did not parse" in problems
    # an empty header row, a sentence in a code span (bench.md's missing backtick), a table too wide
    sentence = "`make parity on this 2-core machine, machine otherwise idle. cold: a fresh clone with the shared " \
               "folder beside it, no venv and an empty cache, then the matrix with two workers of one thread` (date)"
    problems = "\n".join(check_markdown(tmp_path / "x.md", text=f"|  |  |\n|---|---|\n| a | b |\n\n{sentence}\n"))
    assert "empty header row" in problems and "code span holds prose" in problems
    wide = "| " + " | ".join(f"column {i}" for i in range(12)) + " |\n|" + "---|" * 12 + "\n| " + \
           " | ".join("1.23e\u201104" for _ in range(12)) + " |\n"
    assert table_widths(wide)[0][1] > ARTICLE_WIDTH


def test_a_per_picture_scale_is_caught(tmp_path, monkeypatch):
    """Break the shared scale (each picture scaled to its own max) and the comparison of colours fails."""
    own_max = report_pictures._heatmap
    monkeypatch.setattr(report_pictures, "_heatmap", lambda diff, scale: own_max(diff, float(diff[np.isfinite(diff)].max())))
    results = seed_results()
    write_files(results, tmp_path)
    write_diff_images(results, tmp_path)
    info = results["diff_images"]
    assert not _hottest_matches_the_scale(tmp_path, results, "gradcam-no_smooth", info["scale"])


def _hottest_matches_the_scale(out_dir, results, case_id, top) -> bool:
    """Whether a picture's hottest pixel has the colour the scale gives its max|Δ| (JPEG-close)."""
    case = next(c for c in results["cases"] if c["id"] == case_id)
    image = cv2.imread(str(out_dir / case["files"]["diff_jpg"])).astype(int)[:-report_pictures._STRIP_HEIGHT]
    y, x = divmod(int(image.reshape(-1, 3).sum(axis=1).argmax()), image.shape[1])
    # the hottest CAM pixel's enlarged block, away from its edges (JPEG blurs colour across them)
    factor = image.shape[1] // (case.get("image_size") or [16, 16])[1]
    top_y, left_x = (y // factor) * factor, (x // factor) * factor
    block = image[top_y + 3:top_y + factor - 3, left_x + 3:left_x + factor - 3].reshape(-1, 3)
    hottest = np.median(block, axis=0)
    position = float(report_pictures._log_position(np.array([case["cam_max_abs_diff"]]), top)[0])
    expected = cv2.applyColorMap(np.array([[round(position * 255)]], np.uint8), cv2.COLORMAP_INFERNO)[0, 0]
    return bool(np.abs(hottest - expected.astype(int)).max() <= 12)


# -- siblings and the step summary's command line -----------------------------------------
def test_reports_link_the_one_index_not_each_other(tmp_path):
    (tmp_path / "quick").mkdir()
    assert sibling_reports(tmp_path) == {"index of every report": "README.md"}
    assert sibling_reports(tmp_path / "quick", tmp_path) == {"index of every report": "../README.md"}
    results = seed_results()
    texts = render_dir(results, tmp_path / "quick", siblings=sibling_reports(tmp_path / "quick", tmp_path))
    assert "README.md" not in texts["parity.md"]  # no index yet: no broken link
    (tmp_path / "README.md").write_text("# Reports\n", encoding="utf-8")
    texts = render_dir(results, tmp_path / "quick", siblings=sibling_reports(tmp_path / "quick", tmp_path))
    first = _first_screen(texts["parity.md"])
    assert "[index of every report](../README.md)" in first and "**Reports:**" in first
    assert check_markdown(tmp_path / "quick" / "parity.md") == []


def test_step_summary_command_line(tmp_path, capsys):
    from parity.step_summary import main

    results = seed_results()
    (tmp_path / "parity.json").write_text(json.dumps(results), encoding="utf-8")
    assert main([str(tmp_path), "--artifact-url", "https://github.com/o/r/actions/runs/7"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2] == verdict_line(results) and "(https://github.com/o/r/actions/runs/7)" in out
    assert main([str(tmp_path / "missing")]) == 0
    assert "No parity report in" in capsys.readouterr().out


def test_rerender_writes_a_finished_runs_reports_again_and_links_new_siblings(tmp_path):
    results = seed_results()
    write_files(results, tmp_path / "full")
    (tmp_path / "full" / "parity.json").write_text(json.dumps(results))
    report.rerender(tmp_path / "full", tmp_path)
    first = (tmp_path / "full" / "parity.md").read_text(encoding="utf-8")
    assert "README.md" not in first
    (tmp_path / "README.md").write_text("# b\n", encoding="utf-8")  # the index appears afterwards
    assert report.main([str(tmp_path / "full"), "--root", str(tmp_path)]) == 0
    again = (tmp_path / "full" / "parity.md").read_text(encoding="utf-8")
    assert "[index of every report](../README.md)" in again
    assert json.loads((tmp_path / "full" / "parity.json").read_text())["cases"] == results["cases"]
    assert (tmp_path / "full" / "parity.html").is_file() and (tmp_path / "full" / "parity_summary.md").is_file()
