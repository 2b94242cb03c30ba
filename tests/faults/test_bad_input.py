"""Bad input gets a clear error and exit 3 (a full disk exit 6), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli, fill_disk, make_nb, small_disk

LONG = "s" * 260


def _nb(path: Path, edit: dict) -> None:
    make_nb(path, [(["step:a"], "x = 1"), (["step:b"], "y = x")])
    doc = json.loads(path.read_text())
    for key, value in edit.items():
        if key.startswith("cell:"):
            doc["cells"][0][key[5:]] = value
        else:
            doc[key] = value
    path.write_text(json.dumps(doc))  # ensure_ascii: a lone surrogate stays a \\ud800 escape


CASES = {
    "lone surrogate": ({"cell:source": "x = '\ud800'"}, "lone surrogate"),
    "non-string in source": ({"cell:source": ["x = 1\n", 7]}, "'source' must be a string"),
    "nbformat as a string": ({"nbformat": "4"}, "'nbformat' must be a whole number"),
    "metadata a list": ({"metadata": []}, "'metadata' must be a JSON object"),
    "cell metadata a list": ({"cell:metadata": []}, "'metadata' must be a JSON object"),
    "step name of 260 characters": ({"cell:metadata": {"tags": [f"step:{LONG}"]}},
                                    "at most 100"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_notebook_is_exit_3_naming_the_file(project, case):
    edit, message = CASES[case]
    (project / "params.yaml").write_text("{}\n")
    _nb(project / "notebooks/nb.ipynb", edit)
    res = cli(["compile"], project, check=False)
    assert res.returncode == 3, res.stderr
    assert "notebooks/nb.ipynb" in res.stderr and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not (project / "steps").exists()


def test_a_parameter_named_like_a_python_internal_is_refused(project):
    (project / "params.yaml").write_text("{}\n")
    make_nb(project / "notebooks/nb.ipynb", [(["parameters"], "__builtins__ = 1"),
                                             (["step:a"], "x = 1")])
    res = cli(["compile"], project, check=False)
    assert res.returncode == 3 and "__builtins__" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_a_full_disk_while_compiling_is_exit_6_naming_the_disk(tmp_path):
    with small_disk(tmp_path / "disk", "1M") as disk:
        root = disk / "proj"
        (root / "notebooks").mkdir(parents=True)
        (root / "params.yaml").write_text("{}\n")
        make_nb(root / "notebooks/nb.ipynb", [(["step:a"], "x = 1"), (["step:b"], "y = x")])
        fill_disk(disk)
        res = cli(["compile"], root, check=False)
        assert res.returncode == 6, res.stderr
        assert "no space left on the disk holding" in res.stderr and str(root) in res.stderr
        assert "Traceback" not in res.stderr


DEEP = {
    "a sum of 100,000 terms": "x = " + "+".join(["1"] * 100_000),  # past Python's parser
    "a sum of 600 terms": "x = " + "+".join(["1"] * 600),  # Python runs it; deep for the analysis
    "600 elifs": "v = 0\nif v == 0:\n    x = 0\n" + "".join(
        f"elif v == {i}:\n    x = {i}\n" for i in range(1, 600)),
}


@pytest.mark.parametrize("case", sorted(DEEP))
def test_deeply_nested_code_is_exit_3_naming_the_cell(project, case):
    (project / "params.yaml").write_text("{}\n")
    make_nb(project / "notebooks/nb.ipynb", [(["step:a"], "y = 1"),
                                             (["step:b"], DEEP[case]), (["step:c"], "z = x")])
    res = cli(["compile"], project, check=False)
    assert res.returncode == 3, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "RecursionError" not in res.stderr
    assert "notebooks/nb.ipynb cell 2" in res.stderr and "nested too deeply" in res.stderr
    assert "split" in res.stderr, res.stderr
    assert not (project / "steps").exists()
