"""parity.bench: the schedule, the rendering from fake measurements, the arguments, and one real smoke run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parity import bench
from parity.registry import METHODS, SEED_METHODS

REPO = Path(__file__).resolve().parent.parent
HEAVY = [name for name, spec in METHODS.items() if spec.reruns_network_per_channel]
LIGHT = [name for name, spec in METHODS.items() if not spec.reruns_network_per_channel]


# -- schedule -----------------------------------------------------------------------------
def test_schedule_alternates_paddle_and_torch():
    runs = bench.schedule(["gradcam", "eigencam"], repeat=3, heavy_repeat=1)
    assert [framework for _, framework in runs] == ["paddle", "torch"] * 6
    assert [name for name, _ in runs] == ["gradcam"] * 6 + ["eigencam"] * 6


def test_schedule_gives_heavy_methods_heavy_repeat_runs():
    assert HEAVY == ["ablationcam", "scorecam"]
    runs = bench.schedule(list(METHODS), repeat=3, heavy_repeat=2)
    for name in METHODS:
        for framework in ("paddle", "torch"):
            expected = 2 if name in HEAVY else 3
            assert runs.count((name, framework)) == expected, (name, framework)
    # Never the same framework twice in a row, and every method's runs stay together, in the given order.
    assert all(a[1] != b[1] for a, b in zip(runs, runs[1:]))
    names = [name for name, _ in runs]
    assert list(dict.fromkeys(names)) == list(METHODS)
    assert len(runs) == 2 * (3 * len(LIGHT) + 2 * len(HEAVY))


def test_schedule_with_one_repeat_is_one_pair_per_method():
    assert bench.schedule(["scorecam", "gradcam"], 1, 1) == [
        ("scorecam", "paddle"), ("scorecam", "torch"), ("gradcam", "paddle"), ("gradcam", "torch"),
    ]


# -- rendering ----------------------------------------------------------------------------
def _fake_data(parity_run=None):
    samples = {
        "gradcam": {
            "paddle": {"seconds": [0.30, 0.10, 0.20], "wall_seconds": [9.0, 8.0, 8.5], "errors": []},
            "torch": {"seconds": [0.05, 0.15, 0.10], "wall_seconds": [5.0, 5.1, 5.2], "errors": []},
        },
        "scorecam": {
            "paddle": {"seconds": [120.0], "wall_seconds": [130.0], "peak_rss_mb": [1530.4], "errors": []},
            "torch": {"seconds": [240.0], "wall_seconds": [250.0], "peak_rss_mb": [2811.6], "errors": []},
        },
        "eigencam": {
            "paddle": {"seconds": [], "wall_seconds": [3.0], "errors": ["worker exited with status 1; boom | bad"]},
            "torch": {"seconds": [0.5], "wall_seconds": [4.0], "errors": []},
        },
    }
    return {
        "machine": {"cpu": "Fake CPU 9000", "cores": 2, "platform": "Linux-test", "threads": 2, "date": "2024-01-02T03:04:05+00:00",
                    "versions": {"python": "3.11.0", "paddlepaddle": "2.6.1", "torch": "2.3.0", "torchvision": "0.18.0", "grad-cam": "1.5.7", "numpy": "1.26.4"}},
        "settings": {"threads": 2, "repeat": 3, "heavy_repeat": 1, "image": "fixtures/both.png", "image_size": [224, 224],
                     "dtype": "float32", "device": "cpu", "target_layer": "layer4", "smoothing": "none",
                     "order": "alternating", "command": "python -m parity.bench --repeat 3"},
        "methods": bench.summarize(samples),
        "parity_run": parity_run,
    }


def test_summarize_medians_and_ratio():
    methods = _fake_data()["methods"]
    assert methods["gradcam"]["paddle_seconds"] == pytest.approx(0.20)
    assert methods["gradcam"]["torch_seconds"] == pytest.approx(0.10)
    assert methods["gradcam"]["ratio"] == pytest.approx(2.0)
    assert methods["gradcam"]["paddle_samples"] == [0.30, 0.10, 0.20]
    assert methods["gradcam"]["torch_wall_seconds"] == [5.0, 5.1, 5.2]
    assert methods["scorecam"]["ratio"] == pytest.approx(0.5)
    assert methods["eigencam"]["paddle_seconds"] is None
    assert methods["eigencam"]["ratio"] is None
    assert methods["eigencam"]["errors"] == ["paddle: worker exited with status 1; boom | bad"]


def test_summarize_even_sample_count_takes_the_mean_of_the_middle_two():
    summary = bench.summarize({"layercam": {"paddle": {"seconds": [1.0, 3.0]}, "torch": {"seconds": [2.0, 2.0]}}})
    assert summary["layercam"]["paddle_seconds"] == pytest.approx(2.0)
    assert summary["layercam"]["ratio"] == pytest.approx(1.0)


def _table_rows(markdown: str):
    """The rows of the per-method table (the first table; later sections have their own)."""
    main_part = markdown.split("\n## ", 1)[0]
    return [line for line in main_part.splitlines() if line.startswith("| ") and not line.startswith("| method")]


def test_render_markdown_table_rows_per_method():
    markdown = bench.render_markdown(_fake_data())
    rows = _table_rows(markdown)
    assert [row.split("|")[1].strip() for row in rows] == ["gradcam", "scorecam", "eigencam"]
    gradcam = [cell.strip() for cell in rows[0].split("|")[1:-1]]
    assert gradcam == ["gradcam", "0.200", "0.100", "2.00×", "—", "—", "3 each"]
    scorecam = [cell.strip() for cell in rows[1].split("|")[1:-1]]
    assert scorecam == ["scorecam", "120", "240", "0.50×", "1530", "2812", "1 each"]
    eigencam = [cell.strip() for cell in rows[2].split("|")[1:-1]]
    assert eigencam == ["eigencam", "—", "0.500", "—", "—", "—", "paddle 0, torch 1 (1 failed)"]
    assert "| method | paddle s | torch s | paddle/torch | paddle peak MiB | torch peak MiB | samples |" in markdown
    assert "Fake CPU 9000 (2 cores)" in markdown
    assert "paddlepaddle 2.6.1" in markdown and "torch 2.3.0" in markdown and "grad-cam 1.5.7" in markdown
    assert "own fresh process, alternately" in markdown and "with 2 threads" in markdown
    assert "## Failed runs" in markdown and "boom \\| bad" in markdown
    assert "Full parity run" not in markdown
    assert "Load average" not in markdown  # not recorded in the fake data


def test_small_ratios_keep_two_significant_digits():
    assert bench._ratio_text(1.55 / 202) == "0.0077×"
    assert bench._ratio_text(0.1) == "0.10×" and bench._ratio_text(1.126) == "1.13×" and bench._ratio_text(None) == "—"


def test_render_markdown_mentions_a_busy_machine():
    data = _fake_data()
    data["machine"].update(load_average_before=[0.1, 0.2, 0.3], load_average_after=[0.4, 0.2, 0.3])
    assert "noisier" not in bench.render_markdown(data)
    # the bench's own two threads raise the load "after" by about two: not other work
    data["machine"].update(threads=2, cores=2, load_average_after=[1.9, 1.5, 1.0])
    assert "noisier" not in bench.render_markdown(data)
    data["machine"]["load_average_after"] = [3.5, 2.0, 1.0]
    line = next(l for l in bench.render_markdown(data).splitlines() if "Load average" in l)
    assert "0.1, 0.2, 0.3 before, 3.5, 2.0, 1.0 after" in line and "noisier" in line


def test_render_markdown_full_parity_run_section():
    timing = {"cold_seconds": 5025.4, "warm_seconds": 61.0, "command": "make parity", "date": "2024-01-01", "source": "reports/parity_timing.json"}
    markdown = bench.render_markdown(_fake_data(timing))
    section = markdown.split("## Full parity run", 1)[1]
    assert "make parity" in section and "2024-01-01" in section
    assert "5025.4 s (1 h 23 min 45 s)" in section
    assert "61.0 s (1 min 01 s)" in section
    timing["warm_seconds"] = None
    assert "not measured" in bench.render_markdown(_fake_data(timing)).split("## Full parity run", 1)[1]


def test_render_json_round_trips():
    data = _fake_data()
    loaded = json.loads(bench.render_json(data))
    assert loaded["methods"]["gradcam"]["ratio"] == pytest.approx(2.0)
    assert loaded["machine"]["cpu"] == "Fake CPU 9000"
    assert loaded["settings"]["threads"] == 2


def test_write_outputs_writes_both_files(tmp_path):
    json_path, md_path = bench.write_outputs(_fake_data(), tmp_path / "out")
    assert json.loads(json_path.read_text())["methods"]["scorecam"]["torch_seconds"] == 240.0
    assert md_path.read_text().startswith("# Paddle vs PyTorch Grad-CAM timing")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bench.json", "bench.md"]


def test_load_parity_timing(tmp_path):
    good = tmp_path / "t.json"
    good.write_text(json.dumps({"cold_seconds": 10, "warm_seconds": None, "command": "make parity", "date": "d"}))
    timing = bench.load_parity_timing(good)
    assert timing["cold_seconds"] == 10.0 and timing["warm_seconds"] is None and timing["source"] == str(good)
    for text in ("not json", "[1, 2]", json.dumps({"cold_seconds": "soon"}), json.dumps({"warm_seconds": -1})):
        good.write_text(text)
        with pytest.raises(bench.TimingFileError):
            bench.load_parity_timing(good)


# -- arguments ----------------------------------------------------------------------------
def test_defaults():
    args = bench.build_parser().parse_args([])
    assert bench.resolve_methods(args.methods) == list(SEED_METHODS) and args.model == ["resnet50"] and args.batch == [1]
    assert (args.repeat, args.heavy_repeat) == (3, 1)
    assert args.threads == (os.cpu_count() or 1)
    assert args.size is None and args.dtype == "float32" and args.out == "reports" and args.parity_log is None


def test_unknown_method_exits_2_listing_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--methods", "gradcam,nosuchcam"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "nosuchcam" in err
    for name in METHODS:
        assert name in err


@pytest.mark.parametrize("argv", [["--repeat", "0"], ["--threads", "x"], ["--dtype", "float16"], ["--size", "-3"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2


def test_bad_parity_log_exits_2_before_running(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--methods", "gradcam", "--parity-log", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "missing.json" in capsys.readouterr().err
    assert not (tmp_path / "o" / "bench.json").exists()


def test_module_imports_neither_torch_nor_paddle():
    code = "import sys, parity.bench; print(sorted(m for m in ('torch', 'paddle') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- one real run -------------------------------------------------------------------------
def test_smoke_run_gradcam(tmp_path, weights_pair, reference_image):
    out = tmp_path / "tmp"
    timing = tmp_path / "timing.json"
    timing.write_text(json.dumps({"cold_seconds": 100.5, "warm_seconds": 20.0, "command": "make parity", "date": "2024-01-01"}))
    result = subprocess.run(
        [sys.executable, "-m", "parity.bench", "--methods", "gradcam", "--repeat", "1", "--out", str(out),
         "--parity-log", str(timing)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "bench.json").read_text())
    record = data["methods"]["gradcam"]
    assert list(data["methods"]) == ["gradcam"]
    assert record["paddle_seconds"] > 0 and record["torch_seconds"] > 0
    assert len(record["paddle_samples"]) == len(record["torch_samples"]) == 1
    assert record["ratio"] == pytest.approx(record["paddle_seconds"] / record["torch_seconds"])
    # The process wall time includes imports and model loading, so it exceeds the CAM call.
    assert record["paddle_wall_seconds"][0] > record["paddle_seconds"]
    assert record["torch_wall_seconds"][0] > record["torch_seconds"]
    # a ResNet50 worker holds at least its 100 MB of weights, and no machine here has a terabyte
    assert 100 < record["paddle_peak_rss_mb"] < 1e6 and 100 < record["torch_peak_rss_mb"] < 1e6
    assert data["settings"]["image_size"] == [224, 224] and data["settings"]["target_layer"] == "layer4"
    assert data["machine"]["cores"] == os.cpu_count() and data["settings"]["threads"] == os.cpu_count()
    markdown = (out / "bench.md").read_text()
    assert len(_table_rows(markdown)) == 1 and "| gradcam |" in markdown
    assert "## Full parity run" in markdown and "100.5 s (1 min 40 s)" in markdown
    assert "gradcam" in result.stdout and "paddle/torch" in result.stdout
    progress = [line for line in result.stderr.splitlines() if line.startswith("bench [")]
    assert [line.split()[3].rstrip(":") for line in progress] == ["paddle", "torch"]


# -- models and batches -------------------------------------------------------------------------
def test_rows_cover_every_model_batch_and_method_and_keep_the_seed_keys():
    rows = bench.bench_rows(["resnet50", "vgg16"], [1, 8], ["gradcam", "scorecam"])
    assert len(rows) == 8 and rows[0] == ("resnet50", 1, "gradcam") and rows[-1] == ("vgg16", 8, "scorecam")
    assert [bench.row_id(r) for r in rows[:3]] == ["gradcam", "scorecam", "resnet50 b8 gradcam"]
    args = bench.build_parser().parse_args(["--methods", "all", "--model", "resnet18,vgg16", "--batch", "1,8"])
    assert args.model == ["resnet18", "vgg16"] and args.batch == [1, 8]
    from parity.registry import resolve_methods

    assert resolve_methods(args.methods) == list(METHODS)
    assert bench.bench_setup("resnet50", 1, None).torch_layers == "layer4"  # as the seed bench
    assert bench.bench_setup("vgg16", 8, 64).layers() == ("features[-1]", "features[-1]")


def test_markdown_names_model_and_batch_when_there_are_several():
    data = _fake_data()
    data["settings"].update(models=["resnet18", "vgg16"], batches=[1, 8])
    for key, record in data["methods"].items():
        record.update(model="vgg16", batch=8, method=key)
    text = bench.render_markdown(data)
    assert "| model | batch | method | paddle s |" in text
    assert "| vgg16 | 8 | gradcam |" in text


def test_unknown_model_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--model", "resnet18,alexnet"])
    assert exit_info.value.code == 2
    assert "alexnet" in capsys.readouterr().err
