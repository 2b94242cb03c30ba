"""Edits to the source notebook are never silently ignored, by any runner (issue 11, items 1-3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli, compiled_project, git_project, make_nb, sh

pytestmark = pytest.mark.slow


def tiny(root: Path, b_source: str = "y = x + 1\nprint('y is', y)") -> Path:
    return make_nb(root / "notebooks/tiny.ipynb", [
        (["pipeline-parameters"], "N = 3"),
        (["step:a"], "x = N * 2"),
        (["step:b"], b_source),
    ])


def printed(root: Path, step: str) -> str:
    doc = json.loads((root / f"outputs/{step}/{step}.ipynb").read_text())
    return "".join("".join(o.get("text", "")) for c in doc["cells"] for o in c.get("outputs", []))


def _tiny_compiled(root: Path) -> None:
    tiny(root)
    compiled_project(root)


@pytest.fixture
def tiny_project(tmp_path: Path, from_template) -> Path:
    return from_template("notebook_edits.tiny", _tiny_compiled, tmp_path / "tiny")


def test_dvc_repro_refuses_a_step_stale_against_its_notebook(tiny_project):
    root = tiny_project
    sh(["dvc", "repro"], root)
    assert "y is 7" in printed(root, "b")
    tiny(root, "y = x + 100\nprint('y is', y)")
    res = sh(["dvc", "repro"], root, check=False)
    assert res.returncode != 0
    assert "notebooks/tiny.ipynb changed" in res.stderr + res.stdout
    assert "mlops-nb compile" in res.stderr + res.stdout
    assert "y is 7" in printed(root, "b")
    # a stage run on its own (-s) refuses too: DVC removed its outputs, nothing wrote them
    res = sh(["dvc", "repro", "-s", "-f", "b"], root, check=False)
    assert res.returncode != 0 and "mlops-nb compile" in res.stderr + res.stdout
    assert not (root / "outputs/b/.mlops_nb-done.json").exists()
    assert "y is 7" in printed(root, "b")  # the last run's notebook (not DVC's): unchanged
    cli(["compile"], root)
    sh(["dvc", "repro"], root)
    assert "y is 106" in printed(root, "b")


def test_ploomber_build_and_status_refuse_a_stale_step(tiny_project):
    root = tiny_project
    sh(["ploomber", "build"], root)
    tiny(root, "y = x + 100\nprint('y is', y)")
    for cmd in (["ploomber", "build"], ["ploomber", "status"]):
        res = sh(cmd, root, check=False)
        assert res.returncode != 0, cmd
        assert "notebooks/tiny.ipynb changed" in res.stderr + res.stdout, cmd
    status = cli(["status"], root).stdout
    assert "b  stale: recompile" in status and "a  stale: recompile" not in status
    cli(["compile"], root)
    sh(["ploomber", "build"], root)
    assert "y is 106" in printed(root, "b")


def test_a_save_that_changes_no_step_runs_nothing(tiny_project):
    root = tiny_project
    sh(["dvc", "repro"], root)
    nb = root / "notebooks/tiny.ipynb"
    doc = json.loads(nb.read_text())
    doc["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hi\n"}]
    doc["cells"][1]["execution_count"] = 4
    nb.write_text(json.dumps(doc))
    res = sh(["dvc", "repro"], root)
    assert "Running stage 'a'" not in res.stdout and "Running stage 'b'" not in res.stdout
    sh(["ploomber", "build"], root)
    assert "up to date" in cli(["status"], root).stdout


def helpers(root: Path, h_body: str = "return v + 1", f_body: str = "return v * 2") -> Path:
    return make_nb(root / "notebooks/helpers.ipynb", [
        (["functions"], "def f(v):\n    " + f_body + "\n\n\ndef h(v):\n    " + h_body
                        + "\n\n\ndef g(v):\n    return h(v) * 10"),
        (["step:a"], "x = f(1)"),
        (["step:b"], "y = g(2)\nprint('y is', y)"),
        (["step:c"], "z = x + 1"),
    ])


def test_editing_one_helper_reruns_only_the_steps_that_use_it(tmp_path):
    root = tmp_path / "helpers"
    root.mkdir()
    helpers(root)
    git_project(root)
    cli(["run"], root)
    assert "y is 30" in printed(root, "b")
    helpers(root, "return v + 2")  # h: used by b through g only
    out = cli(["run"], root).stdout
    assert "b: done" in out
    assert "a: up to date" in out and "c: up to date" in out
    assert "y is 40" in printed(root, "b")
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "x"], root)
    sh(["dvc", "repro"], root)
    helpers(root, "return v + 3")
    cli(["compile"], root)
    res = sh(["dvc", "repro"], root)
    assert "Running stage 'b'" in res.stdout
    assert "Running stage 'a'" not in res.stdout and "Running stage 'c'" not in res.stdout
    # f is a's: a and its downstream c rerun under dvc repro, b does not
    helpers(root, "return v + 3", "return v * 3")
    cli(["compile"], root)
    res = sh(["dvc", "repro"], root)
    assert "Running stage 'a'" in res.stdout and "Running stage 'c'" in res.stdout
    assert "Running stage 'b'" not in res.stdout
