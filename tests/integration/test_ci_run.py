"""`mlops-nb ci run` performs the CI workflow's steps in a worktree of HEAD and writes a report
whose figures are DVC's own; a failing test cell fails it, naming the cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli, compiled_project, make_nb, sh

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"


def _cells(k: str, feature: str) -> list[tuple[list[str], str]]:
    return [
        (["imports"], "import json"),
        (["parameters"], f"K = {k}\nNAME = 'a|b `c` <d>'"),
        (["step:make"], f"xs = [{feature} for v in range(10)]"),
        (["step:score"], "score = sum(xs) * K / 100\nspread = max(xs) - min(xs)"),
        (["test"], "assert score > 0, 'the score is positive'"),
        (["pipeline-metrics"], "print(score)\nprint(spread)"),
    ]


@pytest.fixture(scope="module")
def branches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """main with a run and its dvc.lock; 'feature' changes a parameter and a feature."""
    root = tmp_path_factory.mktemp("ci") / "proj"
    root.mkdir()
    make_nb(root / "notebooks" / "nb.ipynb", _cells("2", "v"))
    compiled_project(root)
    sh(["git", "branch", "-M", "main"], root)
    sh(["dvc", "repro", "-q"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "lock"], root)
    sh(["git", "checkout", "-qb", "feature"], root)
    make_nb(root / "notebooks" / "nb.ipynb", _cells("3", "v * v"))
    cli(["compile"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "feature"], root)
    return root


def test_the_report_holds_dvcs_own_differences_and_a_plot(branches: Path):
    res = cli(["ci", "run", "--base", "main"], branches)
    assert "report: ci-report/report.md" in res.stdout
    md = (branches / "ci-report" / "report.md").read_text()
    doc = json.loads((branches / "ci-report" / "report.json").read_text())
    assert doc["passed"] and doc["base_ref"] == "main"
    # the same differences DVC reports by hand, in the workspace after the same repro
    sh(["dvc", "repro", "-q"], branches)
    by_hand = json.loads(sh(["dvc", "metrics", "diff", "main", "--json"], branches).stdout)
    assert doc["metrics"] == by_hand
    scores = by_hand["outputs/score/metrics.json"]
    assert scores["score"]["old"] == 0.9 and scores["score"]["new"] == pytest.approx(8.55)
    params = sh(["dvc", "params", "diff", "main", "--md"], branches).stdout.strip()
    row = [ln for ln in params.splitlines() if "nb.K" in ln][0]
    shown = [ln for ln in md.split("## Parameters against main")[1].splitlines() if "nb.K" in ln]
    assert [c.strip() for c in shown[0].split("|")[3:5]] == \
        [c.strip() for c in row.split("|")[3:5]] == ["2", "3"]
    assert "| notebook tests | ok |" in md and "1 passed, 0 failed" in md
    assert "![metrics](metrics.png)" in md
    assert (branches / "ci-report" / "metrics.png").read_bytes().startswith(PNG)
    # a pull request's run changes nothing of the project: no registry, no lineage written
    assert not (branches / ".mlops_nb" / "lineage.db").exists()
    assert sh(["git", "worktree", "list"], branches).stdout.count("\n") == 1


def test_a_failing_test_cell_fails_the_run_naming_the_cell(branches: Path):
    cells = _cells("3", "v * v")
    cells[4] = (["test"], "assert score < 0, 'the score is negative'")
    make_nb(branches / "notebooks" / "nb.ipynb", cells)
    sh(["git", "commit", "-qam", "a failing test"], branches)
    try:
        res = cli(["ci", "run", "--base", "main"], branches, check=False)
        assert res.returncode == 21, res.stdout + res.stderr
        assert "CI failed at: notebook tests" in res.stderr
        md = (branches / "ci-report" / "report.md").read_text()
        assert "notebooks/nb.ipynb cell 5 \\[test:score\\]" in md
        assert "line 1: assert score \\< 0" in md
    finally:
        sh(["git", "reset", "-q", "--hard", "HEAD~1"], branches)


def test_uncommitted_changes_are_left_out_and_said(branches: Path):
    nb = branches / "notebooks" / "nb.ipynb"
    before = nb.read_text()
    make_nb(nb, [(["step:broken"], "this is not python")])
    try:
        res = cli(["ci", "run", "--base", "no-such-ref", "--tests", ""], branches)
        md = (branches / "ci-report" / "report.md").read_text()
        assert "Uncommitted changes were left out" in md
        assert "(not found: no comparison)" in md
        assert "ok  compile --check" in res.stdout
    finally:
        nb.write_text(before)


def test_a_symlinked_report_folder_is_refused_before_anything_runs(branches: Path,
                                                                   tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    report = branches / "ci-report"
    moved = branches.parent / "kept-report"
    if report.exists():
        report.rename(moved)
    report.symlink_to(outside)
    try:
        res = cli(["ci", "run"], branches, check=False)
        assert res.returncode == 6 and "ci-report is a symlink" in res.stderr
        assert list(outside.iterdir()) == []
        res = cli(["test", "--json", "ci-report/x.json"], branches, check=False)
        assert res.returncode == 6 and "is a symlink" in res.stderr
        assert list(outside.iterdir()) == []
    finally:
        report.unlink()
        if moved.exists():
            moved.rename(report)
