"""`mlops-nb test` and the pytest plugin run `test` cells in real kernels against the last
run's outputs, and name the notebook, the cell and the line of each failure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import cli, compiled_project, make_nb, sh

pytestmark = pytest.mark.slow

CELLS: list[tuple[list[str], str]] = [
    (["imports"], "import numpy as np"),
    (["functions"], "def double(v):\n    return 2 * v"),
    (["parameters"], "N = 4\nLABEL = 'a \"quoted\" label'"),
    (["step:make"], "xs = np.arange(N)\nnote = '''triple ''' + \"\\\"\"\nloss = [3.0, 2.0, 1.5]"),
    (["test"], "# losses go down\nassert all(a > b for a, b in zip(loss, loss[1:]))\n"
               "assert double(2) == 4 and LABEL.startswith('a')"),
    (["step:fit"], "mean = float(xs.mean())"),
    (["test:fit"], "expected = 1.5\nassert mean == expected, 'the mean of 0..N-1'\n"),
    (["test:fit"], "assert mean > 100, f\"\"\"mean is {mean}\n}}{{ $(touch PWNED) \"\"\""),
    (["test"], "print(undefined_name)"),
]


@pytest.fixture(scope="module")
def tested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("celltests") / "proj"
    root.mkdir()
    make_nb(root / "notebooks" / "it's \"odd\".ipynb", CELLS)
    compiled_project(root)
    cli(["run"], root)
    return root


def test_each_failing_test_cell_is_named_with_its_line(tested: Path):
    res = cli(["test", "--json", "out.json"], tested, check=False)
    assert res.returncode == 20, res.stdout + res.stderr
    out = res.stdout
    nb = "notebooks/it's \"odd\".ipynb"
    assert f"PASSED {nb} cell 5 [test:make] '# losses go down'" in out
    assert f"PASSED {nb} cell 7 [test:fit] 'expected = 1.5'" in out
    failed = out.split(f"FAILED {nb} cell 8 [test:fit]")[1]
    assert "line 1: assert mean > 100" in failed
    assert "AssertionError: mean is 1.5" in failed
    assert "mean = 1.5" in failed  # the values on the failing assert line
    assert f"FAILED {nb} cell 9 [test:fit] 'print(undefined_name)'" in out
    assert "NameError: name 'undefined_name' is not defined" in out
    assert "2 passed, 2 failed" in out
    assert "2 of 4 test cells failed" in res.stderr
    assert not (tested / "PWNED").exists()
    doc = json.loads((tested / "out.json").read_text())
    (tested / "out.json").unlink()
    assert [r["outcome"] for r in doc] == ["passed", "passed", "failed", "failed"]
    assert doc[2]["line"] == 1 and doc[2]["values"] == {"mean": "1.5"}


def test_selecting_a_step_runs_only_its_cells(tested: Path):
    res = cli(["test", "--step", "make"], tested)
    assert "1 passed, 0 failed" in res.stdout
    bad = cli(["test", "--step", "nope"], tested, check=False)
    assert bad.returncode == 2 and "no step named 'nope'" in bad.stderr


def test_a_test_of_a_step_never_run_says_to_run_it(tmp_path: Path):
    root = tmp_path / "proj"
    root.mkdir()
    make_nb(root / "notebooks" / "nb.ipynb", [(["step:a"], "x = 1"), (["test"], "assert x")])
    compiled_project(root)
    res = cli(["test"], root, check=False)
    assert res.returncode == 20
    assert "ERROR notebooks/nb.ipynb cell 2 [test:a]" in res.stdout
    assert "run it first: mlops-nb run a" in res.stdout


def test_the_pytest_plugin_shows_one_item_per_test_cell(tested: Path):
    listed = sh([sys.executable, "-m", "pytest", "-p", "mlops_nb.ci.pytest_plugin", "notebooks",
                 "-p", "no:cacheprovider", "--collect-only", "-q"], tested)
    ids = [ln for ln in listed.stdout.splitlines() if "::" in ln]
    assert [i.split("::")[1] for i in ids] == ["cell 5 [test:make]", "cell 7 [test:fit]",
                                               "cell 8 [test:fit]", "cell 9 [test:fit]"]
    res = sh([sys.executable, "-m", "pytest", "-p", "mlops_nb.ci.pytest_plugin", ids[0], ids[2],
              "-q", "-p", "no:cacheprovider", "-rA"], tested, check=False)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 failed, 1 passed" in res.stdout
    assert "cell 8 [test:fit]" in res.stdout and "line 1: assert mean > 100" in res.stdout
