"""`mlops-nb ci run`: the CI workflow's steps, on one machine, in a worktree of HEAD.

The generated workflows (`ci init`) call this command and nothing else of their own, so a CI
run and a local one do the same: compile --check, the project's tests, `dvc pull` when a
remote is configured, `dvc repro` (data validation and the gate run inside the pipeline),
the notebook's test cells, then a report against the base commit. A step that fails stops
those that need it and the run exits non-zero; the report is written in every case.

With `deploy` (the main branch), the gate registers into the project's own registry without
promoting, and each version it registered goes through `deploy --to staging`, then
`deploy --to production`, each a check of the run (ci/deploy.py's checks and lineage events).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mlops_nb.ci import celltests, report, workspace
from mlops_nb.ci.result import FAILED, OK, SKIPPED, Check, CiResult

log = logging.getLogger(__name__)
_TAIL = 40  # lines of a failed command's output kept in the report

def _dvc() -> str:
    here = Path(sys.executable).with_name("dvc")
    return str(here) if here.exists() else (shutil.which("dvc") or "dvc")


def _run(check: Check, cmd: list[str], cwd: Path, env: dict[str, str],
         ok_codes: tuple[int, ...] = (0,)) -> bool:
    start = time.monotonic()
    log.info("ci: %s", shlex.join(cmd))
    res = subprocess.run(cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True,
                         text=True, stdin=subprocess.DEVNULL)
    check.seconds = time.monotonic() - start
    check.outcome = OK if res.returncode in ok_codes else FAILED
    if check.outcome == FAILED:
        lines = (res.stdout + res.stderr).splitlines()
        check.output = "\n".join(lines[-_TAIL:])
        check.detail = f"exit {res.returncode}"
    return check.outcome == OK


def run(root: Path, base_ref: str = "main", tests: str | None = None,
        promote: bool = False, deploy: bool = False) -> CiResult:
    """Run the CI steps on HEAD in a temporary worktree; `tests` is the project's test
    command (None: `python -m pytest -q` when a tests/ folder exists; "" skips)."""
    dvc = _dvc()
    with workspace.worktree(root, dvc, promote or deploy, register_only=deploy) as ws:
        base = workspace.resolve(root, base_ref)
        result = CiResult(ws.commit, base, base_ref, ws.dirty)
        before = _versions(root) if deploy else set()
        _steps(result, ws, dvc, tests)
        if deploy and not result.failed:
            _deploy(result, root, sorted(_versions(root) - before))
        report.collect(result, ws, dvc)
        return result


def _versions(root: Path) -> set[tuple[str, int]]:
    from mlops_nb.guards.registry import Registry, default_root

    return {(v.name, v.version) for v in Registry(default_root(root)).versions()}


def _deploy(result: CiResult, root: Path, new: list[tuple[str, int]]) -> None:
    """Each version the run's gate registered: to staging, then to production."""
    from mlops_nb.ci.deploy import deploy
    from mlops_nb.errors import MlopsNbError

    if not new:
        result.checks.append(Check("deploy", SKIPPED, detail="the gate registered no new"
                                   " version"))
        return
    for name, version in new:
        for ref, to in ((f"{name}:{version}", "staging"), (f"{name}@staging", "production")):
            check = Check(f"deploy {name}:{version} to {to}")
            result.checks.append(check)
            start = time.monotonic()
            try:
                done = deploy(root, ref, to)
            except MlopsNbError as exc:
                check.outcome, check.detail = FAILED, str(exc).splitlines()[0][:300]
                check.seconds = time.monotonic() - start
                break
            check.outcome, check.seconds = OK, time.monotonic() - start
            check.detail = ", ".join(c.name for c in done.checks)


def _steps(result: CiResult, ws: workspace.Workspace, dvc: str, tests: str | None) -> None:
    me = [sys.executable, "-m", "mlops_nb"]
    env = {**ws.env, "PATH": _path()}  # stages run `python`: this environment's
    compiled = Check("compile --check")
    result.checks.append(compiled)
    _run(compiled, [*me, "compile", "--check"], ws.path, env)
    project_tests = Check("project tests")
    result.checks.append(project_tests)
    if tests is None:
        tests = f"{shlex.quote(sys.executable)} -m pytest -q" \
            if (ws.path / "tests").is_dir() else ""
    if tests:
        _run(project_tests, ["sh", "-c", tests], ws.path, env)
        project_tests.detail = project_tests.detail or tests
    else:
        project_tests.detail = "no tests/ folder and no --tests command"
    pull = Check("dvc pull")
    result.checks.append(pull)
    remotes = subprocess.run([dvc, "remote", "list"], cwd=ws.path, capture_output=True,
                             text=True, env={**os.environ, **env})
    if remotes.stdout.strip():
        _run(pull, [dvc, "pull", "--allow-missing"], ws.path, env)
    else:
        pull.detail = "no DVC remote configured"
    repro = Check("dvc repro")
    result.checks.append(repro)
    if compiled.outcome != OK:
        repro.detail = "the generated files are stale"
        return
    if not _run(repro, [dvc, "repro"], ws.path, env):
        return
    cells = Check("notebook tests")
    result.checks.append(cells)
    start = time.monotonic()
    result.cells = celltests.run_tests(ws.path)
    cells.seconds = time.monotonic() - start
    bad = [c for c in result.cells if c.outcome != celltests.PASSED]
    cells.outcome = FAILED if bad else OK
    cells.detail = f"{len(result.cells) - len(bad)} passed, {len(bad)} failed"
    cells.output = "\n".join(c.text_report() for c in bad)


def _path() -> str:
    return str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
