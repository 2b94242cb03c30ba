"""params.yaml means the same on every runner (issue 16).

Each case runs the real runners on one project: `mlops-nb compile`, `mlops-nb run`, `dvc
repro`, `ploomber build`. A bad params.yaml stops each of them before any step runs, with the
file, line, key and what to do; the file is never rewritten.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import cli, git_project, make_nb, sh

pytestmark = pytest.mark.slow

RUNNERS = {
    "compile": [sys.executable, "-m", "mlops_nb", "compile"],
    "run": [sys.executable, "-m", "mlops_nb", "run"],
    "dvc": ["dvc", "repro"],
    "ploomber": ["ploomber", "build"],
}


@pytest.fixture(scope="module")
def tuned_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two steps; the parameter of the second is tuned in params.yaml (N: 7). Built once (git
    init, dvc init, compile, commit); each test works on its own copy."""
    project = tmp_path_factory.mktemp("tuned") / "proj"
    project.mkdir()
    make_nb(project / "notebooks/nb.ipynb", [
        (["parameters"], "N = 100\nRATE = 0.5\nNAME = 'x'"),
        (["step:first"], "x = 1"),
        (["step:second"], "y = x + N * RATE\nprint(type(NAME).__name__, type(N).__name__)"),
    ])
    git_project(project)
    cli(["compile"], project)
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("N: 100", "N: 7"))
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-qm", "compiled, tuned"], project)
    return project


@pytest.fixture
def tuned(tuned_template: Path, tmp_path: Path) -> Path:
    """A copy of the template: git and DVC take a copied repository as it is (nothing in
    it names its folder), and a copy has no outputs to trust or not."""
    project = tmp_path / "proj"
    shutil.copytree(tuned_template, project, symlinks=True)
    assert sh(["git", "status", "--porcelain"], project).stdout == ""
    return project


def refused(root: Path, runner: str) -> str:
    """Run one runner on a bad params.yaml: it fails, exit 3 where the runner passes our code
    through (DVC says which command exited 3), runs no step and leaves the file as it was."""
    params = root / "params.yaml"
    before = params.read_bytes()
    res = sh(RUNNERS[runner], root, check=False)
    out = res.stderr + res.stdout
    if runner == "dvc":
        assert res.returncode != 0, out
    else:
        assert res.returncode == 3, (runner, out)
    assert "Traceback" not in out, out
    assert params.read_bytes() == before, runner
    assert not (root / "outputs").exists() or not any((root / "outputs").iterdir()), runner
    return out


EMPTY = {"0 bytes": "", "comments only": "# tuned by hand\n\n", "null": "null\n",
         "tilde": "~\n"}


# every kind of empty file on the cheapest runner (all kinds load as None through the same
# check), and one kind on each other runner, so each kind also meets a real runner
@pytest.mark.parametrize("runner,kind", [
    *(("compile", kind) for kind in EMPTY),
    ("run", "null"), ("dvc", "comments only"), ("ploomber", "0 bytes"),
])
def test_an_empty_params_yaml_is_an_error_never_refilled(tuned, runner, kind):
    text = EMPTY[kind]
    (tuned / "params.yaml").write_text(text)
    if runner == "ploomber":
        # Ploomber loads env.yaml (the link to params.yaml) before it imports anything of
        # ours and refuses a file that holds no mapping itself (exit 1, naming the file)
        res = sh(RUNNERS[runner], tuned, check=False)
        assert res.returncode != 0 and "params.yaml" in res.stderr, res.stderr
        assert "to be a dict but got 'NoneType'" in res.stderr, res.stderr
        assert (tuned / "params.yaml").read_text() == text
        assert not (tuned / "outputs").exists()
        return
    out = refused(tuned, runner)
    assert "params.yaml: is empty" in out, out
    assert "git checkout -- params.yaml" in out and "`mlops-nb compile`" in out, out
    if runner == "dvc":
        assert "--check-compiled, exited with 3" in out, out


