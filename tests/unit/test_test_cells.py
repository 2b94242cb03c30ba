"""`test` cells: parsed apart from every step, and what they read becomes their step's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_nb.errors import NotebookError
from mlops_nb.notebook.tags import parse_notebook
from mlops_nb.pipeline.spec import build_spec
from tests.conftest import make_nb


def _spec(root: Path, cells: list[tuple[list[str], str]]):
    path = make_nb(root / "notebooks" / "nb.ipynb", cells)
    parsed = parse_notebook(path, "notebooks/nb.ipynb")
    return parsed, build_spec([parsed], root)


def test_a_test_cell_is_never_part_of_a_step_and_keeps_the_current_step(tmp_path: Path):
    parsed, spec = _spec(tmp_path, [
        (["imports"], "import math"),
        (["parameters"], "N = 3"),
        (["step:make"], "xs = list(range(N))\nunused = 1"),
        (["test"], "assert len(xs) == N"),
        ([], "total = sum(xs)"),  # untagged after a test cell: still step 'make'
        (["step:use"], "mean = total / len(xs)\nxs = None"),
        (["test:make"], "assert unused == 1"),
    ])
    assert [c.index for c in parsed.steps[0].cells] == [3, 5]
    assert [(t.step, t.cell.index) for t in parsed.tests] == [("make", 4), ("make", 7)]
    first, second = spec.tests
    # xs is read as 'make' left it (not as 'use' rebinds it later), so 'make' saves it
    assert first.inputs == (("xs", "make"),) and first.params == ("N",)
    assert second.inputs == (("unused", "make"),)
    assert {"xs", "unused", "total"} <= set(spec.step("make").outputs)
    assert "assert" not in spec.step("make").cells[0].source


@pytest.mark.parametrize(("tags", "message"), [
    (["test", "step:b"], "never part of a step"),
    (["test:nope"], "'test:nope' names no step of this notebook"),
    (["test:mak"], "did you mean 'test:make'"),
    (["test:a", "test:make"], "tests two steps"),
    (["test:Bad Name"], "invalid step name"),
])
def test_bad_test_tags_name_the_cell(tmp_path: Path, tags: list[str], message: str):
    with pytest.raises(NotebookError) as err:
        _spec(tmp_path, [(["step:make"], "a = 1"), (["step:a"], "b = 1"), (tags, "assert a")])
    assert "notebooks/nb.ipynb cell 3" in str(err.value)
    assert message in str(err.value)


def test_a_bare_test_cell_before_any_step_asks_for_its_step(tmp_path: Path):
    with pytest.raises(NotebookError, match="cell 1: a 'test' cell before any step"):
        _spec(tmp_path, [(["test"], "assert True"), (["step:make"], "a = 1")])
