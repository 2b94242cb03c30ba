"""Nothing partial or failed is ever up to date, and the three runners agree on what is
(issue 16; issue 11 item 8): a failure under any runner, bit rot that keeps size and
mtime, edits of a step's metrics (not of its executed notebook), DVC's run-cache restores, and
Ploomber after another runner built the pipeline."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import built_once, git_project, make_nb, sh

pytestmark = pytest.mark.slow

RUNNERS = {
    "run": ["mlops-nb", "run"],
    "dvc": ["dvc", "repro"],
    "ploomber": ["ploomber", "build"],
}

CHAIN = [
    (["parameters"], "N = 5\nK = 1"),
    (["step:a"], "x = list(range(N))"),
    (["step:b"], "y = sum(x) * K"),
    (["pipeline-metrics"], "print(y)"),
]


def _project(root: Path, cells: list) -> Path:
    """The project of `cells` in `root`: git init, dvc init, compile and commit are done once
    per session for each notebook, in a template that each test copies (built_once; git and
    DVC take a copied repository as it is; nothing has run in it, so it has no outputs to
    trust)."""

    def build(template: Path) -> None:
        make_nb(template / "notebooks/nb.ipynb", cells)
        git_project(template)
        sh(["mlops-nb", "compile"], template)
        sh(["git", "add", "-A"], template)
        sh(["git", "commit", "-qm", "compiled"], template)

    key = "up_to_date." + hashlib.sha256(json.dumps(cells).encode()).hexdigest()[:16]
    shutil.copytree(built_once(key, build, "proj"), root, symlinks=True, dirs_exist_ok=True)
    assert sh(["git", "status", "--porcelain"], root).stdout == ""
    return root


def status_of(root: Path) -> dict[str, str]:
    out = sh(["mlops-nb", "status"], root).stdout
    return {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines() if line.strip()}


def ran(runner: str, res) -> set[str]:
    """The steps a runner's output says it ran."""
    text = res.stdout + res.stderr
    if runner == "dvc":
        return {line.split("'")[1] for line in text.splitlines()
                if line.startswith("Running stage '")} - {"notebooks-compiled"}
    if runner == "ploomber":
        return {line.split()[0] for line in text.splitlines() if " True " in f" {line} "}
    return {line.split(":")[0] for line in text.splitlines() if line.endswith(": done")}


def restored(res) -> set[str]:
    """The stages `dvc repro` brought back from its run-cache instead of running them."""
    return {line.split("'")[1] for line in res.stdout.splitlines()
            if line.startswith("Stage '") and "is cached - skipping run" in line}


def _set_param(root: Path, key: str, value: int) -> None:
    params = root / "params.yaml"
    text = params.read_text()
    lines = [f"  {key}: {value}" if line.strip().startswith(f"{key}:") else line
             for line in text.splitlines()]
    params.write_text("\n".join(lines) + "\n")


# -- a failed step without data outputs is not up to date ----------------------------------

PROMOTE = [
    (["step:a"], "x = 1"),
    (["step:promote"], "import pathlib\n"
                       "assert not pathlib.Path('registry_down').exists(), 'registry down'\n"
                       "print(x)"),
]


@pytest.mark.parametrize("runner", ["dvc", "ploomber"])
def test_a_step_without_outputs_that_failed_is_not_up_to_date(project, runner):
    root = _project(project, PROMOTE)
    sh(["mlops-nb", "run"], root)
    # .mlops_nb/state.json as an older mlops-nb run left it: a record of promote's success
    # (a runner other than mlops-nb run never touches that file)
    state = root / ".mlops_nb/state.json"
    data = json.loads(state.read_text())
    done = json.loads((root / "outputs/promote/.mlops_nb-done.json").read_text())
    data["steps"]["promote"].update(fingerprint=done["fingerprint"], outputs={})
    state.write_text(json.dumps(data))
    (root / "notebooks/registry_down").write_text("1")  # fails for a reason outside its inputs
    force = ["-f", "-s", "promote"] if runner == "dvc" else ["-f"]
    res = sh(RUNNERS[runner] + force, root, check=False)
    assert res.returncode != 0 and "registry down" in res.stdout + res.stderr
    status = status_of(root)
    assert status["promote"].startswith("failed") and "registry down" in status["promote"]
    (root / "notebooks/registry_down").unlink()
    res = sh(RUNNERS[runner], root)
    assert "promote" in ran(runner, res)
    assert status_of(root)["promote"] == "up to date"


