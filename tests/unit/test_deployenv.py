"""deploy's environment cache: folders of the user's own, never links or others' folders;
the project's lock found only as a regular file (threat model, README)."""

from __future__ import annotations

import os

import pytest

from mlops_nb.artifacts.trust import CACHE_ENV
from mlops_nb.ci import deployenv
from mlops_nb.errors import DeployRefused, UsageError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    home = tmp_path / "cache"
    home.mkdir(mode=0o700)
    monkeypatch.setenv(CACHE_ENV, str(home))
    return home


def test_a_symlinked_or_shared_envs_folder_is_refused(cache, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (cache / "deploy-envs").symlink_to(elsewhere)
    with pytest.raises(DeployRefused, match="deploy-envs is a symlink or not a folder"):
        deployenv.envs_home()
    (cache / "deploy-envs").unlink()
    (cache / "deploy-envs").mkdir()
    os.chmod(cache / "deploy-envs", 0o777)
    with pytest.raises(DeployRefused, match="writable by others"):
        deployenv.envs_home()
    os.chmod(cache / "deploy-envs", 0o700)
    assert deployenv.envs_home() == cache / "deploy-envs"


def test_a_planted_environment_link_is_never_run(cache, tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("numpy==2.0.0\n")
    planted = tmp_path / "planted"
    (planted / "bin").mkdir(parents=True)
    (planted / deployenv._DONE).touch()
    envs = deployenv.envs_home()
    (envs / deployenv.digest(lock)).symlink_to(planted)
    with pytest.raises(DeployRefused, match="is a symlink or not a folder"):
        deployenv.python_of(lock)


def test_the_lock_is_the_projects_own_regular_file(tmp_path):
    with pytest.raises(UsageError, match="has no requirements.lock or requirements.txt"):
        deployenv.find_lock(tmp_path)
    (tmp_path / "other").write_text("x\n")
    (tmp_path / "requirements.lock").symlink_to(tmp_path / "other")
    with pytest.raises(UsageError, match="requirements.lock is a symlink"):
        deployenv.find_lock(tmp_path)
    (tmp_path / "requirements.lock").unlink()
    (tmp_path / "requirements.txt").write_text("numpy\n")
    assert deployenv.find_lock(tmp_path).name == "requirements.txt"


def test_processes_in_the_environment_compile_their_imports_and_see_nothing_from_outside(
        monkeypatch):
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # as containers and this machine set it
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("MLOPS_NB_ROOT", "/a/project")
    env = deployenv.process_env("MLOPS_NB_ROOT")
    assert not {"PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "MLOPS_NB_ROOT"} & set(env)
    assert env["PATH"] == os.environ["PATH"]
    assert deployenv.process_env()["MLOPS_NB_ROOT"] == "/a/project"
