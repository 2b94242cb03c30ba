"""What DVC and Ploomber cost by themselves on a benchmark pipeline: the limits of the cold paths.

Issue 17 asks `dvc repro --force` with no warm worker to come within 1.5x of the floor, and
`ploomber build --force` within 1.3x. These projects measure how close the tools themselves
let any runner come, with nothing of mlops_nb in them:

- `dvc_own`: a copy of the project whose dvc.yaml keeps every stage, dependency, parameter
  and output, but each step's command only copies in the outputs a real run wrote (the first
  stage runs `true`): DVC's own work for this pipeline (start-up, removing, hashing and
  caching the same outputs, dvc.lock, the run cache).
- `dvc_limit`: the same, with the floor script run by the first step's stage before its copy:
  the floor plus DVC's own cost, one after the other. A cold `dvc repro` can only beat it by
  running the step code's imports at the same time as DVC's work, and only DVC's work between
  the first stage and the first step overlaps them (the first step needs the imports).
- `ploomber_own`: pipeline.yaml's DAG (same tasks, products, parameters and executor) whose
  tasks only write their products: Ploomber's own cost, its import (about 2,800 modules:
  matplotlib through papermill's engine entry points, SQLAlchemy, Google Cloud Storage,
  nbconvert, pandas, pyarrow) and its render and build bookkeeping. Ploomber runs the tasks
  in the process that imported it, after the import: no runner can start a step earlier.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

OWN_TASKS = '''"""Tasks that only write their products (bench/own_cost.py)."""
from pathlib import Path


def run_step(product, step, digest, parameters=None, upstream=None):
    for p in product:
        Path(str(p)).parent.mkdir(parents=True, exist_ok=True)
        Path(str(p)).write_text(step)
'''


def _step_commands(dvc_yaml: str, outputs: Path, first: str = "") -> str:
    """dvc.yaml with each step's command replaced by a copy of its saved outputs; `first`
    runs before the copy of the first step's."""
    done = []

    def copy(m: re.Match[str]) -> str:
        step = m.group(1)
        before = f"{first} && " if first and not done else ""
        done.append(step)
        command = f"{before}mkdir -p outputs/{step} && cp -r '{outputs}/{step}/.' outputs/{step}/"
        return f"cmd: {json.dumps(command)}"  # a JSON string is a YAML one

    text = dvc_yaml.replace("cmd: python -m mlops_nb.step --check-compiled", "cmd: 'true'")
    return re.sub(r"cmd: python -m mlops_nb\.step (\w+)", copy, text)


def dvc_projects(project: Path, floor_cmd: str) -> tuple[Path, Path]:
    """(dvc_own, dvc_limit) projects beside `project`, which must hold a real run's outputs."""
    saved = project.parent / "own-outputs"
    if not saved.exists():
        shutil.copytree(project / "outputs", saved)
    made = []
    for name, first in (("dvc-own", ""), ("dvc-limit", floor_cmd)):
        dest = project.parent / name
        if not dest.exists():
            shutil.copytree(project, dest, symlinks=True)
            dvc_yaml = dest / "dvc.yaml"
            dvc_yaml.write_text(_step_commands(dvc_yaml.read_text(), saved, first))
            shutil.rmtree(dest / ".mlops_nb", ignore_errors=True)
        made.append(dest)
    return made[0], made[1]


def ploomber_project(project: Path) -> Path:
    """A folder beside `project` with its pipeline.yaml, tasks replaced (ploomber_own)."""
    dest = project.parent / "ploomber-own"
    if not dest.exists():
        dest.mkdir()
        text = (project / "pipeline.yaml").read_text()
        text = re.sub(r"(?m)^on_render: .*\n", "", text)
        text = text.replace("mlops_nb.ploomber_task.run_step", "own_tasks.run_step")
        (dest / "pipeline.yaml").write_text(text)
        shutil.copyfile(project / "params.yaml", dest / "env.yaml")
        (dest / "own_tasks.py").write_text(OWN_TASKS)
    return dest
