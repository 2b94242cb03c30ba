"""A temporary git worktree of one commit, for `mlops-nb ci run`.

CI tests a commit, not a work tree: the worktree holds exactly what `git` holds, so a file
forgotten by `git add` fails here as it would on a CI machine. It shares the project's DVC
cache (outputs already computed for the same inputs come back instead of being recomputed),
and a throwaway copy of the model registry and lineage store, so the gate judges against the
project's production model and a pull request changes nothing of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlops_nb.errors import UsageError
from mlops_nb.guards.lineage import default_path as _lineage
from mlops_nb.guards.registry import default_root as _registry


@dataclass(frozen=True)
class Workspace:
    path: Path  # the worktree
    commit: str
    dirty: bool  # the project had uncommitted changes (which the worktree leaves out)
    env: dict[str, str]  # what every command of the run gets


def git(root: Path, *args: str, check: bool = True) -> str:
    res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise UsageError(f"git {' '.join(args)} failed in {root}: {res.stderr.strip()}")
    return res.stdout.strip()


def resolve(root: Path, ref: str) -> str | None:
    """The commit `ref` names, or None."""
    res = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                         cwd=root, capture_output=True, text=True)
    return res.stdout.strip() or None


def _dvc_cache(root: Path, dvc: str) -> Path:
    res = subprocess.run([dvc, "cache", "dir"], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"})
    out = res.stdout.strip()
    return Path(out) if res.returncode == 0 and out else root / ".dvc" / "cache"


@contextlib.contextmanager
def worktree(root: Path, dvc: str, promote: bool, register_only: bool = False
             ) -> Iterator[Workspace]:
    """A worktree of HEAD; with `promote`, the project's own registry and lineage store;
    `register_only`: the gate registers a passing model and promotes nothing (deploy does)."""
    commit = resolve(root, "HEAD")
    if commit is None:
        raise UsageError(f"{root} has no commit yet: commit the project first (git add -A &&"
                         " git commit)")
    dirty = bool(git(root, "status", "--porcelain", "--untracked-files=no"))
    scratch = Path(tempfile.mkdtemp(prefix="mlops-nb-ci-"))
    path = scratch / root.name
    git(root, "worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        cache = _dvc_cache(root, dvc)
        if (path / ".dvc").is_dir():
            subprocess.run([dvc, "cache", "dir", "--local", str(cache)], cwd=path,
                           capture_output=True, check=False,
                           env={**os.environ, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"})
        env = {"DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"}
        if promote:
            env["MLOPS_NB_REGISTRY"] = str(_registry(root))
            env["MLOPS_NB_LINEAGE"] = str(_lineage(root))
            if register_only:
                from mlops_nb.guards import REGISTER_ONLY_ENV

                env[REGISTER_ONLY_ENV] = "1"
        else:
            registry = scratch / "registry"
            if _registry(root).is_dir():
                shutil.copytree(_registry(root), registry, symlinks=True)
            env["MLOPS_NB_REGISTRY"] = str(registry)
            env["MLOPS_NB_LINEAGE"] = str(scratch / "lineage.db")
        yield Workspace(path, commit, dirty, env)
    finally:
        git(root, "worktree", "remove", "--force", str(path), check=False)
        shutil.rmtree(scratch, ignore_errors=True)
        git(root, "worktree", "prune", check=False)
