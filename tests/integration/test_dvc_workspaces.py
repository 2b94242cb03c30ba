"""DVC runs the pipeline in places other than the workspace where its outputs were written: a
temporary copy (`dvc exp run --temp`), queue workers (`dvc exp run --queue`, `--run-all`),
`dvc exp apply`, `dvc checkout`, and a fresh clone after `dvc pull`. A step there that loads a
tree model (types skops does not trust by default) written by an unchanged step trusts it,
because the record of what the user's runs wrote is the user's and keyed by content
(artifacts/trust.py); another user's record does not vouch for it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlops_nb.artifacts.trust import CACHE_ENV
from mlops_nb.errors import ArtifactError
from tests.conftest import cli, compiled_project, make_nb, sh

pytestmark = pytest.mark.slow


def _build(root: Path) -> None:
    """make: a decision tree; use: loads it, and is the only step reading OFFSET. Run with
    `dvc repro` and its lock committed, as a user does before running experiments."""
    make_nb(root / "notebooks" / "flow.ipynb", [
        (["imports"], "from sklearn.datasets import load_iris\n"
                      "from sklearn.tree import DecisionTreeClassifier"),
        (["pipeline-parameters"], "OFFSET = 0"),
        (["step:make"], "X, y = load_iris(return_X_y=True)\n"
                        "model = DecisionTreeClassifier(random_state=0).fit(X, y)"),
        (["step:use"], "score = int(model.predict(X[:1])[0]) + OFFSET\nprint(score)"),
        (["pipeline-metrics"], "print(score)"),
    ])
    compiled_project(root)
    sh(["dvc", "repro", "-q"], root)
    sh(["git", "add", "dvc.lock"], root)
    sh(["git", "commit", "-qm", "lock"], root)


@pytest.fixture
def locked(tmp_path: Path, from_template) -> Path:
    return from_template("dvc-workspaces", _build, tmp_path / "proj")


def _score(root: Path) -> int:
    metrics = json.loads((root / "outputs" / "use" / "metrics.json").read_text())
    return int(metrics["score"])


def _add_step(root: Path) -> None:
    """A step added to the notebook, compiled (as compile on save in JupyterLab does): its
    step notebook is a file git does not track."""
    notebook = root / "notebooks" / "flow.ipynb"
    doc = json.loads(notebook.read_text())
    doc["cells"].append({"cell_type": "code", "execution_count": None, "id": "extra",
                         "metadata": {"tags": ["step:extra"]}, "outputs": [],
                         "source": "double = score * 2\nprint(double)"})
    notebook.write_text(json.dumps(doc, indent=1))
    cli(["compile"], root)
    assert "?? steps/extra.ipynb" in sh(["git", "status", "--porcelain"], root).stdout


def test_temp_and_queued_experiments_load_a_tree_from_an_unchanged_step(locked):
    """`--temp` and queued experiments whose `use` loads the tree of the unchanged `make`
    (restored from DVC's cache into the experiment's copy) run; an experiment whose copy lacks
    a step notebook git does not track fails naming the files to `git add`, and once added it
    runs. `dvc exp apply` and `dvc checkout` bring outputs back that load."""
    from mlops_nb.widgets.loader import load_step

    root = locked
    sh(["dvc", "exp", "run", "--temp", "-n", "temp1", "-S", "flow.OFFSET=1"], root)
    _add_step(root)
    sh(["dvc", "exp", "run", "--queue", "-n", "untracked", "-S", "flow.OFFSET=3"], root)
    sh(["git", "checkout", "--", "params.yaml"], root)
    # what the message will say to do, done before the queue runs (one run of the queue)
    sh(["git", "add", "steps/extra.ipynb"], root)
    sh(["dvc", "exp", "run", "--queue", "-n", "added", "-S", "flow.OFFSET=4"], root)
    sh(["git", "checkout", "--", "params.yaml"], root)
    sh(["dvc", "exp", "run", "--run-all"], root)  # exits 0 even when an experiment failed
    status = sh(["dvc", "queue", "status"], root).stdout
    states = {ln.split()[1]: ln.split()[-1] for ln in status.splitlines()[1:] if ln.strip()}
    assert states.get("untracked") == "Failed" and states.get("added") == "Success", status
    log = sh(["dvc", "queue", "logs", "untracked"], root).stdout
    assert "steps/extra.ipynb is not in the copy of the project DVC made" in log, log
    assert "run `git add steps/extra.ipynb`" in log and "run `mlops-nb compile`" not in log
    # `dvc exp apply` brings the experiment's outputs back (the tree too): they load here
    sh(["git", "reset", "-q", "--hard"], root)
    sh(["dvc", "exp", "apply", "added"], root)
    assert _score(root) == 4
    namespace: dict = {}
    load_step(root, "use", namespace)
    assert namespace["OFFSET"] == 4 and namespace["model"].predict(namespace["X"][:1])[0] == 0
    sh(["git", "reset", "-q", "--hard"], root)
    sh(["dvc", "exp", "apply", "temp1"], root)
    assert _score(root) == 1
    # back to the committed baseline: `dvc checkout` restores its outputs from the cache
    sh(["git", "reset", "-q", "--hard"], root)
    sh(["dvc", "checkout", "-q"], root)
    assert _score(root) == 0
    load_step(root, "use", {})


def test_a_fresh_clone_loads_what_its_user_pushed_and_another_user_does_not(locked,
                                                                            tmp_path):
    from mlops_nb.widgets.loader import load_step

    root = locked
    sh(["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")], root)
    sh(["dvc", "push", "-q"], root)
    sh(["git", "commit", "-qam", "remote"], root)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(root), str(clone)], tmp_path)
    sh(["dvc", "pull", "-q"], clone)
    assert not (clone / ".mlops_nb").exists()
    namespace: dict = {}
    load_step(clone, "use", namespace)
    assert namespace["model"].predict(namespace["X"][:1])[0] == 0
    old = os.environ[CACHE_ENV]
    os.environ[CACHE_ENV] = str(tmp_path / "another-user-cache")
    try:
        with pytest.raises(ArtifactError, match="data.skops needs types skops does not"
                                                " trust by default.*not written by your own"):
            load_step(clone, "use", {})
    finally:
        os.environ[CACHE_ENV] = old
