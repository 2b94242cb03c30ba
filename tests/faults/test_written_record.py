"""Only bytes this user's runs wrote are unpickled, or loaded with the tree types skops does
not trust by default: a planted output with a matching meta.json (and done marker) is refused
on every path that loads (a step under `mlops-nb run`, `%mlops load`, the registry); what the
user's runs wrote, and what DVC brings back of it (run-cache, checkout), loads. The record is
the user's (artifacts/trust.py): each test here gets a fresh one (`cache`), and "another user
or machine" is a process with another record."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlops_nb.artifacts.trust import CACHE_ENV
from mlops_nb.errors import ArtifactError, RegistryError
from tests.conftest import cli, compiled_project, make_nb, sh


class _Payload:
    """Unpickling it runs code: it creates the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _flow(root: Path) -> Path:
    """make: a set (pickled) and a decision tree (skops with sklearn.tree._tree.Tree);
    use: loads both."""
    make_nb(root / "notebooks" / "flow.ipynb", [
        (["imports"], "from sklearn.datasets import load_iris\n"
                      "from sklearn.tree import DecisionTreeClassifier"),
        (["step:make"], "X, y = load_iris(return_X_y=True)\nlabels = {1, 2, 3}\n"
                        "model = DecisionTreeClassifier(random_state=0).fit(X, y)"),
        (["step:use"], "total = sum(labels) + int(model.predict(X[:1])[0])\nprint(total)"),
    ])
    return compiled_project(root)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's user record (in `<cache>/written/`), empty at first."""
    home = tmp_path / "user-cache"
    monkeypatch.setenv(CACHE_ENV, str(home))
    return home


@contextmanager
def another_user(tmp_path: Path) -> Iterator[Path]:
    """What runs inside records into (and trusts) another user's record, not this one."""
    old = os.environ[CACHE_ENV]
    os.environ[CACHE_ENV] = str(tmp_path / "another-user-cache")
    try:
        yield Path(os.environ[CACHE_ENV])
    finally:
        os.environ[CACHE_ENV] = old


@pytest.fixture
def ran(tmp_path: Path, cache: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    _flow(root)
    cli(["run"], root)  # written by this project: the tree and the pickle load in `use`
    return root


def _plant(root: Path, var: str, data_file: str, payload: bytes) -> None:
    """Replace an output's data with `payload`, its meta.json's hash and the producing
    step's done marker to match, as anyone who writes (or hands over) the folder can."""
    folder = root / "outputs" / "make" / var
    (folder / data_file).write_bytes(payload)
    meta = json.loads((folder / "meta.json").read_text())
    meta["sha256"] = hashlib.sha256(payload).hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta))
    done = root / "outputs" / "make" / ".mlops_nb-done.json"
    record = json.loads(done.read_text())
    record["outputs"][var] = meta["sha256"]
    done.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def _foreign_tree(tmp_path: Path) -> bytes:
    """A tree model written elsewhere (another user, another machine)."""
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    from mlops_nb import artifacts

    X, y = load_iris(return_X_y=True)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "params.yaml").parent.mkdir(parents=True, exist_ok=True)
    (elsewhere / "params.yaml").write_text("{}\n")
    with another_user(tmp_path):
        artifacts.save(DecisionTreeClassifier(max_depth=1).fit(X, y), elsewhere / "m")
    return (elsewhere / "m" / "data.skops").read_bytes()


@pytest.mark.slow  # real kernels (the `ran` project) or dvc
def test_a_planted_pickle_is_refused_by_a_step_and_by_percent_mlops_load(ran, tmp_path):
    from mlops_nb.widgets.loader import load_step

    marker = tmp_path / "pwned"
    _plant(ran, "labels", "data.pkl", pickle.dumps(_Payload(marker)))
    res = cli(["run"], ran, check=False)
    assert res.returncode == 6, res.stdout + res.stderr
    assert "outputs/make/labels/data.pkl" in res.stderr
    assert "not written by your own runs" in res.stderr and "mlops-nb run make -f" in res.stderr
    assert "Traceback" not in res.stderr
    assert not marker.exists()
    namespace: dict = {}
    with pytest.raises(ArtifactError, match="not written by your own runs"):
        load_step(ran, "use", namespace)
    assert not marker.exists() and "labels" not in namespace
    # what the message says to do works: the step writes it again, and it loads
    cli(["run", "make", "-f"], ran)
    cli(["run"], ran)
    assert not marker.exists()


