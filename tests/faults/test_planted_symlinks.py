"""A repository can plant symlinks; nothing the package writes goes through them (issue 21.1).

A clone may carry a link at every `.NAME.tmp-PID` a writer would use, at a generated file,
or in place of a folder compile writes into. `mlops-nb compile` (what JupyterLab's compile on
save runs) must leave the file outside the project as it was: a temporary file is never a
planted name, a symlinked target or folder is refused with exit 6 naming it, and nothing of
the compile is written. The library's other writers (registry, lineage, run lock, state,
init, the serving log's folder) are checked in-process, with links planted at this
process's pid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_nb.errors import ArtifactError, LineageError, LockError
from tests.conftest import cli, git_project, make_nb, tool_env

ORIGINAL = "echo this stands for ~/.bashrc\n"
COMPILED = ["steps/first.ipynb", "steps/second.ipynb", "pipeline.yaml", "dvc.yaml",
            "params.yaml", ".mlops_nb/compiled.json", ".mlops_nb/seeded.json",
            ".mlops_nb/sources.json"]
# compile's child execs itself into `mlops-nb compile` once the links for its pid are planted
GATE = ("import os, sys; sys.stdin.buffer.read(1);"
        " os.execv(sys.executable, [sys.executable, '-m', 'mlops_nb', 'compile'])")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone's state: notebooks committed, nothing compiled yet."""
    root = tmp_path_factory.mktemp("planted") / "proj"
    root.mkdir()
    make_nb(root / "notebooks/nb.ipynb", [
        (["parameters"], "N = 3"),
        (["step:first"], "x = N"),
        (["step:second"], "y = x + 1"),
    ])
    return git_project(root)


