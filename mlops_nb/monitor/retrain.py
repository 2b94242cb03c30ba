"""Start a retraining run through DVC: `dvc exp run --force` in the project, as a named
experiment. Its promote step passes the new model through the same validation gate as any
run, so retraining never promotes a model that does not beat production.

`--force` because monitoring asks for a new model even when DVC sees no changed dependency;
with updated data DVC would rerun the same stages anyway. The run's output goes to a log file
beside the monitoring report.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retraining:
    experiment: str
    command: list[str]
    exit_code: int
    seconds: float
    log: str
    decision: dict[str, Any] | None  # the gate's decision on the new model, from lineage

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _decision(root: Path, model: str, after: str) -> dict[str, Any] | None:
    """The newest gate decision on `model` recorded after `after` (an ISO time)."""
    from mlops_nb.errors import MlopsNbError
    from mlops_nb.guards import lineage

    try:
        runs = lineage.LineageStore(lineage.default_path(root)).runs(5)
    except MlopsNbError:
        return None
    for run in runs:
        if (run.get("finished") or "") < after:
            continue
        for event in run["models"]:
            if event["name"] == model:
                return {"run_id": run["run_id"], **event}
    return None


def retrain(root: Path, model: str, log_dir: Path, *, lock_fd: int | None = None,
            register_only: bool = False) -> Retraining:
    """Run the pipeline again as a DVC experiment; returns how it went. `lock_fd` (the
    retraining lock, monitor.lock) is handed to `dvc exp run`, so the lock lives as long as
    the experiment does. `register_only`: the gate registers a passing model and promotes
    nothing (the trigger deploys it to staging)."""
    from datetime import UTC, datetime

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    started_iso = datetime.now(UTC).isoformat()
    name = f"retrain-{model}-{stamp}"
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "--force", "--name", name]
    out = log_dir / f"{name}.log"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"}
    if register_only:
        from mlops_nb.guards import REGISTER_ONLY_ENV

        env[REGISTER_ONLY_ENV] = "1"
    log.warning("retraining: %s (output in %s)", " ".join(cmd[1:]), out)
    start = time.perf_counter()
    fd = atomic.open_append(out, root=atomic.boundary(out, root), mode=0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        code = subprocess.run(cmd, cwd=root, stdout=f, stderr=subprocess.STDOUT, env=env,
                              stdin=subprocess.DEVNULL,
                              pass_fds=() if lock_fd is None else (lock_fd,)).returncode
    took = time.perf_counter() - start
    return Retraining(name, ["dvc", *cmd[3:]], code, round(took, 2), str(out),
                      _decision(root, model, started_iso) if code == 0 else None)
