"""Tag parsing: Kale's grammar, pass-through of foreign tags, and errors that name the cell."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_nb.errors import NotebookError
from mlops_nb.notebook.tags import parse_notebook
from tests.conftest import make_nb


def parse(tmp_path: Path, cells):
    path = make_nb(tmp_path / "nb.ipynb", cells)
    return parse_notebook(path, "notebooks/nb.ipynb")


def test_sections_steps_and_continuation(tmp_path):
    nb = parse(tmp_path, [
        (["imports"], "import os"),
        (["pipeline-parameters"], "N = 3"),
        (["functions"], "def f(x):\n    return x"),
        (["step:load"], "a = 1"),
        ([], "b = a + 1"),
        (["skip"], "print(b)"),
        (["block:train", "prev:load", "hide-input"], "c = b * N"),
        (["pipeline-metrics"], "print(c)"),
    ])
    assert [c.source for c in nb.imports] == ["import os"]
    assert [c.source for c in nb.parameters] == ["N = 3"]
    assert [s.name for s in nb.steps] == ["load", "train"]
    assert [c.index for c in nb.steps[0].cells] == [4, 5]
    assert nb.steps[1].prev == ("load",)
    assert [c.source for c in nb.metrics] == ["print(c)"]


def test_papermill_parameters_tag_and_several_prev(tmp_path):
    nb = parse(tmp_path, [
        (["parameters"], "N = 3"),
        (["step:a"], "x = 1"),
        (["step:b"], "y = 1"),
        (["step:c", "prev:a", "prev:b"], "z = 1"),
    ])
    assert len(nb.parameters) == 1
    assert nb.steps[2].prev == ("a", "b")


def test_leading_untagged_cells_are_exploration(tmp_path):
    nb = parse(tmp_path, [([], "explore = 1"), (["step:a"], "x = 1")])
    assert [c.source for c in nb.steps[0].cells] == ["x = 1"]


def test_kale_resource_tags_pass_through(tmp_path):
    nb = parse(tmp_path, [(["step:a", "limit:nvidia.com/gpu:1", "annotation:x:y",
                            "remove-cell", "skip-execution"], "x = 1")])
    assert nb.steps[0].name == "a"


@pytest.mark.parametrize("tag,hint", [
    ("stp:train", "step:train"),
    ("pipeline-paramters", "pipeline-parameters"),
    ("functons", "functions"),
    ("prv:a", "prev:a"),
])
def test_misspelled_tag_names_cell_and_nearest(tmp_path, tag, hint):
    with pytest.raises(NotebookError) as err:
        parse(tmp_path, [(["step:a"], "x = 1"), ([tag], "y = 2")])
    msg = str(err.value)
    assert "notebooks/nb.ipynb cell 2" in msg and f"did you mean '{hint}'" in msg


def test_bad_step_name(tmp_path):
    with pytest.raises(NotebookError, match="cell 1: invalid step name"):
        parse(tmp_path, [(["step:Load-Data"], "x = 1")])


def test_no_step_is_an_error(tmp_path):
    with pytest.raises(NotebookError, match="no pipeline step"):
        parse(tmp_path, [(["imports"], "import os"), ([], "x = 1")])


def test_invalid_json(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text('{"cells": [')
    with pytest.raises(NotebookError, match="broken.ipynb: not valid notebook JSON"):
        parse_notebook(path, "broken.ipynb")


def test_prev_outside_a_step(tmp_path):
    with pytest.raises(NotebookError, match="cell 1: a 'prev:' tag must sit on a cell of a step"):
        parse(tmp_path, [(["prev:a"], "x = 1"), (["step:a"], "y = 1")])


@pytest.mark.parametrize("stem,group", [("iris", "iris"), ("01-explore", "nb_01_explore"),
                                        ("my notebook", "my_notebook"), ("_x", "nb__x")])
def test_parameter_group_is_a_plain_name(stem, group):
    from mlops_nb.notebook.tags import group_name

    assert group_name(stem) == group


def test_skip_and_markdown_never_change_the_current_step(tmp_path):
    # Kale's parser: the untagged cell after a skipped one continues the step before it
    path = make_nb(tmp_path / "nb.ipynb", [
        (["imports"], "import os"),
        ([], "import sys"),
        (["skip"], "print('explore')"),
        ([], "import re"),
        (["step:a"], "x = 1"),
        (["skip"], "x"),
        ([], "y = x + 1"),
        (["step:b"], "z = y"),
        (["skip", "prev:a"], "z"),
        ([], "w = z"),
    ], markdown_first=True)
    nb = parse_notebook(path, "notebooks/nb.ipynb")
    assert [c.source for c in nb.imports] == ["import os", "import sys", "import re"]
    assert [[c.source for c in s.cells] for s in nb.steps] == [
        ["x = 1", "y = x + 1"], ["z = y", "w = z"]]
    assert nb.steps[1].prev == ()  # prev: on a skip cell is ignored


def test_empty_step_tag_continues_the_current_step(tmp_path):
    nb = parse(tmp_path, [(["step:a"], "x = 1"), (["step:"], "y = 2"), (["block:"], "z = 3"),
                          (["step:b"], "w = 4")])
    assert [len(s.cells) for s in nb.steps] == [3, 1]


def test_kale_1_dialects(tmp_path, caplog):
    nb = parse(tmp_path, [
        (["block:imports"], "import os"),
        (["block:functions"], "def f():\n    return 1"),
        (["step:data-loading"], "x = 1"),
        (["step:b"], "y = 1"),
        (["step:c", "prev:data-loading:b"], "z = 1"),
    ])
    assert len(nb.imports) == 1 and len(nb.functions) == 1
    assert [s.name for s in nb.steps] == ["data_loading", "b", "c"]
    assert nb.steps[2].prev == ("data_loading", "b")
    assert "read as '_'" in caplog.text


def test_two_step_names_on_one_cell_is_an_error(tmp_path):
    with pytest.raises(NotebookError, match=r"cell 1: the cell has two step tags \(step:a,"
                                            r" step:b\).*split the cell"):
        parse(tmp_path, [(["step:a", "block:b"], "x = 1")])


@pytest.mark.parametrize("tag,hint", [
    ("step-features", "step:features"),
    ("step_features", "step:features"),
    ("step=features", "step:features"),
    ("prev-load", "prev:load"),
    ("Step:x", "step:x"),
    ("STEP:Train", "step:train"),
    ("metrics", "pipeline-metrics"),
    ("parameter", "parameters"),
    ("Imports", "imports"),
    ("step:Train", "step:train"),
])
def test_near_miss_tags_are_errors_with_the_fix(tmp_path, tag, hint):
    with pytest.raises(NotebookError) as err:
        parse(tmp_path, [(["step:a"], "x = 1"), ([tag], "y = 2")])
    msg = str(err.value)
    assert "notebooks/nb.ipynb cell 2" in msg and f"did you mean '{hint}'" in msg
