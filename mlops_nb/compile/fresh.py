"""Are the generated files what the notebooks say now? Every runner asks before it runs.

Rule: no runner runs a step notebook that is stale against its source notebook. compile
records the sha256 of each notebook it compiled (.mlops_nb/sources.json). A runner (a DVC
stage, a Ploomber task and Ploomber's on_render hook, `mlops-nb status`) compares the
notebooks' bytes with that record: equal means fresh, at the cost of reading them. A notebook
whose bytes changed (or a project with no record, as in a fresh clone) is compiled again in
memory: when the generated files come out the same (only outputs or markdown changed), the
record is brought up to date and the run goes on; otherwise StaleError names the notebook and
the command to run. Nothing here writes a generated file.

`ensure_params` is the params.yaml half of the same question (paramcheck.py): the runners
that do not compile (a DVC stage, Ploomber's on_render hook) check its types against the
notebook defaults compile last seeded, before they run anything.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

from mlops_nb.compile import render
from mlops_nb.compile.record import (
    SOURCES,
    last_seeded,
    notebook_digest,
    project_notebooks,
    record_sources,
)
from mlops_nb.errors import StaleError
from mlops_nb.pipeline import paramcheck
from mlops_nb.project import NOTEBOOKS, PARAMS, STATE, dvc_experiment_workspace

log = logging.getLogger(__name__)

RECOMPILE = "mlops-nb compile"


def _load(root: Path) -> dict | None:
    try:
        data = json.loads((root / STATE / SOURCES).read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def changed_notebooks(root: Path) -> list[str] | None:
    """Notebooks whose bytes differ from the record (added and removed ones too), or None
    when there is no record."""
    rec = _load(root)
    if rec is None:
        return None
    known = rec.get("notebooks", {})
    now = {f.relative_to(root).as_posix(): f for f in project_notebooks(root)}
    changed = [rel for rel, f in now.items() if known.get(rel) != notebook_digest(f)]
    return sorted(changed + [rel for rel in known if rel not in now])


def stale_files(root: Path) -> tuple[list[str], list[str]]:
    """(changed notebooks, generated files that differ from what they would compile to)."""
    changed = changed_notebooks(root)
    if changed == []:
        return [], []
    rec = _load(root) or {}
    paths = rec.get("paths")
    _, files = render(root, [str(root / p) for p in paths] if paths else None)
    differ = []
    for rel, text in files.items():
        if rel == PARAMS:
            continue
        path = root / rel
        try:
            same = path.read_text(encoding="utf-8") == text
        except OSError:
            same = False
        if not same:
            differ.append(rel)
    if not differ:  # bytes changed, the pipeline did not: remember, so the next check is cheap
        record_sources(root, rec.get("paths"))
    return changed or [NOTEBOOKS + "/"], differ


def ensure_fresh(root: Path, then: str = "run it again") -> None:
    """Raise StaleError when a notebook changed in a way its generated files do not show."""
    changed, differ = stale_files(root)
    missing = [rel for rel in differ if not (root / rel).exists()]
    if missing and dvc_experiment_workspace(root) is not None:
        raise StaleError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in the copy of"
            " the project DVC made for this experiment: a queued or temporary experiment"
            " (`dvc exp run --queue`, `--temp`) gets only the files git tracks. In the project,"
            f" run `git add {' '.join(shlex.quote(m) for m in missing)}` (compile wrote"
            f" {'it' if len(missing) == 1 else 'them'}; commit or not), then queue the"
            " experiment again")
    if differ:
        shown = ", ".join(differ[:4]) + (", ..." if len(differ) > 4 else "")
        raise StaleError(f"{', '.join(changed)} changed since `{RECOMPILE}` ({shown} would"
                         f" change): run `{RECOMPILE}`, then {then}")


def ensure_params(root: Path, warn: bool = True) -> dict[str, Any]:
    """params.yaml checked (paramcheck.check) against the defaults compile last seeded; its
    plain data. `warn`: log unknown options (a step's stage leaves that to DVC's first stage
    or Ploomber's hook, which checked the same file before it)."""
    return paramcheck.check(root / PARAMS, last_seeded(root), PARAMS, warn=warn)