@pytest.mark.parametrize("runner", ["compile", "run", "dvc", "ploomber"])
def test_a_duplicate_key_is_an_error_with_line_and_key(tuned, runner):
    (tuned / "params.yaml").write_text("nb:\n  N: 7\n  RATE: 0.5\n  NAME: x\n  N: 9\n")
    out = refused(tuned, runner)
    if runner == "dvc":  # DVC reads params.yaml itself first and refuses it, as strictly
        assert 'found duplicate key "N"' in out and "line: 5" in out, out
    else:
        assert "params.yaml:5:3: duplicate key 'nb.N' (first on line 2)" in out, out


@pytest.mark.parametrize("runner", ["compile", "run", "dvc", "ploomber"])
def test_a_value_of_the_wrong_type_stops_every_runner_before_its_first_step(tuned, runner):
    # the wrong value is the second step's: the first must not run either
    params = tuned / "params.yaml"
    params.write_text(params.read_text().replace("N: 7", 'N: "7"'))
    out = refused(tuned, runner)
    assert ("params.yaml:3:6: nb.N is '7' (a string), but notebook 'nb' declares N = 100"
            " (an integer); write 7 without quotes") in out, out
    if runner == "dvc":
        assert "--check-compiled, exited with 3" in out, out


@pytest.mark.parametrize("runner", ["compile", "run", "dvc", "ploomber"])
def test_a_wrong_runner_option_is_an_error_and_an_unknown_one_a_warning(tuned, runner):
    params = tuned / "params.yaml"
    good = params.read_text()
    params.write_text(good + "mlops_nb:\n  ploomber_jobs: two\n")
    out = refused(tuned, runner)
    assert "params.yaml:7:18: mlops_nb.ploomber_jobs must be a whole number of at least 1," \
           " not 'two'" in out, out
    params.write_text(good + "mlops_nb:\n  ploomber_job: 2\n")
    res = sh(RUNNERS[runner], tuned)
    assert "params.yaml:7: mlops_nb.ploomber_job is not an option of mlops_nb (did you mean" \
           " 'ploomber_jobs'?)" in res.stderr + res.stdout, res.stderr


def test_every_runner_passes_the_values_with_params_yaml_types(tuned):
    """A string that looks like a number stays a string (Ploomber casts what it renders: "1.0"
    would reach the step as a float), an int stays an int."""
    params = tuned / "params.yaml"
    params.write_text(params.read_text().replace("NAME: x", 'NAME: "1.0"'))
    for runner in ("run", "dvc", "ploomber"):
        sh(RUNNERS[runner] + (["--force"] if runner == "ploomber" else []), tuned)
        printed = (tuned / "outputs/second/second.ipynb").read_text()
        assert "str int" in printed, (runner, printed)


def test_ploomber_command_line_values_follow_the_notebooks_types(tuned):
    """`ploomber build --env--GROUP--NAME VALUE` overrides params.yaml for one build: a value
    of another type than the notebook declares stops the build before any task runs (exit 2,
    naming the option); one that fits reaches the step with Ploomber's value."""
    res = sh(["ploomber", "build", "--env--nb--N", "abc"], tuned, check=False)
    out = res.stderr + res.stdout
    assert res.returncode == 2, out
    assert "--env--nb--N 'abc': N must be an integer, as notebook 'nb' declares it" \
           " (params.yaml has 7)" in out, out
    assert "Traceback" not in out, out
    assert not (tuned / "outputs").exists() or not any((tuned / "outputs").iterdir())
    res = sh(["ploomber", "build", "--env--nb--RATE", "2"], tuned, check=False)  # int for float
    assert res.returncode == 0, res.stderr + res.stdout
    executed = json.loads((tuned / "outputs/second/second.ipynb").read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get(
        "tags", [])]
    assert "RATE = 2\n" in injected[0]["source"], injected
