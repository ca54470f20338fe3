"""parity.bench: the schedule, re-measuring near 1.0×, set-up, throughput arithmetic, colours, merging, the
arguments (all from made-up worker results), and one tiny real run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parity import bench, bench_merge, bench_report
from parity.registry import METHODS, SEED_METHODS

REPO = Path(__file__).resolve().parent.parent
HEAVY = [name for name, spec in METHODS.items() if spec.reruns_network_per_channel]
LIGHT = [name for name, spec in METHODS.items() if not spec.reruns_network_per_channel]


def _cell(method="gradcam", model="resnet50", batch=1, threads=2, smooth="no_smooth"):
    return (model, batch, threads, smooth, method)


def _fake_runner(times, log=None, **extra):
    """A ``run(cell, framework)`` answering from ``times[method][framework]`` (a per-call time, or a list consumed
    in order), first call 1 s slower, and recording the order of the runs in ``log``."""
    def run(cell, framework):
        if log is not None:
            log.append((cell[4], framework))
        value = times[cell[4]][framework]
        if isinstance(value, list):
            value = value.pop(0)
        if value is None:
            return None, 3.0, "worker exited with status 1; boom | bad"
        return dict({"seconds": [value, value], "first_call_seconds": value + 1.0, "peak_rss_mb": 500.0}, **extra), 9.0, None
    return run


# -- schedule -----------------------------------------------------------------------------
def test_schedule_alternates_paddle_and_torch_within_each_cell():
    runs = bench.schedule([_cell("gradcam"), _cell("eigencam")], repeat=3, heavy_repeat=1)
    assert [framework for _, framework in runs] == ["paddle", "torch"] * 6
    assert [cell[4] for cell, _ in runs] == ["gradcam"] * 6 + ["eigencam"] * 6


def test_schedule_gives_heavy_methods_heavy_repeat_pairs():
    assert HEAVY == ["ablationcam", "scorecam"]
    cells = [_cell(name) for name in METHODS]
    runs = bench.schedule(cells, repeat=3, heavy_repeat=2)
    for name in METHODS:
        for framework in ("paddle", "torch"):
            assert sum(1 for cell, f in runs if cell[4] == name and f == framework) == (2 if name in HEAVY else 3)
    assert all(a[1] != b[1] for a, b in zip(runs, runs[1:]))


def test_cells_cover_models_batches_threads_and_smoothing_and_skip_modes_upstream_lacks():
    cells = bench.bench_cells(["resnet50", "vgg16"], [1, 8], [1, 2], ["no_smooth", "aug_smooth"], ["gradcam", "sess"])
    assert len(cells) == 2 * 2 * 2 * 3  # sess has no aug_smooth in upstream's API
    assert cells[0] == ("resnet50", 1, 1, "no_smooth", "gradcam") and cells[-1] == ("vgg16", 8, 2, "aug_smooth", "gradcam")
    assert ("resnet50", 1, 1, "aug_smooth", "sess") not in cells


def test_shards_split_the_cells_without_overlap():
    cells = bench.bench_cells(["resnet18"], [1, 8], [1, 2], ["no_smooth"], list(SEED_METHODS))
    parts = [bench.shard_cells(cells, (k, 3)) for k in (1, 2, 3)]
    assert sorted(c for part in parts for c in part) == sorted(cells)
    assert bench.shard_cells(cells, None) == cells


# -- measuring, with fake workers -------------------------------------------------------------
def test_measure_alternates_and_reports_per_call_median_spread_and_setup():
    order = []
    run = _fake_runner({"gradcam": {"paddle": [0.1, 0.3, 0.2], "torch": [0.4, 0.4, 0.4]}}, order)
    summary, ok = bench.measure_cells([_cell()], repeat=3, heavy_repeat=1, remeasure=4, run=run)
    record = summary[bench_report.cell_key(*_cell())]
    assert ok and order == [("gradcam", "paddle"), ("gradcam", "torch")] * 3
    assert record["paddle_seconds"] == pytest.approx(0.2) and record["torch_seconds"] == pytest.approx(0.4)
    assert (record["paddle_min"], record["paddle_max"]) == (0.1, 0.3)
    assert record["paddle_samples"] == [0.1, 0.1, 0.3, 0.3, 0.2, 0.2]  # two timed calls per process
    assert record["paddle_setup_seconds"] == pytest.approx(1.0)  # median first call 1.2 less median call 0.2
    assert record["ratio"] == pytest.approx(0.5) and record["remeasured_pairs"] == 0
    assert (record["model"], record["threads"], record["heavy"]) == ("resnet50", 2, False)


def test_a_cell_within_five_percent_of_parity_gets_more_pairs():
    order = []
    run = _fake_runner({"gradcam": {"paddle": 1.04, "torch": 1.0}, "eigencam": {"paddle": 1.06, "torch": 1.0}}, order)
    summary, _ = bench.measure_cells([_cell("gradcam"), _cell("eigencam")], 3, 1, 4, run)
    near, far = summary[bench_report.cell_key(*_cell("gradcam"))], summary[bench_report.cell_key(*_cell("eigencam"))]
    assert near["remeasured_pairs"] == 4 and len(near["paddle_samples"]) == 2 * (3 + 4)
    assert far["remeasured_pairs"] == 0 and len(far["paddle_samples"]) == 2 * 3
    assert order[:14] == [("gradcam", "paddle"), ("gradcam", "torch")] * 7  # the extra pairs alternate too
    assert "(near 1.0×: +4 pairs)" in bench_report.samples_text(near)
    # heavy cells cost minutes: at most one extra pair; and --remeasure 0 turns it off
    heavy, _ = bench.measure_cells([_cell("scorecam")], 3, 1, 4, _fake_runner({"scorecam": {"paddle": 0.97, "torch": 1.0}}))
    assert next(iter(heavy.values()))["remeasured_pairs"] == bench.HEAVY_REMEASURE_PAIRS == 1
    off, _ = bench.measure_cells([_cell()], 3, 1, 0, _fake_runner({"gradcam": {"paddle": 1.0, "torch": 1.0}}))
    assert next(iter(off.values()))["remeasured_pairs"] == 0


def test_a_failed_run_is_an_error_of_its_cell():
    run = _fake_runner({"gradcam": {"paddle": [None], "torch": [0.5]}})
    summary, ok = bench.measure_cells([_cell()], 1, 1, 4, run)
    record = next(iter(summary.values()))
    assert not ok and record["ratio"] is None and record["errors"] == ["paddle: worker exited with status 1; boom | bad"]


# -- throughput arithmetic ----------------------------------------------------------------
def test_forwards_come_from_the_cam_or_from_upstreams_count():
    record = {"batch": 2, "paddle_forward_count": 700, "torch_forward_count": None, "torch_channels": 512}
    assert bench_report.forwards_run(record, "paddle") == (700, "counted by the CAM")
    assert bench_report.forwards_run(record, "torch") == (2 + 2 * 512, "upstream's B + B·C")
    assert bench_report.forwards_run({"batch": 1}, "torch") == (None, "unknown")


def test_achieved_gflops_and_its_fractions_of_peak_and_network():
    assert bench_report.gflops_per_second(2049, 8.0e9, 100.0) == pytest.approx(163.92)
    network = bench_report.best_forward_throughput(
        {"seconds": {"paddle eager": {"1": 0.1, "16": 1.0}, "paddle predictor": {"1": 0.05, "16": 0.64}}}, 8.0e9)
    assert network["path"] == "paddle predictor" and network["batch"] == 16
    assert network["gflops_per_second"] == pytest.approx(200.0)  # 16 × 8 GFLOP in 0.64 s
    record = {"method": "scorecam", "batch": 1, "paddle_seconds": 100.0, "torch_seconds": 200.0, "paddle_forward_count": 2049,
              "torch_channels": 2048, "flops_per_forward": 8.0e9}
    paddle_line, torch_line = bench_report.throughput_lines(record, {"gflops_per_second": 400.0}, network)
    assert "2049 single-image forwards (counted by the CAM) × 8 GFLOP" in paddle_line
    assert "**163.9 GFLOP/s**" in paddle_line and "41% of the measured peak (400 GFLOP/s)" in paddle_line
    assert "82% of the network's best forward (200.0 GFLOP/s, paddle predictor at batch 16)" in paddle_line
    assert "**82.0 GFLOP/s**" in torch_line and "upstream's B + B·C" in torch_line


# -- rendering ----------------------------------------------------------------------------
def _fake_data(parity_run=None):
    times = {"gradcam": {"paddle": 0.2, "torch": 0.1}, "scorecam": {"paddle": 120.0, "torch": 240.0},
             "eigencam": {"paddle": [None], "torch": [0.5]}}
    cells = [_cell("gradcam"), _cell("scorecam"), _cell("eigencam")]
    summary, _ = bench.measure_cells(cells, 1, 1, 0, _fake_runner(times, channels=2048, flops_per_forward=8e9))
    summary[bench_report.cell_key(*_cell("scorecam"))]["paddle_peak_rss_mb"] = 3100.0
    return {
        "machine": {"cpu": "Fake CPU 9000", "cores": 2, "platform": "Linux-test", "threads": [1, 2], "date": "2024-01-02T03:04:05+00:00",
                    "versions": {"python": "3.11.0", "paddlepaddle": "2.6.1", "torch": "2.3.0", "torchvision": "0.18.0", "grad-cam": "1.5.7", "numpy": "1.26.4"}},
        "settings": {"threads": [1, 2], "repeat": 1, "heavy_repeat": 1, "calls": 2, "remeasure_pairs": 4, "image": "fixtures/both.png",
                     "image_size": [224, 224], "dtype": "float32", "device": "cpu", "target_layer": "layer4",
                     "command": "python -m parity.bench --repeat 1"},
        "cells": summary,
        "peak": {"2": {"gflops_per_second": 400.0, "matmul_size": 4096}},
        "network_throughput": {"resnet50 t2": {"best": {"path": "paddle predictor", "batch": 16, "seconds": 0.64, "gflops_per_second": 200.0}}},
        "parity_run": parity_run,
    }


def _rows(markdown: str, heading: str):
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| method")]


def test_markdown_has_a_table_per_model_batch_threads_and_smoothing_with_setup_and_colours():
    markdown = bench_report.render_markdown(_fake_data())
    rows = _rows(markdown, "## resnet50 · batch 1 · 2 threads · no smoothing")
    assert [row[0] for row in rows] == ["gradcam", "scorecam", "eigencam"]
    assert rows[0] == ["gradcam", "0.200 (0.200–0.200)", "0.100 (0.100–0.100)", "🔴 2.00×", "1.00", "1.00", "500", "500", "2 each"]
    assert rows[1][:4] == ["scorecam", "120 (120–120)", "240 (240–240)", "🟢 0.50×"] and rows[1][6] == "3100 ⚠️"  # Paddle above torch
    assert rows[2][:4] == ["eigencam", "—", "0.500 (0.500–0.500)", "—"] and "(1 failed)" in rows[2][8]
    assert "| method | paddle s/call | torch s/call | paddle/torch | paddle set-up s | torch set-up s |" in markdown
    assert "- scorecam (paddle): 2049 single-image forwards (upstream's B + B·C) × 8 GFLOP" in markdown
    assert "68% of the network's best forward" in markdown and "## Measured peak" in markdown
    assert "## Failed runs" in markdown and "boom \\| bad" in markdown and "Full parity run" not in markdown
    assert "Fake CPU 9000 (2 cores)" in markdown and "Load average" not in markdown


def test_spread_is_shown_when_there_are_several_samples():
    record = {"paddle_seconds": 0.2, "paddle_min": 0.1, "paddle_max": 0.35, "paddle_samples": [0.1, 0.2, 0.35]}
    assert bench_report._spread(record, "paddle") == "0.200 (0.100–0.350)"


def test_ratio_colours_and_small_ratios_keep_two_significant_digits():
    assert bench_report.ratio_text(1.55 / 202) == "🟢 0.0077×"
    assert bench_report.ratio_text(1.0) == "🟢 1.00×" and bench_report.ratio_text(1.004) == "🔴 1.00×"
    assert bench_report.ratio_text(None) == "—"
    assert bench_report.near_parity(0.95) and bench_report.near_parity(1.05) and not bench_report.near_parity(1.051)


def test_markdown_warns_of_a_busy_machine():
    data = _fake_data()
    data["machine"].update(load_average_before=[0.1, 0.2, 0.3], load_average_after=[1.9, 1.5, 1.0])
    assert "noisier" not in bench_report.render_markdown(data)  # the bench's own two threads
    data["machine"]["load_average_after"] = [3.5, 2.0, 1.0]
    line = next(l for l in bench_report.render_markdown(data).splitlines() if "Load average" in l)
    assert "0.1, 0.2, 0.3 before, 3.5, 2.0, 1.0 after" in line and "⚠️" in line and "noisier" in line


def test_full_parity_run_section():
    timing = {"cold_seconds": 5025.4, "warm_seconds": None, "command": "make parity", "date": "2024-01-01", "source": "reports/parity_timing.json"}
    section = bench_report.render_markdown(_fake_data(timing)).split("## Full parity run", 1)[1]
    assert "5025.4 s (1 h 23 min 45 s)" in section and "not measured" in section


def test_merge_joins_cells_peaks_and_networks(tmp_path):
    first, second = _fake_data(), _fake_data()
    second["cells"] = {"vgg16 b8 t1 no_smooth gradcam": dict(next(iter(first["cells"].values())), model="vgg16", batch=8, threads=1)}
    second["machine"]["load_average_after"] = [9.0, 9.0, 9.0]
    second["peak"] = {"1": {"gflops_per_second": 200.0, "matmul_size": 4096}}
    paths = []
    for index, part in enumerate((first, second)):
        paths.append(tmp_path / f"part{index}.json")
        paths[-1].write_text(bench_report.render_json(part))
    assert bench.main(["merge", *map(str, paths), "--out", str(tmp_path / "o"), "--name", "bench_zoo"]) == 0
    merged = json.loads((tmp_path / "o" / "bench_zoo.json").read_text())
    assert len(merged["cells"]) == 4 and set(merged["peak"]) == {"1", "2"}
    assert merged["machine"]["load_average_after"] == [9.0, 9.0, 9.0]
    text = (tmp_path / "o" / "bench_zoo.md").read_text()
    assert "## vgg16 · batch 8 · 1 thread · no smoothing" in text
    assert merged["settings"]["merged_commands"] == [first["settings"]["command"], second["settings"]["command"]]
    assert f"- Part 1 ({first['machine']['date']}): `{first['settings']['command']}`" in text and "- Part 2 (" in text
    assert "each part's own are in its command above" in text


def test_a_merge_of_parts_at_different_commits_names_each_parts_commit_and_each_rows_part():
    first, second = _fake_data(), _fake_data()
    first["machine"]["project"] = {"commit": "a" * 40, "dirty": False}
    second["machine"].update(project={"commit": "b" * 40, "dirty": False}, date="2024-02-03T00:00:00+00:00")
    second["settings"]["command"] = "python -m parity.bench --methods gradcam"
    remeasured = bench_report.cell_key(*_cell("gradcam"))
    second["cells"] = {remeasured: dict(first["cells"][remeasured], paddle_seconds=0.05, ratio=0.5)}
    merged = bench.merge_data([first, second], "python -m parity.bench merge a.json b.json")
    assert merged["cells"][remeasured]["part"] == 2 and merged["cells"][remeasured]["ratio"] == 0.5
    assert {cell["part"] for key, cell in merged["cells"].items() if key != remeasured} == {1}
    text = bench_report.render_markdown(merged)
    assert "- Project: the 2 parts were measured at different commits" in text
    assert f"- Part 1 (commit `{'a' * 12}` (clean tree), 2024-01-02T03:04:05+00:00): `python -m parity.bench --repeat 1`" in text
    assert f"- Part 2 (commit `{'b' * 12}` (clean tree), 2024-02-03T00:00:00+00:00): `{second['settings']['command']}`" in text
    rows = {row[0]: row for row in _rows(text, "## resnet50 · batch 1 · 2 threads · no smoothing")}
    assert rows["gradcam"][3] == "🟢 0.50×" and rows["gradcam"][8].endswith("· part 2")
    assert rows["scorecam"][8].endswith("· part 1")

    same = bench.merge_data([first, dict(second, machine=dict(second["machine"], project=first["machine"]["project"]))], "m")
    assert f"- Project: commit `{'a' * 12}` (clean tree)" in bench_report.render_markdown(same)


def test_the_summary_names_each_table_s_ratios_the_slower_cells_and_the_heavier_peaks():
    """Before the tables, one row per table: a slower cell, a failed one and a peak above torch's are named there."""
    data = _fake_data()
    text = bench_report.render_markdown(data)
    assert text.index("## Summary") < text.index("## resnet50 · batch 1")
    assert ("3 cells: 1 slower than upstream, 1 without a ratio (a side failed); Paddle's peak memory above torch's "
            "in 1.") in text
    (row,) = _rows(text, "## Summary")[1:]
    assert row == ["resnet50 · batch 1 · 2 threads · no smoothing", "3", "🔴 2.00×", "scorecam 🟢 0.50×", "gradcam",
                   "scorecam"]
    gradcam = data["cells"][bench_report.cell_key(*_cell("gradcam"))]
    gradcam["paddle_seconds"], gradcam["ratio"] = 0.05, 0.5
    data["cells"][bench_report.cell_key(*_cell("eigencam"))].update(ratio=0.0625)
    data["cells"][bench_report.cell_key(*_cell("scorecam"))]["paddle_peak_rss_mb"] = 100.0
    text = bench_report.render_markdown(data)
    assert "3 cells: every one at or below upstream's time; Paddle's peak memory below torch's in every one." in text
    (row,) = _rows(text, "## Summary")[1:]
    assert row[2:] == ["🟢 0.062×–0.50×", "scorecam 🟢 0.50×", "none", "none"]


