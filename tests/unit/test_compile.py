"""compile: golden generated files, byte-stable output, --check, params.yaml round trip."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mlops_nb import compile as compile_mod
from mlops_nb.errors import ConfigError, StaleError
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "mini"
GOLDEN = FIXTURE / "golden"
GENERATED = ["dvc.yaml", "pipeline.yaml", "params.yaml", "steps/make.ipynb",
             "steps/scale.ipynb", "steps/report.ipynb"]


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    root = tmp_path / "mini"
    shutil.copytree(FIXTURE / "notebooks", root / "notebooks")
    return root


def test_generated_files_match_golden(mini):
    compile_mod.compile_project(mini)
    if os.environ.get("MLOPS_NB_UPDATE_GOLDEN"):
        for rel in GENERATED:
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(mini / rel, GOLDEN / rel)
    for rel in GENERATED:
        assert (mini / rel).read_text() == (GOLDEN / rel).read_text(), rel
    assert os.readlink(mini / "env.yaml") == "params.yaml"


def test_compiling_twice_is_byte_identical(mini):
    compile_mod.compile_project(mini)
    first = {rel: (mini / rel).read_bytes() for rel in GENERATED}
    again = compile_mod.compile_project(mini)
    assert again.written == ()
    assert {rel: (mini / rel).read_bytes() for rel in GENERATED} == first


def test_check_names_stale_files(mini):
    compile_mod.compile_project(mini)
    compile_mod.check(mini)
    nb = mini / "notebooks" / "mini.ipynb"
    nb.write_text(nb.read_text().replace("values = [1, 2, 3]", "values = [1, 2, 3, 4]"))
    with pytest.raises(StaleError, match=r"steps/make.ipynb \(differs\)"):
        compile_mod.check(mini)


def test_params_yaml_keeps_user_values_and_comments(mini):
    (mini / "params.yaml").write_text("# tuned by hand\nmini:\n  SCALE: 10  # keep me\n")
    compile_mod.compile_project(mini)
    text = (mini / "params.yaml").read_text()
    assert text.startswith("# tuned by hand\n")
    assert "SCALE: 10  # keep me" in text
    assert "NAME: mini" in text


def test_broken_params_yaml_names_line_and_column(mini):
    (mini / "params.yaml").write_text("mini:\n  SCALE: [1, 2\n")
    with pytest.raises(ConfigError, match=r"params.yaml:3:1: invalid YAML"):
        compile_mod.compile_project(mini)
    assert not (mini / "dvc.yaml").exists()


def test_removed_step_notebook_is_deleted(mini):
    compile_mod.compile_project(mini)
    nb = mini / "notebooks" / "mini.ipynb"
    doc = json.loads(nb.read_text())
    for cell in doc["cells"]:
        if "step:report" in cell["metadata"].get("tags", []):
            cell["metadata"]["tags"] = ["skip"]
    nb.write_text(json.dumps(doc))
    result = compile_mod.compile_project(mini)
    assert "steps/report.ipynb" in result.removed
    assert not (mini / "steps/report.ipynb").exists()
