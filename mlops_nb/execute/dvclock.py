"""dvc.lock entries for what `mlops-nb run` and `ploomber build` built, as `dvc repro` writes.

The rule (issue 26, item 6): after any runner built the pipeline, the others find nothing to
do, `dvc status` included, in a fresh project too. DVC decides from dvc.lock, which only DVC
wrote; so after a step succeeded under another runner, its stage is committed to DVC the
way `dvc commit` does it (its deps and outs hashed, the outs put in DVC's cache, the entry
written), with DVC's own code, in this process. Only steps the runner has just verified done
are committed (a stale entry is never made to look fresh), and only when their entry is not
already theirs: a stage's entry is its step's when the done marker it records (and the
markers it depends on) are the bytes on disk, since a marker holds everything the step
depends on and wrote. A project without `.dvc/` is left alone. Never fails a run: an error
is logged and `dvc repro` then reruns what it cannot prove done, as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlops_nb.compile.targets import CHECK_STAGE
from mlops_nb.project import DVC_YAML, rel_done

log = logging.getLogger(__name__)
DONE_NAME = Path(rel_done("x")).name


def _yaml(path: Path) -> dict[str, Any]:
    from ruamel.yaml import YAML

    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.debug("cannot read %s: %s", path, exc)
        return {}
    except Exception as exc:  # noqa: BLE001 - a YAML error: DVC will report it itself
        log.debug("cannot parse %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _md5(path: Path) -> str | None:
    try:
        return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    except OSError:
        return None


def _sealed(root: Path, step: str) -> bool:
    import json

    try:
        rec = json.loads((root / rel_done(step)).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(rec, dict) and (rec.get("sealed") is True or "notebook" in rec)


def _entries_hold(root: Path, entry: Any, paths: Iterable[str]) -> bool:
    """Whether a dvc.lock entry records these files (by md5) as they are on disk."""
    if not isinstance(entry, dict):
        return False
    recorded = {}
    for key in ("deps", "outs"):
        items = entry.get(key)
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and "path" in item:
                recorded[str(item["path"])] = item.get("md5")
    for path in paths:
        if path not in recorded or recorded[path] != _md5(root / path):
            return False
    return True


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _stage_paths(stage: Any, keys: tuple[str, ...]) -> list[str]:
    out = []
    for key in keys:
        items = _mapping(stage).get(key)
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item:
                out.append(str(next(iter(item))))
            elif isinstance(item, str):
                out.append(item)
    return out


def stale_stages(root: Path, steps: Iterable[str]) -> list[str]:
    """The stages among these done steps (and the compile check) whose dvc.lock entry is
    not theirs."""
    stages = _mapping(_yaml(root / DVC_YAML).get("stages"))
    lock = _mapping(_yaml(root / "dvc.lock").get("stages"))
    stale = []
    for step in steps:
        if step not in stages or not _sealed(root, step):
            continue
        markers = [p for p in _stage_paths(stages[step], ("deps", "outs"))
                   if p.endswith("/" + DONE_NAME)]
        if not _entries_hold(root, lock.get(step), markers):
            stale.append(step)
    check = stages.get(CHECK_STAGE)
    if check is not None and (stale or not _entries_hold(
            root, lock.get(CHECK_STAGE), _stage_paths(check, ("deps",)))):
        stale.insert(0, CHECK_STAGE)
    return stale


def record_built(root: Path, steps: Iterable[str]) -> list[str]:
    """Commit to DVC the stages of these steps, which the caller knows done, whose dvc.lock
    entry is not theirs; returns the stages committed."""
    if not (root / ".dvc").is_dir() or not (root / DVC_YAML).is_file():
        return []
    names = stale_stages(root, list(steps))
    if not names:
        return []
    dvc_log = logging.getLogger("dvc")
    level = dvc_log.level
    try:
        from dvc.dvcfile import load_file
        from dvc.repo import Repo, locked

        def commit(repo: Any) -> None:
            dvcfile = load_file(repo, DVC_YAML)
            stages = [dvcfile.stages[name] for name in names]
            for st in stages:
                st.save()
                st.commit(relink=False)
            dvcfile.dump_stages(stages, update_pipeline=False)

        level = dvc_log.level  # as importing DVC set it
        dvc_log.setLevel(logging.WARNING)  # DVC's "Updating lock file" is not ours to print
        with Repo(os.fspath(root)) as repo:
            locked(commit)(repo)
    except Exception as exc:  # noqa: BLE001 - dvc repro then reruns what it cannot prove
        log.warning("could not record %s in dvc.lock (%s: %s); `dvc status` may list them"
                    " until `dvc commit` or `dvc repro`", ", ".join(names),
                    type(exc).__name__, exc)
        return []
    finally:
        dvc_log.setLevel(level)
    log.info("recorded in dvc.lock: %s", ", ".join(names))
    return names