def test_render_writes_a_report_s_markdown_again_from_its_json_alone(tmp_path, capsys):
    data = _fake_data()
    good, bad = tmp_path / "bench_x.json", tmp_path / "bench_y.json"
    good.write_text(bench_report.render_json(data))
    assert bench.main(["render", str(good)]) == 0
    assert (tmp_path / "bench_x.md").read_text() == bench_report.render_markdown(data)
    (tmp_path / "bench_x.md").unlink()
    bad.write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["render", str(good), str(bad)])
    assert exit_info.value.code == 2 and "cannot render" in capsys.readouterr().err
    assert not (tmp_path / "bench_x.md").exists() and not (tmp_path / "bench_y.md").exists()


def test_a_merged_report_merged_again_keeps_its_parts_and_their_commits():
    """A committed report grows by a new part without its older parts' JSON: each row still names its commit."""
    first, second, third = _fake_data(), _fake_data(), _fake_data()
    for part, letter, command in ((first, "a", "python -m parity.bench --repeat 1"),
                                  (second, "b", "python -m parity.bench --methods gradcam"),
                                  (third, "c", "python -m parity.bench --methods scorecam")):
        part["machine"].update(project={"commit": letter * 40, "dirty": False}, date=f"2024-0{ord(letter) - 96}-01")
        part["settings"]["command"] = command
    gradcam, scorecam = bench_report.cell_key(*_cell("gradcam")), bench_report.cell_key(*_cell("scorecam"))
    second["cells"] = {gradcam: dict(first["cells"][gradcam], ratio=0.5)}
    third["cells"] = {scorecam: dict(first["cells"][scorecam], ratio=0.25)}
    committed = json.loads(bench_report.render_json(bench.merge_data([first, second], "merge a b")))
    grown = bench.merge_data([committed, third], "merge committed c")
    assert grown["settings"]["merged_commands"] == [part["settings"]["command"] for part in (first, second, third)]
    assert [project["commit"][0] for project in grown["settings"]["merged_projects"]] == ["a", "b", "c"]
    assert grown["settings"]["merged_dates"] == ["2024-01-01", "2024-02-01", "2024-03-01"]
    parts = {key: cell["part"] for key, cell in grown["cells"].items()}
    assert parts[gradcam] == 2 and parts[scorecam] == 3
    assert {number for key, number in parts.items() if key not in (gradcam, scorecam)} == {1}
    text = bench_report.render_markdown(grown)
    assert "- Project: the 3 parts were measured at different commits" in text
    assert f"- Part 2 (commit `{'b' * 12}` (clean tree), 2024-02-01): `{second['settings']['command']}`" in text

    committed["settings"]["merged_dates"] = committed["settings"]["merged_dates"][:1]
    with pytest.raises(ValueError, match="do not match up"):
        bench.merge_data([committed, third], "m")


