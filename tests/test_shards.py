"""Sharded runs: N cost-balanced parts on N machines, merged into the report the unsharded run writes.

The merge must give the same cases, stage records and verdicts as the
unsharded run (timings and provenance aside), and must refuse, in one line
and without writing anything, a set of shards with one missing, one given
twice, or shards of two different runs.  The orchestration is tested with
fake workers (fast, and the units of one aug_smooth job end up on different
shards); the bits with real workers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from parity.cli import main as parity_main
from parity.config import make_config
from parity.outcome import JobOutcome
from parity.plan import make_plan
from parity.schedule import WORKER_OVERHEAD_SECONDS, job_cost
from parity.shard import assign_shards, shard_items

pytestmark = pytest.mark.filterwarnings("ignore:No ccache found:UserWarning")


def _config(tmp_path, **kwargs):
    settings = dict(profile="full", dtype="float32", out=tmp_path / "out", image=tmp_path / "img.png",
                    image_sha256="0" * 64, torch_weights=tmp_path / "w.pth", paddle_weights=tmp_path / "w.pdparams",
                    weights_identity="1" * 64, use_cache=False)
    settings.update(kwargs)
    return make_config(**settings)


def test_every_item_lands_on_exactly_one_shard_and_the_loads_are_balanced(tmp_path):
    plan = make_plan(_config(tmp_path), tmp_path / "work")
    items = shard_items(plan)
    assert not any(job.weights_from for job in items)  # those run at the merge
    assignment = assign_shards(items, 8)
    assert assignment == assign_shards(items, 8)  # deterministic
    assert len(assignment) == len(items) and set(assignment) == set(range(8))
    loads = [sum(WORKER_OVERHEAD_SECONDS + job_cost(j) for j, s in zip(items, assignment) if s == shard) for shard in range(8)]
    longest = max(WORKER_OVERHEAD_SECONDS + job_cost(j) for j in items)
    # longest-first greedy: no shard exceeds the average by more than the longest item
    assert max(loads) <= sum(loads) / 8 + longest
    assert assign_shards(items, 1) == [0] * len(items)


# -- fake workers: the orchestration ------------------------------------------------------------
def _fake_run_worker(job, timeout, live):
    """Write what a worker writes, with numbers that depend only on the case (so both sides agree)."""
    from parity.registry import METHODS, smooth_name

    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if job.is_unit:
        (out / "weights").mkdir(exist_ok=True)
        np.save(out / "weights" / f"unit{job.variant}.npy", np.full(3, job.variant, np.float32))
        result = {"kind": "weights", "variant": job.variant, "seconds": 0.1, "keys": [f"unit{job.variant}"]}
    else:
        seeded = sorted(p.name for d in job.weights_from for p in (Path(d) / "weights").glob("*.npy"))
        assert len(seeded) == len(job.weights_from), (job.weights_from, seeded)  # the merge found every unit
        cases = {}
        for method in job.methods:
            cases[method] = {}
            for aug, eigen in job.modes:
                smooth = smooth_name(aug, eigen)
                if smooth not in METHODS[method].smooths:
                    continue
                level = (len(method) + len(smooth)) / 64.0
                # a map with structure: a flat one would make the case vacuous (and the run fail)
                cam = level + np.arange(16, dtype=np.float32).reshape(1, 4, 4) / 256
                stages = {"input": np.zeros((1, 1, 3, 4, 4), np.float32), "cam": cam,
                          "overlay": np.full((1, 4, 4, 3), int(level * 255), np.uint8)}
                for name, array in stages.items():
                    (out / method / smooth).mkdir(parents=True, exist_ok=True)
                    np.save(out / method / smooth / f"{name}.npy", array)
                cases[method][smooth] = {"seconds": 0.1, "weights_reused": len(seeded), "weights_computed": 0,
                                         "weights_seeded": bool(seeded), "target_categories": []}
        result = {"framework": job.framework, "methods": job.methods, "threads": job.threads, "cases": cases}
    (out / "result.json").write_text(json.dumps(result))
    return JobOutcome(job, True, 0.1, out, result=result)


ARGS = ["--profile", "quick", "--methods", "gradcam,scorecam,finercam", "--weights-units", "always", "--no-cache",
        "--jobs", "1"]


def _records(out: Path):
    data = json.loads((out / "parity.json").read_text())
    keep = ("id", "passed", "error", "cam_max_abs_diff", "overlay_identical_fraction", "first_divergent_stage", "stages")
    return [{key: record[key] for key in keep} for record in data["cases"]]


def test_merged_fake_shards_equal_the_unsharded_run(tmp_path, monkeypatch, weights_pair, reference_image):
    monkeypatch.setattr("parity.runner._run_worker", _fake_run_worker)
    monkeypatch.chdir(tmp_path)
    assert parity_main([*ARGS, "--out", str(tmp_path / "whole")]) == 0
    for k in (1, 2, 3):
        assert parity_main([*ARGS, "--shard", f"{k}/3", "--out", str(tmp_path / f"shard{k}")]) == 0
    manifests = [json.loads((tmp_path / f"shard{k}" / "shard.json").read_text()) for k in (1, 2, 3)]
    assert len({m["fingerprint"] for m in manifests}) == 1
    owned = [name for m in manifests for name in m["items"]]
    assert sorted(owned) == sorted(manifests[0]["all_items"]) and len(owned) == len(set(owned))
    # each shard records the commit it ran at (reports/shards.md names it)
    assert all(m["provenance"]["project"]["commit"] for m in manifests)
    units = [name for name in owned if "-variant" in name]
    assert len(units) == 2 * 6  # ScoreCAM on both sides: six units each, spread over the shards
    assert len({k for k, m in enumerate(manifests) for name in m["items"] if "-variant" in name}) > 1
    assert parity_main(["merge", *(str(tmp_path / f"shard{k}") for k in (3, 1, 2)), "--out", str(tmp_path / "merged"),
                        "--no-cache"]) == 0
    assert _records(tmp_path / "merged") == _records(tmp_path / "whole")
    assert "finercam-no_smooth" in [r["id"] for r in _records(tmp_path / "merged")]
    merged = json.loads((tmp_path / "merged" / "parity.json").read_text())
    assert [s["shard"] for s in merged["provenance"]["shards"]] == [1, 2, 3]


@pytest.mark.parametrize("problem", ["missing", "duplicated", "other run"])
def test_a_bad_set_of_shards_is_refused_and_nothing_is_written(problem, tmp_path, monkeypatch, weights_pair,
                                                               reference_image, capsys):
    monkeypatch.setattr("parity.runner._run_worker", _fake_run_worker)
    monkeypatch.chdir(tmp_path)
    for k in (1, 2):
        assert parity_main([*ARGS, "--shard", f"{k}/2", "--out", str(tmp_path / f"shard{k}")]) == 0
    dirs = [str(tmp_path / "shard1"), str(tmp_path / "shard2")]
    if problem == "missing":
        dirs, expected = dirs[:1], "missing shard(s) 2/2: got 1 of 2; nothing was merged"
    elif problem == "duplicated":
        dirs, expected = [dirs[0], dirs[0], dirs[1]], "shard given more than once: 1/2 in"
    else:
        other = [a if a != "gradcam,scorecam,finercam" else "gradcam,scorecam" for a in ARGS]
        assert parity_main([*other, "--shard", "2/2", "--out", str(tmp_path / "other")]) == 0
        dirs, expected = [dirs[0], str(tmp_path / "other")], "the shards come from different runs"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        parity_main(["merge", *dirs, "--out", str(tmp_path / "merged")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m parity: error: ") and expected in err[0], err
    assert not (tmp_path / "merged").exists()


# -- real workers: the bits ---------------------------------------------------------------------
@pytest.mark.xdist_group("shared-matrix")
@pytest.mark.timeout(900)
def test_real_shards_merge_to_the_unsharded_bits(tmp_path, shared_dir, weights_pair, reference_image, monkeypatch):
    """Two shards of GradCAM and EigenCAM (tiny profile) against the session's unsharded tiny matrix."""
    import hashlib

    from conftest import run_shared_matrix

    whole, records, _ = run_shared_matrix(shared_dir, "tiny-float32", weights_pair, reference_image)
    args = ["--profile", "tiny", "--methods", "gradcam,eigencam", "--no-cache", "--jobs", "1", "--threads", "1",
            "--image", str(reference_image)]
    monkeypatch.chdir(tmp_path)
    for k in (1, 2):
        assert parity_main([*args, "--shard", f"{k}/2", "--out", str(tmp_path / f"shard{k}")]) == 0
    assert parity_main(["merge", str(tmp_path / "shard1"), str(tmp_path / "shard2"), "--out",
                        str(tmp_path / "merged"), "--no-cache"]) == 0

    def digests(out: Path) -> dict:
        return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((out / "stages").rglob("*.npy")) if p.parent.name in ("gradcam", "eigencam")}

    assert digests(tmp_path / "merged") and digests(tmp_path / "merged") == digests(whole)
    merged = {r["id"]: r for r in json.loads((tmp_path / "merged" / "parity.json").read_text())["cases"]}
    assert sorted(merged) == sorted(i for i in records if i.split("-")[0] in ("gradcam", "eigencam"))
    for case_id, record in merged.items():
        assert record["passed"] and record["cam_max_abs_diff"] == records[case_id]["cam_max_abs_diff"]
