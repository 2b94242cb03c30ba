"""Every runner computes what the notebook computes top to bottom (issue 25)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import cli, compiled_project, make_nb, sh
from tests.reference import run_top_to_bottom

pytestmark = pytest.mark.slow

DRAWS = ("a", "ra", "b", "rb", "c", "rc")


def _seeded(root: Path) -> None:
    """Seeded once in the imports cell; each step draws from numpy's and Python's global
    generators (a scikit-learn call without random_state draws from numpy's too)."""
    make_nb(root / "notebooks/seeded.ipynb", [
        (["imports"], "import random\n\nimport numpy as np\nfrom sklearn.utils import shuffle\n"
                      "np.random.seed(0)\nrandom.seed(1)"),
        (["step:first"], "a = float(np.random.rand())\nra = random.random()"),
        (["step:second"], "b = float(np.random.rand())\nrb = random.random()"),
        (["step:third"], "c = float(shuffle(np.arange(10.0))[0] + np.random.rand())\n"
                         "rc = random.choice(range(1000)) + a"),
        (["pipeline-metrics"], "\n".join(f"print({d})" for d in DRAWS)),
    ])
    compiled_project(root)


def _metrics(root: Path) -> dict:
    out: dict = {}
    for path in sorted((root / "outputs").glob("*/metrics.json")):
        out.update(json.loads(path.read_text()))
    return out


def test_seeded_global_generators_draw_as_top_to_bottom_on_every_runner(tmp_path,
                                                                         from_template):
    root = from_template("faithful.seeded", _seeded, tmp_path / "seeded")
    tail = "import json\nprint('REF', json.dumps({" + ", ".join(
        f"'{d}': {d}" for d in DRAWS) + "}))"
    out = run_top_to_bottom(root / "notebooks/seeded.ipynb", tail=tail).read_text()
    match = re.search(r"REF (\{.*?\})", out.replace('\\"', '"'))
    assert match, out
    want = json.loads(match.group(1))
    assert want["a"] != want["b"]  # one sequence: the second draw is not the first again
    cli(["run"], root)
    assert _metrics(root) == want
    shutil.rmtree(root / "outputs")
    sh(["dvc", "repro"], root)
    assert _metrics(root) == want
    shutil.rmtree(root / "outputs")
    sh(["ploomber", "build", "--force"], root)
    assert _metrics(root) == want