def _three_part_report():
    """A committed report of three parts; the second measured only what the third measured again."""
    first, second, third = _fake_data(), _fake_data(), _fake_data()
    gradcam, scorecam = bench_report.cell_key(*_cell("gradcam")), bench_report.cell_key(*_cell("scorecam"))
    commands = ("python -m parity.bench --repeat 1 --out build/bench/s1 --name light",
                "python -m parity.bench --methods gradcam --out=build/bench/s2 --name=again",
                "python -m parity.bench --methods gradcam --calls 3 --out build/bench/s3 --name 'third part'")
    for part, command in zip((first, second, third), commands):
        part["settings"]["command"] = command
    second["cells"] = {gradcam: dict(first["cells"][gradcam], ratio=0.5)}
    third["cells"] = {gradcam: dict(first["cells"][gradcam], ratio=0.25)}
    return json.loads(bench_report.render_json(bench.merge_data([first, second, third], "merge"))), gradcam, scorecam


def test_a_rerun_plan_runs_each_part_again_less_its_outputs_and_skips_a_part_with_nothing_left():
    report, _, _ = _three_part_report()
    plan = bench_merge.rerun_plan(report)
    assert [step.part for step in plan] == [1, 2, 3]
    assert plan[0].arguments == ["--repeat", "1"] and plan[0].cells_shown == 2  # scorecam, eigencam
    assert plan[1].arguments is None and plan[1].cells_shown == 0  # the third part measured its one cell again
    assert plan[2].arguments == ["--methods", "gradcam", "--calls", "3"] and plan[2].cells_shown == 1
    assert plan[0].seconds_shown == pytest.approx(2 * 9.0 + 9.0 + 3.0)  # the workers' wall times of its two cells
    report["settings"]["merged_commands"][0] = "python -m parity.bench merge a.json b.json"
    with pytest.raises(ValueError, match="part 1's command is not a bench run"):
        bench_merge.rerun_plan(report)