@pytest.mark.slow  # real kernels (the `ran` project) or dvc
def test_a_planted_tree_is_refused_and_one_the_project_wrote_loads(ran, tmp_path):
    from mlops_nb.widgets.loader import load_step

    namespace: dict = {}
    load_step(ran, "use", namespace)  # the tree this project wrote loads
    assert namespace["model"].predict(namespace["X"][:1]).shape == (1,)
    _plant(ran, "model", "data.skops", _foreign_tree(tmp_path))
    res = cli(["run"], ran, check=False)
    assert res.returncode == 6, res.stdout + res.stderr
    assert "outputs/make/model/data.skops" in res.stderr
    assert "sklearn.tree._tree.Tree" in res.stderr and "not written by your own runs" in res.stderr
    with pytest.raises(ArtifactError, match="skops does not trust by default"):
        load_step(ran, "use", {})


@pytest.mark.slow  # real kernels (the `ran` project) or dvc
def test_a_project_copied_from_another_user_does_not_trust_its_outputs(ran, tmp_path):
    """A folder handed over whole (outputs, meta.json, done markers): its pickles and trees
    load for the user whose runs wrote them (a copy, a clone, another workspace), not for
    another user."""
    from mlops_nb.widgets.loader import load_step

    copy = tmp_path / "copy"
    shutil.copytree(ran, copy, ignore=shutil.ignore_patterns(".mlops_nb"))
    namespace: dict = {}
    load_step(copy, "use", namespace)
    assert namespace["labels"] == {1, 2, 3}
    with another_user(tmp_path), pytest.raises(ArtifactError,
                                               match="not written by your own runs"):
        load_step(copy, "use", {})


def test_registry_refuses_a_planted_tree_and_pickle_and_loads_what_it_stored(tmp_path):
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    from mlops_nb.guards.registry import Registry

    root = tmp_path / "proj"
    (root / ".mlops_nb").mkdir(parents=True)
    reg = Registry(root / ".mlops_nb" / "registry")
    X, y = load_iris(return_X_y=True)
    reg.register("tree", DecisionTreeClassifier(random_state=0).fit(X, y), {})
    assert reg.load_model("tree", 1).predict(X[:1]).shape == (1,)
    reg.register("tree", DecisionTreeClassifier(random_state=0).fit(X, y), {})
    model = reg.get("tree", 2).path / "model"
    payload = _foreign_tree(tmp_path)
    (model / "data.skops").write_bytes(payload)
    meta = json.loads((model / "meta.json").read_text())
    meta["sha256"] = hashlib.sha256(payload).hexdigest()
    (model / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match="not stored by register"):
        reg.load_model("tree", 2)
    # a pickle planted in place of the model: refused even with allow_pickle
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker))
    (model / "data.skops").unlink()
    (model / "data.pkl").write_bytes(evil)
    meta.update(format="pickle", file="data.pkl", sha256=hashlib.sha256(evil).hexdigest())
    (model / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match="not stored by register"):
        reg.load_model("tree", 2, allow_pickle=True)
    assert not marker.exists()


def _legacy(ran: Path, cache: Path) -> Path:
    """`ran` as an older version left it: its record in `.mlops_nb/written/`, none in the
    user's."""
    project = ran / ".mlops_nb" / "written"
    project.mkdir(mode=0o700, parents=True)
    for entry in (cache / "written").iterdir():
        entry.rename(project / entry.name)
    return project


@pytest.mark.slow  # real kernels (the `ran` project) or dvc
@pytest.mark.parametrize("which", ["user", "project"])
def test_a_symlinked_record_is_refused_not_followed(ran, cache, tmp_path, which):
    from mlops_nb import artifacts

    record = cache / "written" if which == "user" else _legacy(ran, cache)
    shutil.rmtree(record)
    elsewhere = tmp_path / "elsewhere-record"
    elsewhere.mkdir()
    record.symlink_to(elsewhere)
    if which == "user":
        with pytest.raises(ArtifactError, match="symlink"):
            artifacts.save({4, 5}, ran / "outputs" / "make" / "other", project=ran)
        assert list(elsewhere.iterdir()) == []
    with pytest.raises(ArtifactError, match="symlink"):
        artifacts.load(ran / "outputs" / "make" / "labels", project=ran)


