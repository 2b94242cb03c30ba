"""Every compile error through the real CLI: message names notebook and cell, exit 3, and
nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import cli, make_nb

CASES = {
    "misspelt_tag": ([(["step:a"], "x = 1"), (["stp:train"], "y = 1")],
                     "notebooks/bad.ipynb cell 2: unknown tag 'stp:train' (did you mean"
                     " 'step:train'?)"),
    "unknown_prev": ([(["step:train"], "x = 1"), (["step:b", "prev:trian"], "y = 1")],
                     "notebooks/bad.ipynb cell 2: 'prev:trian' names no step (did you mean"
                     " 'prev:train'?)"),
    "cycle": ([(["step:a", "prev:b"], "x = 1"), (["step:b"], "y = x")],
              "dependency cycle between steps"),
    "params_not_literal": ([(["parameters"], "N = 1\nM = N * 2"), (["step:a"], "x = 1")],
                           "notebooks/bad.ipynb cell 1: line 2: the value of M is not a literal"),
    "no_step": ([(["imports"], "import os")], "notebooks/bad.ipynb: no pipeline step"),
    "near_miss_step_tag": ([(["step:a"], "x = 1"), (["step-features"], "y = x")],
                           "notebooks/bad.ipynb cell 2: unknown tag 'step-features' (did you"
                           " mean 'step:features'?"),
    "two_steps_on_a_cell": ([(["step:a", "step:b"], "x = 1")],
                            "notebooks/bad.ipynb cell 1: the cell has two step tags"),
    "undefined_name": ([(["step:a"], "x = 1"), (["step:b"], "y = xx + 1")],
                       "notebooks/bad.ipynb cell 2: line 1: undefined name 'xx' (did you"
                       " mean 'x'?)"),
    "reads_a_later_step": ([(["step:a"], "y = x + 1"), (["step:b"], "x = 1")],
                           "notebooks/bad.ipynb cell 1: line 1: step 'a' reads 'x', which only"
                           " step 'b' (cell 2) defines"),
}


def _written(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()} & {"dvc.yaml", "pipeline.yaml", "steps", "env.yaml"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_compile_error(project, case):
    cells, message = CASES[case]
    make_nb(project / "notebooks" / "bad.ipynb", cells)
    res = cli(["compile"], project, check=False)
    assert res.returncode == 3, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert _written(project) == set()


def test_invalid_json(project):
    (project / "notebooks").mkdir()
    (project / "notebooks" / "bad.ipynb").write_text("{not json")
    res = cli(["compile"], project, check=False)
    assert res.returncode == 3
    assert "notebooks/bad.ipynb: not valid notebook JSON" in res.stderr
    assert _written(project) == set()


def test_duplicate_step_names_in_two_notebooks(project):
    make_nb(project / "notebooks" / "a.ipynb", [(["step:train"], "x = 1")])
    make_nb(project / "notebooks" / "b.ipynb", [(["step:train"], "y = 1")])
    res = cli(["compile"], project, check=False)
    assert res.returncode == 3
    assert ("notebooks/b.ipynb cell 1: step 'train' is also defined in notebooks/a.ipynb"
            " cell 1") in res.stderr
    assert _written(project) == set()


def test_check_exit_code_and_verbose_traceback(project):
    make_nb(project / "notebooks" / "ok.ipynb", [(["step:a"], "x = 1")])
    res = cli(["compile", "--check"], project, check=False)
    assert res.returncode == 4 and "dvc.yaml (missing)" in res.stderr
    cli(["compile"], project)
    assert cli(["compile", "--check"], project).returncode == 0
    res = cli(["-v", "run", "nosuch"], project, check=False)
    assert res.returncode == 2 and "no step named 'nosuch'" in res.stderr
    assert "Traceback" in res.stderr


def test_init_never_overwrites(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    (root / "params.yaml").write_text("mine: {A: 1}\n")
    res = cli(["init", str(root)], tmp_path)
    assert "created .dvc/" in res.stdout and "created notebooks/" in res.stdout
    assert (root / "params.yaml").read_text() == "mine: {A: 1}\n"
    assert "/outputs/" in (root / ".gitignore").read_text()
    again = cli(["init", str(root)], tmp_path)
    assert "nothing changed" in again.stdout