def test_rerun_measures_each_part_again_and_replaces_the_report_with_their_merge(tmp_path, capsys):
    report, gradcam, _ = _three_part_report()
    path = tmp_path / "reports" / "bench_x.json"
    path.parent.mkdir()
    path.write_text(json.dumps(report))
    calls = []

    def run_part(arguments):
        calls.append(arguments)
        out, name = arguments[arguments.index("--out") + 1], arguments[arguments.index("--name") + 1]
        part = _fake_data()
        part["settings"]["command"] = "python -m parity.bench " + " ".join(arguments)
        part["machine"]["project"] = {"commit": "f" * 40, "dirty": False}
        if "gradcam" in arguments:
            part["cells"] = {gradcam: dict(part["cells"][gradcam], ratio=0.125)}
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(bench_report.render_json(part))
        return 0

    argv = [str(path), "--work", str(tmp_path / "work")]
    assert bench._rerun_main(argv + ["--dry-run"], run_part) == 0 and calls == []
    assert "bench_x part 2: skipped" in capsys.readouterr().err
    assert bench._rerun_main(argv, run_part) == 0
    assert [call[-2:] for call in calls] == [["--name", "part1"], ["--name", "part3"]]
    assert calls[1][:4] == ["--methods", "gradcam", "--calls", "3"]
    again = json.loads(path.read_text())
    assert [project["commit"] for project in again["settings"]["merged_projects"]] == ["f" * 40] * 2
    assert again["cells"][gradcam]["ratio"] == 0.125 and again["cells"][gradcam]["part"] == 2
    assert again["settings"]["command"].startswith("python -m parity.bench rerun ")
    assert (tmp_path / "reports" / "bench_x.md").exists()


