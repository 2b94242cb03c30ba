"""mlops_nb installs into a project of one's own (README, "Your own project"): the wheel built
from this checkout, installed into a fresh virtual environment that is never activated (as
`uv tool install` or `pipx install` leave it), makes a project with `mlops-nb init`, compiles
and runs it, and enables its Jupyter Server extension (and keeps Ploomber's, which breaks
JupyterLab 4, off). The versions are the lock's, so uv takes them from its cache."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, make_nb

pytestmark = pytest.mark.slow


def _uv() -> str:
    """The uv scripts/setup.sh installed (the one that made this .venv)."""
    version = re.search(r"^UV_VERSION=(\S+)$", (REPO / "scripts" / "setup.sh").read_text(),
                        re.M)
    assert version
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    uv = Path(cache) / "mlops_nb" / f"uv-{version.group(1)}" / "bin" / "uv"
    found = str(uv) if uv.exists() else shutil.which("uv")
    assert found, f"no uv at {uv}: run scripts/setup.sh"
    return found


def _env(**extra: str) -> dict[str, str]:
    """The user's shell: this checkout's .venv is not on PATH, nothing is activated."""
    here = os.path.dirname(os.path.realpath(REPO / ".venv" / "bin" / "python"))
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep)
            if p and os.path.realpath(p) not in (here, str(REPO / ".venv" / "bin"))]
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "MLOPS_NB_ROOT", "PYTHONHOME")}
    env.update(PATH=os.pathsep.join(path), DVC_NO_ANALYTICS="1", DO_NOT_TRACK="1",
               UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    env.update(extra)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{cmd} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


def test_the_built_wheel_makes_compiles_and_runs_a_project_from_a_fresh_venv(tmp_path):
    uv, env = _uv(), _env()
    src = tmp_path / "src"  # the tracked files as they are now: the build leaves no trace here
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    _run([uv, "build", "-q", "--wheel", "--out-dir", str(tmp_path / "dist"), str(src)],
         tmp_path, env)
    wheel, = (tmp_path / "dist").glob("mlops_nb-*.whl")
    venv = tmp_path / "venv"
    _run([uv, "venv", "-q", "--python", os.path.realpath(REPO / ".venv" / "bin" / "python"),
          str(venv)], tmp_path, env)
    _run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
          "--constraint", str(REPO / "requirements.lock"), str(wheel)], tmp_path, env)
    tool = str(venv / "bin" / "mlops-nb")
    root = tmp_path / "my project"
    _run([tool, "init", str(root)], tmp_path, env)
    make_nb(root / "notebooks" / "mine.ipynb", [
        (["imports"], "import pandas as pd"),
        (["pipeline-parameters"], "N = 3"),
        (["step:make"], "df = pd.DataFrame({'x': range(N)})"),
        (["step:total"], "total = int(df['x'].sum())\nprint(total)"),
        (["pipeline-metrics"], "print(total)"),
    ])
    _run([tool, "compile"], root, env)
    assert (root / "steps" / "total.ipynb").exists() and "total" in (root / "dvc.yaml").read_text()
    _run([tool, "run"], root, env)
    assert '"total": 3' in (root / "outputs" / "total" / "metrics.json").read_text()
    # the server extension comes enabled with the package; Ploomber's stays off, whatever
    # Ploomber's own file says (its wheel enables it). That file is replaced, never written
    # to: uv may have hard-linked it from its cache.
    conf = venv / "etc" / "jupyter" / "jupyter_server_config.d"
    (conf / "ploomber.json").unlink(missing_ok=True)
    (conf / "ploomber.json").write_text(
        '{"ServerApp": {"jpserver_extensions": {"ploomber": true}}}\n')
    listed = _run([str(venv / "bin" / "jupyter"), "server", "extension", "list"], root, env)
    listed = re.sub(r"\x1b\[[0-9;]*m", "", listed)  # its colours
    assert re.search(r"mlops_nb\s+enabled", listed), listed
    assert re.search(r"mlops_nb\s+[0-9.]+\s+OK", listed), listed
    assert re.search(r"\bploomber\s+disabled", listed), listed