@pytest.fixture
def proj(template: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "proj"
    shutil.copytree(template, dest, symlinks=True)
    return dest


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "home" / ".bashrc"
    path.parent.mkdir()
    path.write_text(ORIGINAL)
    return path


def plant_temps(root: Path, rels: list[str], pids: range, target: Path) -> int:
    """A link `.NAME.tmp-PID` -> target beside each file, for every pid; how many."""
    n = 0
    for rel in rels:
        folder = (root / rel).parent
        folder.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            (folder / f".{Path(rel).name}.tmp-{pid}").symlink_to(target)
            n += 1
    return n


def test_compile_never_writes_through_planted_temp_links(proj: Path, outside: Path) -> None:
    gate = subprocess.Popen([sys.executable, "-c", GATE], cwd=proj, env=tool_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        # the pid is known (exec keeps it); a clone would carry all 32,768 of them
        planted = plant_temps(proj, COMPILED, range(gate.pid - 50, gate.pid + 50), outside)
        out, err = gate.communicate(b"go", timeout=120)
    finally:
        if gate.poll() is None:
            gate.kill()
            gate.wait()
    assert gate.returncode == 0, err.decode()
    assert outside.read_text() == ORIGINAL
    for rel in COMPILED:
        path = proj / rel
        assert path.is_file() and not path.is_symlink(), rel
    links = [p for p in proj.rglob(".*.tmp-*") if p.is_symlink()]
    assert len(links) == planted  # each planted link is still there, untouched


def test_compile_on_save_never_writes_through_planted_temp_links(proj: Path,
                                                                outside: Path) -> None:
    """What JupyterLab's save runs (the server extension's hook), in this process."""
    from mlops_nb.widgets.server_ext import compile_saved

    plant_temps(proj, COMPILED, range(os.getpid(), os.getpid() + 1), outside)
    written = compile_saved(proj / "notebooks" / "nb.ipynb")
    assert written is not None and "pipeline.yaml" in written
    assert outside.read_text() == ORIGINAL
    assert not (proj / "pipeline.yaml").is_symlink()


@pytest.mark.parametrize("target", ["pipeline.yaml", "params.yaml", "dvc.yaml",
                                    "steps/first.ipynb", ".mlops_nb/compiled.json"])
def test_compile_refuses_a_symlinked_target(proj: Path, outside: Path, target: str) -> None:
    link = proj / target
    link.parent.mkdir(exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    res = cli(["compile"], proj, check=False)
    assert res.returncode == 6, res.stderr
    assert f"{target} is a symlink" in res.stderr and "remove it" in res.stderr
    assert outside.read_text() == ORIGINAL
    assert link.is_symlink()
    for rel in ("pipeline.yaml", "dvc.yaml", "steps/second.ipynb"):  # nothing written
        assert rel == target or not (proj / rel).exists(), rel


@pytest.mark.parametrize("folder", ["steps", ".mlops_nb"])
def test_compile_refuses_a_symlinked_folder(proj: Path, tmp_path: Path, folder: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (proj / folder).symlink_to(elsewhere)
    res = cli(["compile"], proj, check=False)
    assert res.returncode == 6, res.stderr
    assert f"{folder} is a symlink" in res.stderr
    assert list(elsewhere.iterdir()) == []
    assert not (proj / "pipeline.yaml").exists()


# --- the library's other writers, in this process: links planted at os.getpid() ----------

def _model() -> dict[str, int]:
    return {"w": 1}  # stored as JSON: no estimator needed to exercise the registry's writes


def test_registry_register_never_follows_a_planted_version_folder(tmp_path: Path) -> None:
    from mlops_nb.guards.registry import Registry

    reg, elsewhere = tmp_path / "registry", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (reg / "iris").mkdir(parents=True)
    (reg / "iris" / f".v1.tmp-{os.getpid()}").symlink_to(elsewhere)
    mv = Registry(reg).register("iris", _model(), {"acc": 1.0})
    assert mv.version == 1 and not (reg / "iris" / "v1").is_symlink()
    assert list(elsewhere.iterdir()) == []


def test_registry_stage_change_never_follows_a_planted_temp(tmp_path: Path,
                                                            outside: Path) -> None:
    from mlops_nb.guards.registry import Registry

    reg = Registry(tmp_path / "registry")
    reg.register("iris", _model(), {"acc": 1.0})
    folder = tmp_path / "registry" / "iris" / "v1"
    (folder / f".version.json.tmp-{os.getpid()}").symlink_to(outside)
    assert reg.promote("iris", 1).stage == "production"
    assert outside.read_text() == ORIGINAL
    assert not (folder / "version.json").is_symlink()


def test_registry_lock_file_symlink_is_refused(tmp_path: Path, outside: Path) -> None:
    from mlops_nb.guards.registry import Registry

    (tmp_path / "registry" / "iris").mkdir(parents=True)
    (tmp_path / "registry" / "iris" / ".lock").symlink_to(outside)
    with pytest.raises(ArtifactError, match=r"\.lock is a symlink"):
        Registry(tmp_path / "registry").register("iris", _model(), {"acc": 1.0})
    assert outside.read_text() == ORIGINAL  # open(.lock, "w") truncated it


def test_default_registry_and_lineage_refuse_a_symlinked_state_folder(
        proj: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_nb.guards import lineage, registry

    monkeypatch.delenv("MLOPS_NB_REGISTRY", raising=False)
    monkeypatch.delenv("MLOPS_NB_LINEAGE", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (proj / ".mlops_nb").symlink_to(elsewhere)
    with pytest.raises(ArtifactError, match=r"\.mlops_nb is a symlink"):
        registry.default_root(proj)
    with pytest.raises(ArtifactError, match=r"\.mlops_nb is a symlink"):
        lineage.default_path(proj)


@pytest.mark.parametrize("side", ["", "-wal"])
def test_lineage_store_refuses_planted_links(tmp_path: Path, side: str) -> None:
    from mlops_nb.guards.lineage import LineageStore, RunRecord

    store, target = tmp_path / "state" / "lineage.db", tmp_path / "elsewhere.db"
    store.parent.mkdir()
    Path(f"{store}{side}").symlink_to(target)  # SQLite would create and fill `target`
    run = RunRecord("r1", "succeeded", None, "2026-01-01T00:00:00", None, False, {}, ())
    with pytest.raises(LineageError, match="is a symlink"):
        LineageStore(store).record(run)
    assert not target.exists()


def test_run_lock_refuses_a_symlinked_state_folder(proj: Path, tmp_path: Path) -> None:
    from mlops_nb.execute.lock import run_lock

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (proj / ".mlops_nb").symlink_to(elsewhere)
    with pytest.raises(LockError, match=r"\.mlops_nb is a symlink"), run_lock(proj / ".mlops_nb"):
        pass
    assert list(elsewhere.iterdir()) == []


def test_state_and_hash_records_never_follow_planted_temps(proj: Path, outside: Path) -> None:
    from mlops_nb.execute.hashes import Hashes
    from mlops_nb.execute.state import save_state
    from mlops_nb.project import Layout

    plant_temps(proj, [".mlops_nb/state.json", ".mlops_nb/hashes.json"],
                range(os.getpid(), os.getpid() + 1), outside)
    save_state(Layout(proj), {"steps": {}})
    hashes = Hashes(proj)
    hashes.of(proj / "params.yaml")
    hashes.save()
    assert outside.read_text() == ORIGINAL
    for name in ("state.json", "hashes.json"):
        assert (proj / ".mlops_nb" / name).is_file()
        assert not (proj / ".mlops_nb" / name).is_symlink()


def test_init_never_appends_through_a_symlinked_gitignore(tmp_path: Path,
                                                          outside: Path) -> None:
    from mlops_nb.project import init

    root = tmp_path / "clone"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / ".dvc").mkdir()  # as if DVC were set up: only init's own writes are under test
    (root / ".gitignore").symlink_to(outside)
    with pytest.raises(ArtifactError, match=r"\.gitignore is a symlink"):
        init(root)
    assert outside.read_text() == ORIGINAL


def test_default_serving_log_folder_refuses_a_symlinked_state_folder(proj: Path,
                                                                     tmp_path: Path) -> None:
    from mlops_nb.serve.server import ServeSettings, log_dir

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (proj / ".mlops_nb").symlink_to(elsewhere)
    with pytest.raises(ArtifactError, match=r"\.mlops_nb is a symlink"):
        log_dir(ServeSettings(root=str(proj), ref="iris"))


def test_serving_log_never_appends_to_a_planted_hard_link(tmp_path: Path,
                                                          outside: Path) -> None:
    from mlops_nb.serve.reqlog import RequestLog

    folder = tmp_path / "serving"
    folder.mkdir()
    os.link(outside, folder / f"requests-{os.getpid()}.jsonl")  # another file of this user
    reqlog = RequestLog(folder)
    reqlog.start()
    try:
        assert reqlog.submit({"ts": 0, "request": "r"}, [{"x": 1}], [0])
        reqlog.flush()
    finally:
        reqlog.stop()
    assert outside.read_text() == ORIGINAL
    assert reqlog.written == 0