def _write_a_fake_part(arguments, ratio=0.125):
    """What ``run_part`` would leave: a part at commit f..f measuring every fake cell, at ``ratio``."""
    out, name = arguments[arguments.index("--out") + 1], arguments[arguments.index("--name") + 1]
    part = _fake_data()
    part["settings"]["command"] = "python -m parity.bench " + " ".join(arguments)
    part["machine"]["project"] = {"commit": "f" * 40, "dirty": False}
    for cell in part["cells"].values():
        cell["ratio"] = ratio
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"{name}.json").write_text(bench_report.render_json(part))


def test_a_rerun_of_some_parts_keeps_the_others_and_drops_the_parts_it_no_longer_shows(tmp_path, capsys):
    """Part 1 measured again: its cells come from the new run, except the one part 3 measured again after it, which
    keeps part 3's measurement; the old part 1 (every cell replaced) and part 2 (nothing shown) leave the header."""
    report, gradcam, scorecam = _three_part_report()
    old_commit = report["settings"]["merged_projects"][2]
    path = tmp_path / "bench_x.json"
    path.write_text(json.dumps(report))
    calls = []

    def run_part(arguments):
        calls.append(arguments)
        _write_a_fake_part(arguments)
        return 0

    argv = [str(path), "--work", str(tmp_path / "work"), "--parts", "1"]
    assert bench._rerun_main(argv + ["--dry-run"], run_part) == 0 and calls == []
    planned = capsys.readouterr().err
    assert "bench_x part 1: 2 cell(s)" in planned and "part 2" not in planned and "part 3" not in planned
    assert bench._rerun_main(argv, run_part) == 0
    assert calls == [["--repeat", "1", "--out", str(tmp_path / "work" / "bench_x"), "--name", "part1"]]
    again = json.loads(path.read_text())
    assert again["settings"]["merged_commands"] == [report["settings"]["merged_commands"][2],
                                                    "python -m parity.bench " + " ".join(calls[0])]
    assert again["settings"]["merged_projects"] == [old_commit, {"commit": "f" * 40, "dirty": False}]
    assert (again["cells"][gradcam]["ratio"], again["cells"][gradcam]["part"]) == (0.25, 1)
    assert (again["cells"][scorecam]["ratio"], again["cells"][scorecam]["part"]) == (0.125, 2)
    assert sorted(cell["part"] for cell in again["cells"].values()) == [1, 2, 2]
    assert "- Part 3" not in (tmp_path / "bench_x.md").read_text()


@pytest.mark.parametrize("parts, two_reports, message", [
    ("2", False, "has no part 2 whose cells it still shows; its parts: 1, 3"),
    ("1,x", False, "--parts takes part numbers"),
    ("1", True, "--parts measures parts of one report"),
])
def test_a_rerun_of_parts_it_cannot_measure_exits_2(tmp_path, capsys, parts, two_reports, message):
    report, _, _ = _three_part_report()
    path = tmp_path / "bench_x.json"
    path.write_text(json.dumps(report))
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["rerun", str(path)] + [str(path)] * two_reports + ["--parts", parts, "--dry-run"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_rerun_whose_part_breaks_leaves_the_report_as_it_was(tmp_path):
    report, _, _ = _three_part_report()
    path = tmp_path / "bench_x.json"
    path.write_text(json.dumps(report))
    before = path.read_text()
    assert bench._rerun_main([str(path), "--work", str(tmp_path / "work")], lambda arguments: 2) == 2
    assert path.read_text() == before and not (tmp_path / "bench_x.md").exists()


def test_rerun_of_an_unreadable_report_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["rerun", str(tmp_path / "missing.json")])
    assert exit_info.value.code == 2 and "cannot plan" in capsys.readouterr().err


