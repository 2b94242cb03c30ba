"""`mlops-nb export kfp --local` runs the exported package with kfp.local's SubprocessRunner
and gives what `mlops-nb run` and `dvc exp run -S` give."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, cli, compiled_project, git_project, make_nb, sh

pytest.importorskip("kfp.local")
pytestmark = pytest.mark.slow


def _local_run(root: Path, *extra: str) -> tuple[Path, str]:
    res = cli(["export", "kfp", "--local", *extra], root)
    folder = re.search(r"^local run: (\S+)$", res.stdout, re.M)
    assert folder, res.stdout
    return root / folder.group(1), res.stdout


def _kfp_metrics(run: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(run.glob("*/metrics"))}


def _run_metrics(root: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text())
            for p in sorted((root / "outputs").glob("*/metrics.json"))}


@pytest.fixture
def fan_project(tmp_path: Path) -> Path:
    root = tmp_path / "fan"
    shutil.copytree(REPO / "tests/fixtures/fanout", root)
    return compiled_project(root, "compile")


def test_fanout_local_run_equals_mlops_nb_run_and_follows_parameters(fan_project):
    root = fan_project
    run, out = _local_run(root)
    kfp_metrics = _kfp_metrics(run)
    assert kfp_metrics == {"combine": {"mean_square": 140.5, "total": 1635},
                           "report": {"reported": 1}}
    # where each artifact landed is printed, in KFP's typed folder format
    assert re.search(r"^  double\.doubled: \.mlops_nb/kfp-local/fan-\S+/double/doubled$",
                     out, re.M)
    assert json.loads((run / "double/doubled/meta.json").read_text())["format"] == "json"
    assert (run / "combine/notebook").read_text().startswith("<!DOCTYPE html>")
    assert "  combine metric total = 1635" in out
    cli(["run"], root)
    assert _run_metrics(root) == kfp_metrics
    # a parameter set for the local run changes the metrics as `dvc exp run -S` does
    sh(["dvc", "exp", "run", "-S", "fan.N=4", "-S", "fan.SCALE=3"], root)
    exp_metrics = _run_metrics(root)
    # ... and, with --data-uri, data files arrive through importers instead of the package
    # (a local folder stands for gs://...; the step would fail without the file)
    bucket = root.parent / "bucket"
    (bucket / "notebooks/data").mkdir(parents=True)
    shutil.copy(root / "notebooks/data/offset.txt", bucket / "notebooks/data/offset.txt")
    run2, _ = _local_run(root, "-S", "fan.N=4", "-S", "fan.SCALE=3", "--data-uri", str(bucket))
    assert "Nwo=" not in (root / "kfp/pipeline.yaml").read_text()  # not packaged
    assert _kfp_metrics(run2) == exp_metrics
    assert exp_metrics["combine"] != kfp_metrics["combine"]


def test_example_project_local_run_equals_mlops_nb_run(example_project):
    root = example_project
    cli(["run"], root)
    expected = _run_metrics(root)
    assert set(expected) == {"evaluate", "promote"}
    run, _ = _local_run(root)
    assert _kfp_metrics(run) == expected
    # a run here typed the artifacts: the model is a Model, the frames Datasets
    text = (root / "kfp/pipeline.yaml").read_text()
    assert "system.Model" in text and "system.Dataset" in text
    assert json.loads((run / "train/model/meta.json").read_text())["format"] == "skops"


def test_raising_step_fails_the_local_run_naming_step_and_cell(project):
    make_nb(project / "notebooks/fail.ipynb", [
        (["step:first"], "x = 1"),
        (["step:boom"], "y = x + 1\nraise ValueError('bad data')"),
        (["step:after"], "z = y * 2"),
    ])
    git_project(project)
    res = cli(["export", "kfp", "--local"], project, check=False)
    assert res.returncode == 5, res.stderr
    assert ("step 'boom' failed: notebooks/fail.ipynb cell 2 (`y = x + 1`): ValueError: bad data"
            in res.stderr)
    html = re.search(r"; open (\S+/boom/notebook) to see what ran", res.stderr)
    assert html and "ValueError" in Path(html.group(1)).read_text()
    assert not list((project / ".mlops_nb/kfp-local").glob("*/after"))



def test_hostile_names_and_a_2mb_data_file_run_locally(project):
    """Names, parameter values, tags and --env values made of quotes, backslashes, newlines,
    braces and shell substitutions reach the steps as data; a 2 MB data file reaches the
    step that reads it through the image's data folder, not the command line (Linux refuses
    one argument over 128 KiB)."""
    from tests.unit.test_export_kfp import EVIL, evil_project

    evil_project(project)
    blob = bytes(range(256)) * (2 * 1024 * 1024 // 256)
    (project / "notebooks/big.bin").write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    make_nb(project / "notebooks/big.ipynb", [
        (["step:read_big"], "import hashlib\n"
                            "size = len(open('big.bin', 'rb').read())\n"
                            f"assert hashlib.sha256(open('big.bin', 'rb').read()).hexdigest()"
                            f" == {digest!r}"),
    ])
    git_project(project)
    res = cli(["export", "kfp", "--local", "--env", f"H={EVIL}"], project, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    assert list(project.rglob("PWNED*")) == []
    assert (project / "kfp/data" / digest).stat().st_size == len(blob)
    text = (project / "kfp/pipeline.yaml").read_text()
    assert len(text) < 200_000  # the data is not in the package
    run = re.search(r"^local run: (\S+)$", res.stdout, re.M)
    assert run and list((project / run.group(1)).glob("read[-_]big/notebook"))


STEP_IMPORTS = """
import json, sys
from pathlib import Path
import kfp.dsl.executor_main  # what the pod's command runs
import mlops_nb.export.component, mlops_nb.export.html
from mlops_nb.execute.step import execute_step
for step in sys.argv[2:]:
    execute_step(Path(sys.argv[1]), step)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_image_requirements_hold_everything_the_steps_import(example_project):
    """The image's minimal lock is enough: every module the example's steps import, with the
    pod's executor and step runner, comes from a distribution the lock pins."""
    from importlib import metadata

    root = example_project
    cli(["export", "kfp"], root)
    lock = (root / "kfp/requirements.lock").read_text()
    pinned = {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
              for line in lock.splitlines() if "==" in line and not line.startswith("#")}
    steps = ["load", "prepare", "validate", "train", "evaluate", "promote"]
    res = sh([sys.executable, "-c", STEP_IMPORTS, str(root), *steps], root)
    modules = json.loads(res.stdout.strip().splitlines()[-1])
    by_module = metadata.packages_distributions()
    missing = {}
    for module in modules:
        if module in sys.stdlib_module_names or module.startswith("_") or module == "mlops_nb":
            continue
        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in by_module.get(module, [])}
        if dists and not dists & pinned:
            missing[module] = sorted(dists)
    # scikit-learn imports these when they are installed, inside try/except (its test
    # helpers, which skops' type scan imports, and its optional progress bars); coverage is
    # started in every process while the suite is measured (scripts/test.sh --cov)
    optional = {"pytest", "pluggy", "iniconfig", "rich", "coverage"}
    assert {m: d for m, d in missing.items() if not set(d) <= optional} == {}
