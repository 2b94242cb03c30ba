"""The README's quick start in its own order on one clone: demo, then tests (issue 11, item 11).

The demo must leave the working tree as it found it (tests copy params.yaml from it)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import REPO, sh, tool_env

pytestmark = pytest.mark.slow


def test_demo_leaves_the_working_tree_as_it_found_it(tmp_path):
    clone = tmp_path / "clone"
    # the tracked files as they are now (committed or not), in a repository of their own
    clone.mkdir()
    files = sh(["git", "ls-files", "-z"], REPO).stdout.split("\0")
    for rel in filter(None, files):
        src, dst = REPO / rel, clone / rel
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
            os.chmod(dst, src.stat().st_mode)
    (clone / "env.yaml").unlink(missing_ok=True)
    (clone / "env.yaml").symlink_to("params.yaml")
    sh(["git", "init", "-q"], clone)
    sh(["git", "add", "-A"], clone)
    sh(["git", "commit", "-qm", "clone"], clone)
    (clone / ".venv").symlink_to(REPO / ".venv")  # the set-up under test is setup.sh's own
    env = tool_env(MLOPS_NB_REGISTRY=str(tmp_path / "registry"),
                   MLOPS_NB_LINEAGE=str(tmp_path / "lineage.db"))
    res = subprocess.run(["bash", "scripts/demo.sh"], cwd=clone, env=env, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "N_ESTIMATORS" in res.stdout  # the experiment table was shown
    # the demo's two experiments stay in DVC, each with its parameters and metrics
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], clone).stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    assert len(exps) == 2
    rows = [run["data"] for e in exps for run in e["revs"]]
    params = [r["params"]["params.yaml"]["data"]["iris"] for r in rows]
    assert sorted((p["N_ESTIMATORS"], p["MAX_DEPTH"]) for p in params) == [(10, 2), (300, 8)]
    for r in rows:
        m = r["metrics"]["outputs/evaluate/metrics.json"]["data"]
        assert set(m) >= {"accuracy", "f1_macro"}
    table = sh(["dvc", "exp", "show", "--no-pager", "--md"], clone).stdout
    assert "accuracy" in table and "iris.N_ESTIMATORS" in table
    status = sh(["git", "status", "--porcelain"], clone).stdout.splitlines()
    assert [line for line in status if not line.endswith(".venv")] == []
    after = sh(["mlops-nb", "status"], clone).stdout  # the outputs DVC checked out are done
    assert all("up to date" in line for line in after.splitlines()), after