def test_set_up_counts_a_second_call_timed_apart():
    """A gradient method builds its predictor on its second call for a shape: set-up is both calls' excess."""
    run = _fake_runner({"gradcam": {"paddle": 0.2, "torch": 0.1}}, second_call_seconds=3.2)
    summary, ok = bench.measure_cells([_cell("gradcam")], 1, 1, 0, run)
    record = summary[bench_report.cell_key(*_cell("gradcam"))]
    assert ok and record["paddle_setup_seconds"] == pytest.approx(1.2 + 3.2 - 2 * 0.2)
    assert record["paddle_seconds"] == 0.2, "the second call is not a sample"
    text = bench_report.render_markdown(dict(_fake_data(), cells=summary))
    assert "and for the light methods the second too" in text and "less as many median later calls" in text
    assert "and for the light methods the second too" not in bench_report.render_markdown(_fake_data())
    assert bench_report._setup([1.2], 0.2) == pytest.approx(1.0)  # JSON from before the second call was timed


def test_load_parity_timing(tmp_path):
    good = tmp_path / "t.json"
    good.write_text(json.dumps({"cold_seconds": 10, "warm_seconds": None, "command": "make parity", "date": "d"}))
    timing = bench.load_parity_timing(good)
    assert timing["cold_seconds"] == 10.0 and timing["warm_seconds"] is None and timing["source"] == str(good.resolve())
    for text in ("not json", "[1, 2]", json.dumps({"cold_seconds": "soon"}), json.dumps({"warm_seconds": -1})):
        good.write_text(text)
        with pytest.raises(bench.TimingFileError):
            bench.load_parity_timing(good)


# -- arguments ----------------------------------------------------------------------------
def test_defaults():
    args = bench.build_parser().parse_args([])
    assert bench.resolve_methods(args.methods) == list(SEED_METHODS) and args.model == ["resnet50"] and args.batch == [1]
    assert (args.repeat, args.heavy_repeat, args.calls, args.remeasure) == (3, 1, 1, 4)
    assert args.threads == list(dict.fromkeys([1, os.cpu_count() or 1])) and args.smooth == ["no_smooth"]
    assert args.size is None and args.dtype == "float32" and args.out == "reports" and args.parity_log is None


def test_lists_of_threads_smoothing_and_hub_pairs_are_accepted():
    from parity.model_zoo import hub_pair_names

    hub = hub_pair_names()[0]
    args = bench.build_parser().parse_args(["--threads", "1,2,2", "--smooth", "none,aug,eigen", "--model", f"resnet18,{hub}"])
    assert args.threads == [1, 2] and args.smooth == ["no_smooth", "aug_smooth", "eigen_smooth"]
    assert args.model == ["resnet18", hub]


@pytest.mark.parametrize("argv, word", [
    (["--methods", "gradcam,nosuchcam"], "nosuchcam"), (["--model", "resnet18,alexnet"], "alexnet"),
    (["--repeat", "0"], "--repeat"), (["--threads", "1,x"], "--threads"), (["--smooth", "blur"], "blur"),
    (["--dtype", "float16"], "float16"), (["--size", "-3"], "--size"), (["--shard", "4/3"], "4/3"),
    (["--remeasure", "-1"], "--remeasure"),
])
def test_bad_input_is_one_line_and_exit_2(argv, word, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert word in err[-1] and err[-1].startswith("python -m parity.bench: error:")


def test_bad_parity_log_exits_2_before_running(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--methods", "gradcam", "--parity-log", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "missing.json" in capsys.readouterr().err
    assert not (tmp_path / "o" / "bench.json").exists()


def test_merging_something_else_exits_2(tmp_path, capsys):
    other = tmp_path / "x.json"
    other.write_text(json.dumps({"machine": {}, "settings": {}, "methods": {}}))
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["merge", str(other), "--out", str(tmp_path), "--name", "m"])
    assert exit_info.value.code == 2 and "rerun" in capsys.readouterr().err


def test_module_imports_neither_torch_nor_paddle():
    code = "import sys, parity.bench; print(sorted(m for m in ('torch', 'paddle') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_timing_worker_attaches_no_recorder():
    """The stopwatch path must be the user's call: no stage recorder, no hooks of the parity harness."""
    source = (REPO / "parity" / "bench_worker.py").read_text()
    code = source.split('"""', 2)[2]  # the docstring names the recorder to say it is absent
    assert "attach_recorder" not in code and "StageRecorder" not in code


# -- one tiny real run --------------------------------------------------------------------------
def test_smoke_run_gradcam(tmp_path, weights_pair, reference_image):
    out = tmp_path / "tmp"
    result = subprocess.run(
        [sys.executable, "-m", "parity.bench", "--methods", "gradcam", "--repeat", "1", "--calls", "2", "--threads", "1",
         "--size", "32", "--remeasure", "0", "--out", str(out), "--parity-log", str(REPO / "reports" / "parity_timing.json")],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "bench.json").read_text())
    record = data["cells"]["resnet50 b1 t1 no_smooth gradcam"]
    assert record["paddle_seconds"] > 0 and record["torch_seconds"] > 0
    assert len(record["paddle_samples"]) == len(record["torch_samples"]) == 2
    assert len(record["paddle_first_call_seconds"]) == 1 and record["paddle_setup_seconds"] is not None
    assert record["ratio"] == pytest.approx(record["paddle_seconds"] / record["torch_seconds"])
    assert record["paddle_wall_seconds"][0] > record["paddle_seconds"]
    assert 100 < record["paddle_peak_rss_mb"] < 1e6 and 100 < record["torch_peak_rss_mb"] < 1e6
    assert data["settings"]["image_size"] == [32, 32] and data["settings"]["threads"] == [1]
    assert data["parity_run"]["source"] == "reports/parity_timing.json"  # relative, not this machine's path
    markdown = (out / "bench.md").read_text()
    assert "## resnet50 · batch 1 · 1 thread · no smoothing" in markdown and "| gradcam |" in markdown
    progress = [line for line in result.stderr.splitlines() if line.startswith("bench [")]
    assert [line.split()[7].rstrip(":") for line in progress] == ["paddle", "torch"]


