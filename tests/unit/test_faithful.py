"""The pipeline computes what the notebook computes (issue 25): the analysis' part."""

from __future__ import annotations

import logging
from pathlib import Path

from mlops_nb.compile.notebooks import render_step
from mlops_nb.notebook.randomness import seeds_global_random
from mlops_nb.notebook.tags import parse_notebook
from mlops_nb.pipeline.randomchain import RANDOM_STATE
from mlops_nb.pipeline.spec import build_spec
from tests.conftest import make_nb


def spec_of(tmp_path: Path, cells, name="nb"):
    path = make_nb(tmp_path / "notebooks" / f"{name}.ipynb", cells)
    return build_spec([parse_notebook(path, f"notebooks/{name}.ipynb")], tmp_path)


# --- item 1: the global random generators' state goes from step to step --------------------

def test_seeding_is_found_through_the_notebooks_imports():
    assert seeds_global_random(["import numpy as np", "np.random.seed(0)"])
    assert seeds_global_random(["import random\nrandom.seed(1)"])
    assert seeds_global_random(["from numpy.random import seed\nseed(3)"])
    assert seeds_global_random(["import numpy.random as npr\nnpr.seed(3)"])
    assert seeds_global_random(["import torch\ntorch.manual_seed(3)"])
    assert seeds_global_random(["import numpy\nif True:\n    numpy.random.seed(3)"])
    # a generator object, a user's own seed(), an unseeded draw: no sequence to keep
    assert not seeds_global_random(["import numpy as np\nrng = np.random.default_rng(0)"])
    assert not seeds_global_random(["def seed(n):\n    pass\nseed(0)"])
    assert not seeds_global_random(["import numpy as np\nx = np.random.rand()"])
    assert not seeds_global_random(["%matplotlib inline\nimport random", "random.random("])


SEEDED = [
    (["imports"], "import numpy as np\nnp.random.seed(0)"),
    (["step:a"], "a = float(np.random.rand())"),
    (["step:b"], "b = float(np.random.rand())"),
    (["step:c"], "c = a + 1"),
]


def test_each_step_of_a_seeded_notebook_continues_the_one_before(tmp_path):
    spec = spec_of(tmp_path, SEEDED)
    assert dict(spec.step("b").inputs) == {RANDOM_STATE: "a"}
    assert RANDOM_STATE in spec.step("a").outputs
    assert dict(spec.step("c").inputs) == {"a": "a", RANDOM_STATE: "b"}
    assert RANDOM_STATE not in spec.step("c").outputs  # nothing after it
    text = render_step(spec.step("b"), spec.notebooks[0], spec)
    assert f"_mlops_nb.restore_random(_mlops_nb.load('a', {RANDOM_STATE!r}))" in text
    assert f"{RANDOM_STATE!r}: _mlops_nb.random_state()" in text


def test_an_unseeded_notebook_hands_no_random_state(tmp_path):
    spec = spec_of(tmp_path, [(tags, src.replace("np.random.seed(0)", ""))
                              for tags, src in SEEDED])
    assert all(RANDOM_STATE not in s.outputs for s in spec.steps)
    assert spec.step("b").upstream == ()  # independent steps stay independent


def test_a_step_that_must_run_before_its_notebook_predecessor_is_named(tmp_path, caplog):
    cells = [SEEDED[0], (["step:a", "prev:b"], "a = float(np.random.rand())"), SEEDED[2]]
    with caplog.at_level(logging.WARNING):
        spec = spec_of(tmp_path, cells)
    assert "step 'b' runs before step 'a'" in caplog.text and "nb.ipynb" in caplog.text
    assert RANDOM_STATE not in dict(spec.step("b").inputs)


# --- item 3: a string is not a path unless it names one -------------------------------------

def test_only_strings_that_name_a_file_or_a_folder_read_as_one_are_data(tmp_path):
    (tmp_path / "notebooks/imgs").mkdir(parents=True)
    (tmp_path / "notebooks/imgs/a.png").write_bytes(b"x")
    (tmp_path / "notebooks/data.csv").write_text("a\n1\n")
    spec = spec_of(tmp_path, [
        (["imports"], "import os\nimport pandas as pd"),
        (["step:report"], "x = 0.5\nprint(f'accuracy {x:.3f}.')\nsep = '.'\nhere = './'\n"
                          "label = 'imgs'"),
        (["step:slash"], "folder = 'imgs/'"),  # written as a folder: `path + 'a.png'`
        (["step:load"], "df = pd.read_csv('data.csv')\nfiles = os.listdir('imgs')"),
        (["step:named"], "SOURCE = 'data.csv'\nn = len(SOURCE)"),
    ])
    assert spec.step("report").data_deps == ()
    assert spec.step("slash").data_deps == ("notebooks/imgs",)
    assert spec.step("load").data_deps == ("notebooks/data.csv", "notebooks/imgs")
    assert spec.step("named").data_deps == ("notebooks/data.csv",)  # names an existing file


# --- item 4: a loop variable reused in a helper links nothing it did not touch ------------

def test_a_reused_loop_variable_does_not_make_a_constant_changed(tmp_path):
    spec = spec_of(tmp_path, [
        (["functions"], "KEYS = ['a', 'b']\n\n\ndef fill(d):\n    for key in KEYS:\n"
                        "        print(key)\n    for key in d:\n        d[key] = 1\n"
                        "    return d\n\n\ndef tag(rows):\n    for row in rows:\n"
                        "        r = row\n        r['seen'] = True\n    return rows"),
        (["step:a"], "d = fill({'x': 0})\ntable = [{'k': 1}]\nt = tag(table)"),
        (["step:b"], "n = len(KEYS) + len(d) + len(table)"),
    ])
    assert "KEYS" not in spec.step("a").outputs
    assert dict(spec.step("b").inputs).get("KEYS") is None  # the functions cell's own
    # a change through a loop variable still changes what it iterates over
    assert set(spec.step("a").outputs) == {"d", "table"}