@pytest.mark.slow  # real kernels (the `ran` project) or dvc
def test_a_symlinked_cache_folder_component_is_refused(ran, cache, tmp_path, monkeypatch):
    """The cache folder's own links are resolved once (a user may link ~/.cache elsewhere);
    every component of the record is then opened without following links."""
    from mlops_nb import artifacts

    linked = tmp_path / "linked-cache"
    linked.symlink_to(cache)
    monkeypatch.setenv(CACHE_ENV, str(linked))
    assert artifacts.load(ran / "outputs" / "make" / "labels", project=ran) == {1, 2, 3}
    inner = tmp_path / "inner"
    (cache / "written").rename(inner)
    (cache / "written").symlink_to(inner)
    with pytest.raises(ArtifactError, match="symlink"):
        artifacts.load(ran / "outputs" / "make" / "labels", project=ran)


@pytest.mark.slow  # real kernels (the `ran` project) or dvc
def test_a_record_of_an_older_version_is_still_read_in_its_project(ran, cache, tmp_path):
    from mlops_nb import artifacts
    from mlops_nb.artifacts import trust

    _legacy(ran, cache)
    with pytest.raises(ArtifactError, match="not written by your own"):  # another project's
        artifacts.load(ran / "outputs" / "make" / "labels", project=tmp_path)
    assert artifacts.load(ran / "outputs" / "make" / "labels", project=ran) == {1, 2, 3}
    assert list((cache / "written").iterdir()) == []  # read, never copied to the user's
    # what is to be trusted in one folder alone (KFP's inputs) goes to that folder's record
    trust.record(tmp_path, "sha256-" + "ab" * 32, project_only=True)
    assert trust.written(tmp_path, "sha256-" + "ab" * 32)
    assert not trust.written(ran, "sha256-" + "ab" * 32)
    assert list((cache / "written").iterdir()) == []


@pytest.mark.slow  # real kernels (the `ran` project) or dvc
def test_outputs_dvc_restores_from_its_run_cache_still_load(tmp_path):
    from mlops_nb.widgets.loader import load_step

    root = tmp_path / "proj"
    root.mkdir()
    _flow(root)
    sh(["dvc", "repro", "-q"], root)
    shutil.rmtree(root / "outputs")
    res = sh(["dvc", "repro", "-v"], root)
    assert "skipping run" in res.stdout + res.stderr  # restored from the run-cache
    namespace: dict = {}
    load_step(root, "use", namespace)
    assert namespace["labels"] == {1, 2, 3}
    assert namespace["model"].predict(namespace["X"][:1]).shape == (1,)
    cli(["run", "use", "-f"], root)


@pytest.mark.slow  # real kernels (the `ran` project) or dvc
@pytest.mark.parametrize("which", ["user", "project"])
def test_a_record_others_could_write_to_vouches_for_nothing(ran, cache, which):
    from mlops_nb import artifacts
    from mlops_nb.artifacts import trust

    labels = ran / "outputs" / "make" / "labels"
    record = cache / "written" if which == "user" else _legacy(ran, cache)
    for mode in (0o777, 0o720):
        record.chmod(mode)
        with pytest.raises(ArtifactError, match="writable by other users.*chmod go-w"):
            artifacts.load(labels, project=ran)
    record.chmod(0o700)
    assert artifacts.load(labels, project=ran) == {1, 2, 3}
    if os.geteuid() != 0:
        return  # giving files away needs root; the checks above still ran
    entries = list(record.iterdir())
    os.chown(entries[0], 12345, 12345)  # an entry of another user vouches for nothing
    try:
        os.chown(record, 12345, 12345)
        with pytest.raises(ArtifactError, match="belongs to uid 12345"):
            artifacts.load(labels, project=ran)
        if which == "user":
            with pytest.raises(ArtifactError, match="belongs to uid 12345"):
                artifacts.save({4, 5}, ran / "outputs" / "make" / "other", project=ran)
    finally:
        os.chown(record, 0, 0)
    digest = entries[0].name
    assert not trust.written(ran, digest)
    os.chown(entries[0], 0, 0)
    assert trust.written(ran, digest)
    if which == "user":  # the cache folder holding the record, of another user
        os.chown(cache, 12345, 12345)
        try:
            with pytest.raises(ArtifactError, match=f"{cache} belongs to uid 12345"):
                artifacts.load(labels, project=ran)
        finally:
            os.chown(cache, 0, 0)
