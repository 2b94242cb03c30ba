"""params.yaml merges three ways with what compile seeded last (issue 11, item 2)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from mlops_nb import compile as compile_mod
from mlops_nb.errors import StaleError
from mlops_nb.pipeline import params
from tests.conftest import REPO

NB = {"iris": [("N_ESTIMATORS", "100"), ("MAX_DEPTH", "4")]}


def merge(existing: str, base: dict | None, nb: dict = NB) -> tuple[str | None, list[str]]:
    notes: list[str] = []
    return params.seed(existing, nb, base, notes), notes


def test_notebook_changed_params_yaml_not_takes_the_notebook_and_says_so():
    text, notes = merge("iris:\n  N_ESTIMATORS: 50  # trees\n  MAX_DEPTH: 4\n",
                        {"iris": {"N_ESTIMATORS": "50", "MAX_DEPTH": "4"}})
    assert text is not None and text.startswith("iris:\n  N_ESTIMATORS: 100 ")
    assert "# trees\n  MAX_DEPTH: 4\n" in text
    assert notes == ["params.yaml: iris.N_ESTIMATORS = 100: the notebook's new value (was 50)"]


def test_params_yaml_changed_notebook_not_keeps_params_yaml_silently():
    text, notes = merge("iris:\n  N_ESTIMATORS: 7\n  MAX_DEPTH: 4\n",
                        {"iris": {"N_ESTIMATORS": "100", "MAX_DEPTH": "4"}})
    assert text is None and notes == []


def test_both_changed_keeps_params_yaml_and_names_both_values():
    text, notes = merge("iris:\n  N_ESTIMATORS: 7\n  MAX_DEPTH: 4\n",
                        {"iris": {"N_ESTIMATORS": "50", "MAX_DEPTH": "4"}})
    assert text is None
    assert len(notes) == 1 and "keeps 7" in notes[0] and "now says 100" in notes[0]


def test_undeclared_key_names_the_nearest_parameter():
    text, notes = merge("iris:\n  N_ESTIMATORS: 100\n  N_ESTIMATOR: 3\n  MAX_DEPTH: 4\n",
                        {"iris": {"N_ESTIMATORS": "100", "MAX_DEPTH": "4"}})
    assert text is None
    assert notes == ["params.yaml: iris.N_ESTIMATOR is not a parameter of notebook 'iris'"
                     " (did you mean 'N_ESTIMATORS'?)"]


def test_values_of_another_type_are_a_change():
    text, _ = merge("iris:\n  N_ESTIMATORS: 100.0\n  MAX_DEPTH: 4\n",
                    {"iris": {"N_ESTIMATORS": "100.0", "MAX_DEPTH": "4"}})
    assert text is not None and "N_ESTIMATORS: 100\n" in text


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    root = tmp_path / "mini"
    shutil.copytree(REPO / "tests/fixtures/mini/notebooks", root / "notebooks")
    return root


def test_compile_follows_a_changed_parameters_cell(mini, caplog):
    compile_mod.compile_project(mini)
    assert "SCALE: 2\n" in (mini / "params.yaml").read_text()
    nb = mini / "notebooks/mini.ipynb"
    nb.write_text(nb.read_text().replace("SCALE = 2", "SCALE = 5"))
    with pytest.raises(StaleError, match="params.yaml"):
        compile_mod.check(mini)
    with caplog.at_level(logging.WARNING):
        compile_mod.compile_project(mini)
    assert "SCALE: 5\n" in (mini / "params.yaml").read_text()
    assert "mini.SCALE = 5: the notebook's new value (was 2)" in caplog.text
    compile_mod.check(mini)


def test_a_fresh_clone_takes_the_base_from_the_step_notebooks(mini):
    compile_mod.compile_project(mini)
    shutil.rmtree(mini / ".mlops_nb")  # not committed: a clone has none
    nb = mini / "notebooks/mini.ipynb"
    nb.write_text(nb.read_text().replace("SCALE = 2", "SCALE = 5"))
    compile_mod.compile_project(mini)
    assert "SCALE: 5\n" in (mini / "params.yaml").read_text()