def test_one_call_heavy_cells_have_no_setup_and_small_negative_setup_reads_as_none():
    def run(cell, framework):
        return {"seconds": [5.0], "first_call_seconds": None}, 9.0, None  # a worker with calls=0
    summary, ok = bench.measure_cells([_cell("scorecam")], 1, 1, 0, run)
    record = next(iter(summary.values()))
    assert ok and record["paddle_seconds"] == 5.0 and record["paddle_setup_seconds"] is None
    assert bench_report.setup_text(None) == "—" and bench_report.setup_text(-0.0004) == "≈0"
    assert bench_report.setup_text(6.39) == "6.39"
    args = bench.build_parser().parse_args(["--heavy-calls", "0"])
    assert args.heavy_calls == 0


def test_scorecams_target_line_names_the_rate_it_needs_and_whether_the_machine_has_it():
    record = {"method": "scorecam", "batch": 1, "paddle_seconds": 122.0, "torch_seconds": 200.0, "ratio": 0.61,
              "paddle_forward_count": 1964, "flops_per_forward": 8.18e9}
    network = {"gflops_per_second": 152.4, "path": "paddle predictor", "batch": 1}
    line = bench_report.target_rate_line(record, {"gflops_per_second": 177.3}, network)
    # 0.4 × 200 s = 80 s for 1964 × 8.18 GFLOP: 200.8 GFLOP/s, above both the matmul and the network's best
    assert "1964 forwards (counted by the CAM) in 80 s would need **200.8 GFLOP/s**" in line
    assert "113% of the measured peak (177.3 GFLOP/s), 132% of the network's best forward (152.4 GFLOP/s)" in line
    assert "out of reach on this machine with these forwards (more than the network's best forward)" in line
    assert "it ran at 0.61× (131.7 GFLOP/s, 86% of the network's best forward)" in line
    within = dict(record, paddle_seconds=200.0, torch_seconds=400.0, ratio=0.5)  # 160 s: 100.4 GFLOP/s would do
    assert "within this machine's rates, not met" in bench_report.target_rate_line(within, {"gflops_per_second": 177.3}, network)
    met = dict(record, paddle_seconds=70.0, ratio=0.35)
    assert "; met: it ran at 0.35×" in bench_report.target_rate_line(met, {"gflops_per_second": 177.3}, network)
    # the limit is the network's best forward where measured, even above the matmul peak (resnet34: 215 against 175)
    fast_network = dict(network, gflops_per_second=215.0)
    assert "within this machine's rates, not met" in bench_report.target_rate_line(record, {"gflops_per_second": 177.3}, fast_network)
    assert "out of reach" in bench_report.target_rate_line(record, {"gflops_per_second": 177.3}, None)
    assert bench_report.target_rate_line(dict(record, method="ablationcam"), None, None) is None
    assert bench_report.target_rate_line(dict(record, flops_per_forward=None), None, None) is None


def test_a_rate_above_the_peak_from_upstreams_count_is_called_out():
    record = {"method": "ablationcam", "batch": 1, "paddle_seconds": 0.2, "torch_seconds": 1.5, "torch_channels": 512,
              "flops_per_forward": 7.5e7}
    paddle_line, torch_line = bench_report.throughput_lines(record, {"gflops_per_second": 25.0}, None)
    assert "above the machine's peak" in paddle_line  # 513 × 0.075 GFLOP in 0.2 s = 192 GFLOP/s
    record["paddle_forward_count"] = 513  # counted: then only the peak measurement can be wrong
    assert "other work on the machine slowed the matmul" in bench_report.throughput_lines(record, {"gflops_per_second": 25.0}, None)[0]
    fast_network = {"gflops_per_second": 30.0, "path": "paddle predictor", "batch": 16}
    line = bench_report.throughput_lines(record, {"gflops_per_second": 25.0}, fast_network)[0]
    assert "as the network's plain forward is too (30.0 GFLOP/s)" in line and "other work" not in line
    record["torch_seconds"] = 2.0  # 19 GFLOP/s, under the peak
    assert "above the machine's peak" not in bench_report.throughput_lines(record, {"gflops_per_second": 25.0}, None)[1]


def test_a_hub_pair_without_size_runs_at_its_own_input_size():
    from parity.model_zoo import HUB_PAIRS

    transformer = next(name for name, spec in HUB_PAIRS.items() if spec.torch_reshape)
    assert bench.model_size(transformer, None) == HUB_PAIRS[transformer].input_size[0]
    assert bench.model_size(transformer, 64) == 64 and bench.model_size("resnet18", None) is None


