"""True provenance: the commit and tree state of every report, and no machine's directories in what is committed."""
import sys
from pathlib import Path

from parity import provenance
from parity.provenance import portable, portable_command, project_state
from parity.report_markdown import render_markdown

REPO = Path(__file__).resolve().parent.parent


def test_commands_lose_this_machines_directories():
    command = (f"python -m parity merge /work/shards/zoo/1 /srv/x/shards/zoo/2 --out {REPO}/reports/zoo "
               f"--image={REPO}/fixtures/both.png --jobs 2")
    assert portable_command(command, REPO) == ("python -m parity merge …/zoo/1 …/zoo/2 --out reports/zoo "
                                               "--image=fixtures/both.png --jobs 2")
    assert portable_command("python -m parity --profile quick", REPO) == "python -m parity --profile quick"


def test_json_paths_inside_the_checkout_become_relative():
    data = {"images": [f"{REPO}/fixtures/both.png"], f"{REPO}/.venv/x.jpg": {"y": 1}, "n": 3, "other": "/tmp/t"}
    assert portable(data, REPO) == {"images": ["fixtures/both.png"], ".venv/x.jpg": {"y": 1}, "n": 3, "other": "/tmp/t"}


def test_a_runs_command_is_recorded_without_absolute_paths(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["parity", "--out", str(REPO / "reports" / "quick"), "--profile", "quick"])
    assert provenance.base_provenance()["command"] == "python -m parity --out reports/quick --profile quick"


def test_bench_records_the_commit_it_measured_at():
    from parity import bench

    machine = bench._machine(1)
    assert machine["project"] == project_state()
    assert "commit" in machine["project"] and "dirty" in machine["project"]
    text = bench._project_words(machine["project"])
    assert text == "commit not recorded" if not machine["project"]["commit"] else text.startswith("commit `")


def test_a_committed_merge_command_renders_without_the_machines_paths():
    results = {"provenance": {"command": "python -m parity merge /work/shards/zoo/1 --out /work/runs/reports/zoo",
                              "project": {"commit": "a" * 40, "dirty": False}, "image": {"path": "fixtures/both.png",
                                                                                        "size": [640, 480]}},
               "cases": [{"id": "r/gradcam-no_smooth", "setup": "r", "method": "gradcam", "smooth": "no_smooth",
                          "passed": True, "error": None, "vacuous": None, "size": [32, 32], "tolerance": 1e-4,
                          "cam_max_abs_diff": 1e-7}]}
    text = render_markdown(results)
    assert "/work/" not in text and "merge …/zoo/1 --out …/reports/zoo" in text
    assert "file size 640×480" in text and "cases ran at 32×32 (W×H)" in text
    assert "Computed at commit `aaaaaaaaaaaa` (clean tree)" in text


def test_long_hub_names_and_checkpoint_paths_still_fit_the_article():
    from parity.report_check import ARTICLE_WIDTH, table_widths

    names = ["swin_tiny_patch4_window7_224", "deit_tiny_patch16_224", "vit_base_patch16_224", "tf_efficientnet_b0"]
    weights = {name: {"source": "seeded", "identity": "x", "pair": f"timm/{name}:paddleclas/{name.upper()}_long_name",
                      "paddle_path": f"fixtures/weights/converted/{name}_timm1.0.31_s2_seed0-{name}-ebb25e4f-6a3e.pdparams"}
               for name in names}
    cases = [{"id": f"{name}/{method}-no_smooth", "setup": name, "model": name, "method": method, "smooth": "no_smooth",
              "passed": True, "error": None, "vacuous": None, "tolerance": 1e-4, "cam_max_abs_diff": 2e-6}
             for name in names for method in ("gradcam", "gradcam++", "xgradcam", "ablationcam", "scorecam",
                                              "eigencam", "eigengradcam", "layercam")]
    text = render_markdown({"provenance": {"weights": weights, "profile": "hubs"}, "cases": cases})
    too_wide = [(head[:40], round(width)) for head, width in table_widths(text) if width > ARTICLE_WIDTH]
    assert not too_wide