# -- bit rot that keeps size and mtime ----------------------------------------------------


def _rot(path: Path) -> None:
    """Change a byte, keeping the file's size and modification time (as bit rot does)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[1] = ord("9") if data[1] != ord("9") else ord("8")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


@pytest.mark.parametrize("runner", ["run", "dvc", "ploomber"])
def test_bit_rot_found_on_load_reruns_the_producing_step(project, runner):
    root = _project(project, CHAIN)
    sh(RUNNERS[runner], root)
    assert set(status_of(root).values()) == {"up to date"}  # hashes known by size and mtime
    _rot(root / "outputs/a/x/data.json")
    assert set(status_of(root).values()) == {"up to date"}  # unseen until a step loads it
    _set_param(root, "K", 2)  # b must load x again
    res = sh(RUNNERS[runner], root, check=False)
    text = res.stdout + res.stderr
    if runner == "run":  # the producer reruns at once, then b
        assert res.returncode == 0, text
        assert "a: an output changed after it was written: running again" in text
    else:
        assert res.returncode != 0
        assert "changed after its step wrote it" in text
        assert "reruns 'a' first" in text
        res = sh(RUNNERS[runner], root)  # not a failure for good: the producer reruns
        if runner == "ploomber":
            assert ran(runner, res) == {"a", "b"}
    assert json.loads((root / "outputs/b/metrics.json").read_text()) == {"y": 20}
    assert set(status_of(root).values()) == {"up to date"}
    assert sh(["mlops-nb", "run"], root).stdout.strip().endswith("ran 0, up to date 2")


def test_status_verify_finds_bit_rot_before_any_step_loads_it(project):
    root = _project(project, CHAIN)
    sh(RUNNERS["run"], root)
    assert set(status_of(root).values()) == {"up to date"}  # hashes known by size and mtime
    _rot(root / "outputs/a/x/data.json")
    assert set(status_of(root).values()) == {"up to date"}  # so the rot is unseen
    out = sh(["mlops-nb", "status", "--verify"], root).stdout
    assert "a  changed (outputs missing or changed)" in out, out
    assert "b  up to date (reruns if a changes what it reads)" in out, out
    # what verify found is remembered: a plain status and run see it too
    assert status_of(root)["a"] == "changed (outputs missing or changed)"
    res = sh(RUNNERS["run"], root)
    assert ran("run", res) == {"a"}, res.stdout
    assert json.loads((root / "outputs/b/metrics.json").read_text()) == {"y": 10}
    out = sh(["mlops-nb", "status", "--verify"], root).stdout
    assert set(status_of(root).values()) == {"up to date"}, out


# -- a step's metrics file is an output; its executed notebook decides nothing -------------


@pytest.mark.parametrize("runner", ["run", "dvc", "ploomber"])
def test_edited_metrics_make_the_step_rerun_an_edited_executed_notebook_not(project, runner):
    root = _project(project, CHAIN)
    sh(RUNNERS[runner], root)
    # whichever runner built it, DVC agrees (dvc.lock entries: issue 26, item 6)
    assert "up to date" in sh(["dvc", "status"], root).stdout
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "built", "--allow-empty"], root)
    # the executed notebook is for reading: its bytes (an address, a time) decide nothing
    nb = root / "outputs/b/b.ipynb"
    doc = json.loads(nb.read_text())
    doc["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "edited",
                         "id": "edited"})
    nb.write_text(json.dumps(doc))
    assert set(status_of(root).values()) == {"up to date"}
    assert "up to date" in sh(["dvc", "status"], root).stdout
    res = sh(RUNNERS[runner], root)
    assert ran(runner, res) | restored(res) == set()
    assert "edited" in nb.read_text()
    (root / "outputs/b/metrics.json").write_text('{"y": 1000}\n')
    status = status_of(root)
    assert status["b"].startswith("changed"), status
    assert status["a"] == "up to date"
    res = sh(RUNNERS[runner], root)
    assert ran(runner, res) | restored(res) == {"b"}
    assert json.loads((root / "outputs/b/metrics.json").read_text()) == {"y": 10}
    assert set(status_of(root).values()) == {"up to date"}


# -- DVC's run-cache restores -------------------------------------------------------------


def _agree_with_dvc(root: Path) -> None:
    dvc = json.loads(sh(["dvc", "status", "--json"], root).stdout or "{}")
    ours = status_of(root)
    for step, said in ours.items():
        assert said.startswith("up to date") == (step not in dvc), (step, said, dvc)


def test_status_agrees_with_dvc_after_run_cache_restores(project):
    root = _project(project, CHAIN)
    sh(["dvc", "repro"], root)
    _agree_with_dvc(root)
    _set_param(root, "N", 6)
    _agree_with_dvc(root)  # both see a changed parameter
    sh(["dvc", "repro"], root)
    _set_param(root, "N", 5)
    res = sh(["dvc", "repro"], root)  # back: both stages from the run-cache, new mtimes
    assert "is cached - skipping run" in res.stdout and not ran("dvc", res)
    _agree_with_dvc(root)
    assert set(status_of(root).values()) == {"up to date"}
    _set_param(root, "K", 3)
    sh(["dvc", "repro"], root)
    _set_param(root, "K", 1)
    _agree_with_dvc(root)
    res = sh(["dvc", "repro", "-s", "b"], root)  # only b from the run-cache
    assert "is cached - skipping run" in res.stdout
    _agree_with_dvc(root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "built"], root)
    for folder in ("outputs/a", "outputs/b"):  # deleted, then checked out from DVC's cache
        sh(["rm", "-rf", folder], root)
    _agree_with_dvc(root)
    sh(["dvc", "checkout"], root)
    _agree_with_dvc(root)
    assert set(status_of(root).values()) == {"up to date"}
    sh(["rm", "-rf", "outputs"], root)
    res = sh(["dvc", "repro"], root)  # restored from the run-cache
    assert not ran("dvc", res)
    _agree_with_dvc(root)
    assert set(status_of(root).values()) == {"up to date"}


# -- Ploomber after another runner ------------------------------------------------------


def _mtimes(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (root / "outputs").rglob("*.ipynb")}


THREE = [
    (["parameters"], "N = 5"),
    (["step:a"], "x = list(range(N))"),
    (["step:b"], "y = sum(x)"),
    (["step:c"], "z = y + 1"),
    (["pipeline-metrics"], "print(z)"),
]


@pytest.mark.parametrize("first", ["run", "dvc"])
def test_ploomber_build_after_another_runner_runs_nothing(project, first):
    root = _project(project, THREE)
    sh(RUNNERS[first], root)
    before = _mtimes(root)
    res = sh(["ploomber", "build"], root)
    assert ran("ploomber", res) == set(), res.stdout
    assert _mtimes(root) == before
    assert ran("ploomber", sh(["ploomber", "build"], root)) == set()
    # an edit of one step: that step and its downstream rerun, no more
    nb = root / "notebooks/nb.ipynb"
    nb.write_text(nb.read_text().replace("y = sum(x)", "y = sum(x) + 1"))
    sh(["mlops-nb", "compile"], root)
    res = sh(["ploomber", "build"], root)
    assert ran("ploomber", res) == {"b", "c"}
    assert _mtimes(root)["a.ipynb"] == before["a.ipynb"]
    assert json.loads((root / "outputs/c/metrics.json").read_text()) == {"z": 12}
    # and the other runners agree that nothing is left to do
    assert set(status_of(root).values()) == {"up to date"}
    assert sh(["mlops-nb", "run"], root).stdout.strip().endswith("ran 0, up to date 3")


def test_ploomber_build_force_still_runs_every_task(project):
    root = _project(project, CHAIN)
    sh(["mlops-nb", "run"], root)
    res = sh(["ploomber", "build", "-f"], root)
    assert ran("ploomber", res) == {"a", "b"}
    # Ploomber's own parameter override reaches the step, typed, and reruns only the steps it
    # feeds (K is b's); made with other values than params.yaml's, b is changed for mlops-nb
    res = sh(["ploomber", "build", "--env--nb--K", "3"], root)
    assert ran("ploomber", res) == {"b"}, res.stdout
    assert '"K = 3\\n"' in (root / "outputs/b/b.ipynb").read_text()
    assert json.loads((root / "outputs/b/metrics.json").read_text()) == {"y": 30}
    status = status_of(root)
    assert status["b"].startswith("changed") and status["a"] == "up to date", status
