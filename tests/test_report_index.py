"""reports/README.md: every report once, its verdict, date and commit, and STALE where the deciding code moved on."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from parity.provenance import staleness
from parity.report_index import collect, main, render_index

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull}


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, capture_output=True, text=True,
                          check=True, timeout=30)
    return done.stdout.strip()


def _commit(repo: Path, path: str, text: str) -> str:
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    _git(repo, "add", path)
    _git(repo, "commit", "-q", "-m", f"change {path}")
    return _git(repo, "rev-parse", "HEAD")


def _report(root: Path, name: str, commit, profile: str, passed: bool = True) -> None:
    directory = root / name
    directory.mkdir(parents=True)
    results = {"provenance": {"profile": profile, "dtype": "float32", "date": "2026-12-01T10:00:00+00:00",
                              "project": {"commit": commit, "dirty": False}},
               "cases": [{"id": "gradcam-no_smooth", "passed": passed, "error": None, "vacuous": None}]}
    (directory / "parity.json").write_text(json.dumps(results), encoding="utf-8")
    (directory / "parity.md").write_text("# report\n", encoding="utf-8")


@pytest.fixture()
def repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    return repo


def test_a_report_older_than_the_deciding_code_is_stale(repo):
    first = _commit(repo, "paddle_impl/grad_cam.py", "v1\n")
    docs = _commit(repo, "README.md", "docs\n")  # not deciding code: reports at `first` stay fresh
    assert staleness(first, repo) is None and staleness(docs, repo) is None
    compare = _commit(repo, "parity/compare.py", "bounds\n")
    assert "before" in staleness(first, repo) and "before" in staleness(docs, repo)
    assert staleness(compare, repo) is None
    registry = _commit(repo, "parity/registry.py", "methods\n")
    assert staleness(compare, repo) is not None and staleness(registry, repo) is None
    assert staleness(None, repo) == "computed at an unknown commit"
    assert "does not have" in staleness("f" * 40, repo)


def test_the_index_lists_each_report_once_and_marks_the_stale_ones(repo):
    old = _commit(repo, "paddle_impl/grad_cam.py", "v1\n")
    new = _commit(repo, "parity/compare.py", "v2\n")
    root = repo / "reports"
    _report(root, "quick", new, "quick")
    _report(root, "zoo", old, "zoo", passed=False)
    (root / "shards.md").write_text("# shards\n", encoding="utf-8")
    entries = collect(root)
    assert [e["path"] for e in entries] == ["quick/parity.md", "zoo/parity.md", "shards.md"]
    text = render_index(root, repo)
    quick = next(line for line in text.splitlines() if "(quick/parity.md)" in line)
    zoo = next(line for line in text.splitlines() if "(zoo/parity.md)" in line)
    assert "STALE" not in quick and f"commit `{new[:12]}`, clean" in quick and "2026-12-01" in quick
    assert "⚠️ **STALE**" in zoo
    lines = text.splitlines()
    assert lines[lines.index(zoo) + 1].strip().startswith("❌ **FAIL** · **0/1 cases passed**")
    assert "3 report(s), 2 stale." in text  # shards.md has no provenance: stale too


def test_a_profile_with_its_own_model_registry_is_stale_when_that_registry_moves_on(repo):
    """A hub pair's entry (a switch, a known difference) decides the hubs reports, not the zoo's or the quick one."""
    core = _commit(repo, "paddle_impl/grad_cam.py", "v1\n")
    root = repo / "reports"
    for profile in ("quick", "zoo", "hubs"):
        _report(root, profile, core, profile)
    assert "0 stale." in render_index(root, repo)
    _commit(repo, "parity/hubs/cnns.py", "a new switch\n")
    text = render_index(root, repo)
    stale = [profile for profile in ("quick", "zoo", "hubs")
             if "STALE" in next(line for line in text.splitlines() if f"({profile}/parity.md)" in line)]
    assert stale == ["hubs"], text
    _commit(repo, "parity/model_zoo.py", "a known difference\n")
    text = render_index(root, repo)
    assert "STALE" in next(line for line in text.splitlines() if "(zoo/parity.md)" in line)
    assert "STALE" not in next(line for line in text.splitlines() if "(quick/parity.md)" in line)
    assert "`parity/hubs`" in text and "3 report(s), 2 stale." in text


def test_the_command_writes_readme(tmp_path, capsys):
    _report(tmp_path, "quick", None, "quick")
    assert main([str(tmp_path)]) == 0
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "[float32 quick](quick/parity.md)" in text and "commit unknown" in text


def test_shards_report_records_its_commit_and_the_index_reads_it(repo):
    from tools import shards_report

    commit = _commit(repo, "parity/compare.py", "v1\n")
    root = repo / "reports"
    times = repo / "times.txt"
    times.write_text("quick shard 1/2 rc=0 wall=10\nquick shard 2/2 rc=0 wall=12\nquick merge rc=0 wall=3\n")
    for shard in (1, 2):
        directory = repo / "shards" / str(shard)
        directory.mkdir(parents=True)
        manifest = {"shard": shard, "shards": 2, "items": {"a": {}}, "wall_seconds": 9.0,
                    "provenance": {"cpu": "cpu", "date": "2026-12-02T00:00:00+00:00",
                                   "project": {"commit": commit, "dirty": False}}}
        (directory / "shard.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert shards_report.main([f"quick={repo / 'shards'}:{times}", "--out", str(root / "shards.md")]) == 0
    assert f"Computed at commit `{commit[:12]}` (clean tree)." in (root / "shards.md").read_text(encoding="utf-8")
    text = render_index(root, repo)
    line = next(line for line in text.splitlines() if "(shards.md)" in line)
    assert "2026-12-02" in line and f"`{commit[:12]}`" in line and "STALE" not in line


def test_a_run_written_under_reports_refreshes_the_index(tmp_path, monkeypatch, capsys):
    from parity import cli

    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)
    out = tmp_path / "reports" / "quick"
    out.mkdir(parents=True)
    (tmp_path / "reports" / "README.md").write_text("# Reports\n(an older index)\n", encoding="utf-8")
    record = {"id": "gradcam-no_smooth", "method": "gradcam", "smooth": "no_smooth", "passed": True, "error": None,
              "vacuous": None, "message": "ok", "tolerance": 1e-4, "cam_max_abs_diff": 1e-7}
    assert cli.write_results(out, {"profile": "quick", "dtype": "float32"}, [record]) == 0
    index = (tmp_path / "reports" / "README.md").read_text(encoding="utf-8")
    assert "[float32 quick](quick/parity.md)" in index and "**1/1 cases passed**" in index
    assert "an older index" not in index
    assert "[index of every report](../README.md)" in (out / "parity.md").read_text(encoding="utf-8")


def test_the_committed_index_lists_every_committed_run_and_its_links_land(tmp_path):
    """The index as committed (a run in progress may be rewriting the working copy's) against the committed runs."""
    from parity.report_check import check_markdown

    repo = Path(__file__).resolve().parent.parent
    try:
        text = _git(repo, "show", "HEAD:reports/README.md")
        runs = [Path(p) for p in _git(repo, "ls-files", "reports").splitlines() if p.endswith("/parity.json")]
    except (subprocess.CalledProcessError, OSError):
        pytest.skip("not a git checkout with a committed reports/README.md")
    index = repo / "reports" / "README.md"
    assert not check_markdown(index, text=text + "\n", style=False)
    for run in runs:
        relative = run.parent.relative_to("reports").as_posix()
        link = "](parity.md)" if relative == "." else f"]({relative}/parity.md)"
        assert text.count(link) == 1, link


def _case(case_id, diff, passed=True):
    return {"id": case_id, "method": "gradcam", "smooth": "no_smooth", "passed": passed, "error": None,
            "vacuous": None, "message": "m", "tolerance": 1e-4, "cam_max_abs_diff": diff}


def test_what_moved_since_the_previous_run_of_the_profile():
    from parity.report_first_screen import compare_with_previous

    prov = {"profile": "quick", "dtype": "float32", "project": {"commit": "b" * 40}, "date": "2026-12-01T00:00:00"}
    previous = {"provenance": prov, "cases": [_case("a", 1e-6), _case("b", 1e-6), _case("c", 1e-6), _case("d", 0.0)]}
    now = {"provenance": dict(prov, project={"commit": "c" * 40}),
           "cases": [_case("a", 1.9e-6), _case("b", 4e-6), _case("c", 2e-4, passed=False), _case("d", 1e-8),
                     _case("new", 1e-6)]}
    moved = compare_with_previous(previous, now)
    assert moved["commit"] == "b" * 40 and moved["compared"] == 4
    assert [m["id"] for m in moved["moved"]] == ["b", "c"]  # a: 1.9x; d: 0 -> 1e-8, both below the floor
    assert moved["moved"][1]["status_after"] == "failed"
    assert compare_with_previous(dict(previous, provenance=dict(prov, profile="zoo")), now) is None
    assert compare_with_previous(None, now) is None


def test_a_rerun_of_a_profile_says_what_moved(tmp_path, capsys):
    from parity import cli

    out = tmp_path / "run"
    assert cli.write_results(out, {"profile": "quick", "dtype": "float32"}, [_case("a", 1e-6), _case("b", 1e-6)]) == 0
    assert "Since the previous run" not in (out / "parity.md").read_text(encoding="utf-8")
    assert cli.write_results(out, {"profile": "quick", "dtype": "float32"}, [_case("a", 1e-6), _case("b", 9e-6)]) == 0
    first_screen = (out / "parity.md").read_text(encoding="utf-8").split("**Contents:**", 1)[0]
    assert "1 of 2 cases moved" in first_screen and "`b` 1.0% → 9.0%" in first_screen
    saved = json.loads((out / "parity.json").read_text(encoding="utf-8"))
    assert [m["id"] for m in saved["previous_run"]["moved"]] == ["b"]


def test_a_bench_report_is_listed_with_its_slower_cells(tmp_path):
    cells = {"resnet50 b1 t2 no_smooth gradcam": {"ratio": 0.8}, "resnet50 b1 t2 no_smooth fem": {"ratio": 1.25},
             "resnet50 b1 t2 no_smooth scorecam": {"ratio": None}}
    (tmp_path / "bench.json").write_text(json.dumps({"machine": {"cpu": "cpu", "date": "2026-12-07"}, "cells": cells}))
    (tmp_path / "bench.md").write_text("# bench\n")
    line = render_index(tmp_path, tmp_path).split("(bench.md)", 1)[1]
    assert ("2 cell(s) timed on cpu: 1 at or below upstream's time, 1 above (slowest: "
            "`resnet50 b1 t2 no_smooth fem` 1.25×), 1 without a ratio") in line


def test_a_merged_bench_is_as_stale_as_its_oldest_part(repo):
    """A part re-measured at a newer commit must not vouch for a part measured before the port changed."""
    old = _commit(repo, "paddle_impl/grad_cam.py", "v1\n")
    new = _commit(repo, "paddle_impl/grad_cam.py", "v2\n")
    root = repo / "reports"
    root.mkdir()

    def merged(*commits):
        projects = [{"commit": commit, "dirty": False} for commit in commits]
        data = {"machine": {"cpu": "cpu", "date": "2026-12-07", "project": projects[0]},
                "settings": {"merged_projects": projects}, "cells": {"resnet50 b1 t2 no_smooth gradcam": {"ratio": 0.5}}}
        (root / "bench_all.json").write_text(json.dumps(data))
        (root / "bench_all.md").write_text("# bench\n")
        return next(line for line in render_index(root, repo).splitlines() if "(bench_all.md)" in line)

    line = merged(new, old)
    assert "⚠️ **STALE** (part 2:" in line and f"2 parts at 2 commits (`{new[:12]}`, `{old[:12]}`)" in line
    line = merged(new, new)
    assert "STALE" not in line and f"commit `{new[:12]}`, clean" in line
    line = merged(new, None)  # a part that recorded no commit is named so, and cannot vouch for itself
    assert "⚠️ **STALE** (part 2: computed at an unknown commit" in line
    assert f"2 parts at 2 commits (`{new[:12]}`, unknown)" in line
