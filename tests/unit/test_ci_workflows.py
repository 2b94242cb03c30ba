"""`mlops-nb ci init` writes workflows that GitHub's and GitLab's schemas accept, built from
data: a hostile set-up command stays one string, and no script interpolates `${{ }}`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from mlops_nb.ci import workflows
from tests.conftest import cli

CHECK = str(Path(sys.executable).with_name("check-jsonschema"))
HOSTILE = "pip install -r 'req s.txt' && echo \"$(id)\" '''\n\\x {} ${{ github.token }} # x"


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "notebooks").mkdir(parents=True)
    (root / "params.yaml").write_text("{}\n")
    return root


def _scripts(value: object) -> list[str]:
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k in ("run", "script", "before_script",
                                                     "after_script") and isinstance(v, str)]
        found += [s for k, v in value.items() if k in ("script", "before_script",
                                                      "after_script") and isinstance(v, list)
                  for s in v]
        return found + [s for v in value.values() for s in _scripts(v)]
    if isinstance(value, list):
        return [s for v in value for s in _scripts(v)]
    return []


@pytest.mark.parametrize("setup", [None, HOSTILE])
def test_both_workflows_pass_their_schemas(tmp_path: Path, setup: str | None):
    root = _project(tmp_path)
    (root / "requirements.txt").write_text("mlops_nb\n")
    args = ["ci", "init", "--github", "--gitlab"] + (["--setup", setup] if setup else [])
    res = cli(args, root)
    assert "wrote .github/workflows/mlops.yml" in res.stdout
    gh, gl = root / workflows.GITHUB, root / workflows.GITLAB
    for schema, path in (("vendor.github-workflows", gh),
                         ("custom.github-workflows-require-timeout", gh),
                         ("vendor.gitlab-ci", gl)):
        extra = ["--data-transform", "gitlab-ci"] if "gitlab" in schema else []
        done = subprocess.run([CHECK, "--builtin-schema", schema, *extra, str(path)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    want = setup or "python -m pip install -r requirements.txt"
    gh_doc, gl_doc = YAML(typ="safe").load(gh.read_text()), YAML(typ="safe").load(gl.read_text())
    steps = gh_doc["jobs"]["pipeline"]["steps"]
    assert [s["run"] for s in steps if s.get("name", "").startswith("Set up")] == [want]
    assert gl_doc["mlops-nb"]["before_script"][0] == want
    # what a repository controls reaches scripts through the environment only
    ours = [s for s in _scripts(gh_doc) + _scripts(gl_doc) if s != want]
    assert ours and not any("${{" in s for s in ours)
    assert any("mlops-nb ci run" in s for s in _scripts(gh_doc))


def test_existing_files_and_symlinks_are_never_overwritten(tmp_path: Path):
    root = _project(tmp_path)
    gl = root / workflows.GITLAB
    gl.write_text("mine: {}\n")
    res = cli(["ci", "init", "--gitlab"], root, check=False)
    assert res.returncode == 2 and ".gitlab-ci.yml exists" in res.stderr
    assert gl.read_text() == "mine: {}\n"
    assert cli(["ci", "init", "--gitlab", "--force"], root).returncode == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / ".github").mkdir()
    (root / ".github" / "workflows").symlink_to(outside)
    res = cli(["ci", "init", "--github"], root, check=False)
    assert res.returncode == 6 and "is a symlink" in res.stderr
    assert list(outside.iterdir()) == []
    res = cli(["ci", "init"], root, check=False)
    assert res.returncode == 2 and "--github, --gitlab or both" in res.stderr
    res = cli(["ci", "init", "--github", "--setup", " "], root, check=False)
    assert res.returncode == 2 and "--setup" in res.stderr