def test_sigterm_ends_the_bench_like_ctrl_c(monkeypatch, tmp_path, capsys):
    import signal

    def terminated(args, argv):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")
    monkeypatch.setattr(bench, "run_bench", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert bench.main(["--methods", "gradcam", "--out", str(tmp_path)]) == 130
    assert "interrupted; nothing written" in capsys.readouterr().err and not list(tmp_path.iterdir())
    assert signal.getsignal(signal.SIGTERM) == before


def test_worker_results_are_read_with_their_times_checked():
    job = bench.BenchJob(kind="cam", framework="paddle", threads=1, out_dir="x", calls=0)
    one_call = bench.read_result(job, json.dumps({"seconds": [5.0], "first_call_seconds": None, "forward_count": 7}))
    assert one_call["seconds"] == [5.0] and one_call["first_call_seconds"] is None and one_call["forward_count"] == 7
    job.calls = 2
    assert bench.read_result(job, json.dumps({"seconds": [1, 2], "first_call_seconds": 3}))["first_call_seconds"] == 3.0
    for bad in ({"seconds": [1.0], "first_call_seconds": None}, {"seconds": [], "first_call_seconds": 1.0}, {"first_call_seconds": 1.0}):
        with pytest.raises((ValueError, KeyError)):
            bench.read_result(job, json.dumps(bad))


def test_cells_above_parity_get_the_measured_forward_as_their_reason():
    records = [{"method": "gradcam", "ratio": 0.7}, {"method": "fullgrad", "ratio": 1.4}]
    network = {"paddle": {"seconds": {"paddle eager": {"1": 0.26, "16": 3.0}, "paddle predictor": {"1": 0.09}},
                          "timed_calls": 5},
               "torch": {"seconds": {"torch eager": {"1": 0.13, "16": 1.6}}, "timed_calls": 5}}
    line = bench_report.slower_reason_lines(records, network, batch=8)[1]
    assert line.startswith("Above 1.0×: fullgrad.") and "gradcam" not in line
    assert "batch 1" in line and "0.26 s, torch 0.13 s (2.00×)" in line and "predictor 0.09 s (0.69×)" in line
    assert "the fastest of 5 calls after one untimed" in line
    assert "does not explain" not in line  # fullgrad runs the dynamic graph to the input: the forward is its reason
    records.append({"method": "eigencam", "ratio": 1.6})
    line = bench_report.slower_reason_lines(records, network, batch=8)[1]
    assert "So the forward does not explain eigencam (forward-only on the predictor)" in line
    records.append({"method": "shapleycam", "ratio": 1.2})
    line = bench_report.slower_reason_lines(records, network, batch=8)[1]
    assert ("So the forward does not explain eigencam, shapleycam (forward-only and the part before the target layer "
            "on the predictor)") in line
    slow_predictor = json.loads(json.dumps(network))
    slow_predictor["paddle"]["seconds"]["paddle predictor"]["1"] = 0.2
    assert "does not explain" not in bench_report.slower_reason_lines(records, slow_predictor, batch=8)[1]
    del network["torch"]["timed_calls"]  # a file from before the count was recorded must not claim one
    assert "not counted in this file" in bench_report.slower_reason_lines(records, network, batch=8)[1]
    assert bench_report.slower_reason_lines(records[:1], network, batch=1) == []
    assert "not measured" in bench_report.slower_reason_lines(records, None, batch=1)[1]


def test_the_forward_throughput_records_how_many_calls_its_fastest_is_taken_from(monkeypatch):
    import torch

    from parity import bench_worker

    calls = []

    class CountingConv(torch.nn.Conv2d):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    side = type("Side", (), {"model": CountingConv(3, 4, 3)})()
    monkeypatch.setattr(bench_worker, "_side", lambda job: (None, side))
    monkeypatch.setattr(bench_worker, "_input", lambda job, side, b: torch.zeros(b, 3, 8, 8))
    monkeypatch.setattr(bench_worker, "torch_flops_per_forward", lambda model, example: 1)
    job = bench.BenchJob(kind="throughput", framework="torch", threads=1, out_dir="x", throughput_batches=[1, 2])
    record = bench_worker._run_throughput(job)
    assert record["timed_calls"] == bench_worker.THROUGHPUT_CALLS
    assert calls == [1] * (1 + record["timed_calls"]) + [2] * (1 + record["timed_calls"])
    assert set(record["seconds"]["torch eager"]) == {"1", "2"}


def test_a_model_whose_twins_are_different_networks_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.build_parser().parse_args(["--model", "resnet18,squeezenet1_1"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "squeezenet1_1: the Paddle model is another network" in error and "pads its first conv" in error
    assert "Traceback" not in error


def test_the_makefile_grid_names_only_models_the_bench_can_time():
    """`make bench-parts` must not stop at a model the bench refuses (squeezenet1_1 once stopped the zoo part)."""
    import re

    text = (Path(bench.__file__).resolve().parent.parent / "Makefile").read_text()
    lists = dict(re.findall(r"^(ZOO|SMALL_ZOO|HUB_BENCH) := (\S+)$", text, flags=re.M))
    assert set(lists) == {"ZOO", "SMALL_ZOO", "HUB_BENCH"}
    for name, models in lists.items():
        assert bench.build_parser().parse_args(["--model", models]).model == models.split(","), name


def test_a_failed_run_is_listed_by_the_exception_its_traceback_ends_in():
    data = _fake_data()
    record = next(iter(data["cells"].values()))
    record["errors"] = ["Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nMemoryError: out of memory"]
    markdown = bench_report.render_markdown(data)
    failed = markdown.split("## Failed runs", 1)[1]
    assert "MemoryError: out of memory" in failed and "(most recent call last): MemoryError" in failed
