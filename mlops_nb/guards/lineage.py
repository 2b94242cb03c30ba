"""The lineage store: which data, code and parameters made which outputs, metrics and models.

A run record is a snapshot of the project as the pipeline left it, read from what every runner
(mlops-nb, DVC, Ploomber) shares: dvc.yaml's stages (deps, params, outs, metrics), the hashes in
the outputs' meta.json, params.yaml, the executed notebooks' papermill timings and the git
commit. It lives in SQLite (`.mlops_nb/lineage.db`, or $MLOPS_NB_LINEAGE) in WAL mode; a run
and everything under it is written in one `BEGIN IMMEDIATE` transaction, so a killed writer
leaves no half run and two writers wait for each other (busy timeout) instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.errors import LineageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs(
  run_id TEXT PRIMARY KEY, started TEXT, finished TEXT, status TEXT NOT NULL,
  git_commit TEXT, git_dirty INTEGER, params TEXT NOT NULL, note TEXT);
CREATE TABLE IF NOT EXISTS steps(
  run_id TEXT NOT NULL REFERENCES runs(run_id), step TEXT NOT NULL, position INTEGER,
  status TEXT, started TEXT, finished TEXT, duration REAL, reused INTEGER,
  PRIMARY KEY(run_id, step));
CREATE TABLE IF NOT EXISTS artifacts(
  run_id TEXT NOT NULL REFERENCES runs(run_id), step TEXT NOT NULL, role TEXT NOT NULL,
  path TEXT NOT NULL, sha256 TEXT, PRIMARY KEY(run_id, step, role, path));
CREATE TABLE IF NOT EXISTS metrics(
  run_id TEXT NOT NULL REFERENCES runs(run_id), step TEXT NOT NULL, name TEXT NOT NULL,
  value REAL, PRIMARY KEY(run_id, step, name));
CREATE TABLE IF NOT EXISTS models(
  run_id TEXT NOT NULL REFERENCES runs(run_id), name TEXT NOT NULL, version INTEGER,
  decision TEXT NOT NULL, reasons TEXT NOT NULL, metrics TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS models_by_version ON models(name, version);
CREATE INDEX IF NOT EXISTS runs_by_end ON runs(finished);
CREATE TABLE IF NOT EXISTS events(
  event_id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, kind TEXT NOT NULL,
  subject TEXT, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_kind ON events(kind, event_id);
"""


@dataclass(frozen=True)
class StepRecord:
    step: str
    status: str
    started: str | None = None
    finished: str | None = None
    duration: float | None = None
    inputs: dict[str, str | None] = field(default_factory=dict)  # path -> sha256
    outputs: dict[str, str | None] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    status: str
    started: str | None
    finished: str
    git_commit: str | None
    git_dirty: bool
    params: dict[str, Any]
    steps: tuple[StepRecord, ...]
    note: str = ""


@dataclass(frozen=True)
class ModelEvent:
    name: str
    version: int | None  # None when the model was blocked (never registered)
    decision: str  # promoted, registered or blocked
    reasons: tuple[str, ...]
    metrics: dict[str, Any]


def default_path(project: Path) -> Path:
    env = os.environ.get("MLOPS_NB_LINEAGE")
    if env:
        return Path(env).resolve()
    path = project / ".mlops_nb" / "lineage.db"
    atomic.refuse_symlinks(path, root=project)  # a planted link would take every write
    return path


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class LineageStore:
    """One SQLite file; a connection per operation, so it is safe across processes."""

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # SQLite follows symlinks: refuse one planted at the store or its side files, and
            # create the store itself with O_EXCL | O_NOFOLLOW (an empty file is a new store)
            for side in ("", "-wal", "-shm", "-journal"):
                if Path(f"{self.path}{side}").is_symlink():
                    raise LineageError(str(atomic.symlink_error(Path(f"{self.path}{side}"))))
            atomic.create_new(self.path, b"")
            con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise LineageError(f"cannot open the lineage store {self.path}: {exc}") from exc
        try:
            con.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            # switching to WAL and creating the schema can meet another process doing the
            # same at the first use: SQLite then answers "locked" without waiting, so retry
            self._retry(lambda: con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
                        or con.execute("PRAGMA journal_mode=WAL"))
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA foreign_keys=ON")
            self._retry(lambda: con.executescript(SCHEMA))
            con.row_factory = sqlite3.Row
            yield con
        except sqlite3.Error as exc:
            raise LineageError(f"lineage store {self.path}: {exc}") from exc
        finally:
            con.close()

    def _retry(self, action: Callable[[], object]) -> None:
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                action()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) \
                        or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def record(self, run: RunRecord, models: list[ModelEvent] | None = None) -> None:
        """Write a run, its steps, hashes, metrics and model events, all or nothing."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?)",
                            (run.run_id, run.started, run.finished, run.status, run.git_commit,
                             int(run.git_dirty), json.dumps(run.params, default=str), run.note))
                for table in ("steps", "artifacts", "metrics"):
                    con.execute(f"DELETE FROM {table} WHERE run_id=?", (run.run_id,))
                for pos, s in enumerate(run.steps):
                    con.execute("INSERT INTO steps VALUES (?,?,?,?,?,?,?,?)",
                                (run.run_id, s.step, pos, s.status, s.started, s.finished,
                                 s.duration, None))
                    rows = [(run.run_id, s.step, "input", p, h) for p, h in s.inputs.items()]
                    rows += [(run.run_id, s.step, "output", p, h) for p, h in s.outputs.items()]
                    con.executemany("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?,?)", rows)
                    con.executemany("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?)",
                                    [(run.run_id, s.step, k, _float(v))
                                     for k, v in s.metrics.items()])
                for m in models or []:
                    con.execute("INSERT INTO models VALUES (?,?,?,?,?,?,?)",
                                (run.run_id, m.name, m.version, m.decision,
                                 json.dumps(list(m.reasons)), json.dumps(m.metrics, default=str),
                                 now))
                _mark_reused(con, run.run_id)
                con.execute("UPDATE runs SET started = COALESCE((SELECT MIN(started) FROM steps"
                            " WHERE run_id=? AND NOT reused), started) WHERE run_id=?",
                            (run.run_id, run.run_id))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def record_event(self, kind: str, subject: str, payload: dict[str, Any]) -> int:
        """Note a decision that is not a run (a trigger, a deploy, an alert); its id."""
        at = datetime.now(UTC).isoformat(timespec="seconds")
        with self._connect() as con:
            cur = con.execute("INSERT INTO events(at, kind, subject, payload) VALUES (?,?,?,?)",
                              (at, kind, subject, json.dumps(payload, default=str)))
            return int(cur.lastrowid or 0)

    def events(self, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest events (of `kind`), newest first."""
        if not self.path.exists():  # reading never creates the store
            return []
        with self._connect() as con:
            rows = con.execute("SELECT * FROM events WHERE ? IS NULL OR kind=?"
                               " ORDER BY event_id DESC LIMIT ?", (kind, kind, limit)).fetchall()
        return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        if not self.path.exists():  # reading never creates the store
            return []
        with self._connect() as con:
            rows = con.execute("SELECT * FROM runs ORDER BY finished DESC, rowid DESC LIMIT ?",
                               (limit,)).fetchall()
            out = []
            for r in rows:
                d = dict(r)
                d["params"] = json.loads(d["params"])
                d["models"] = [_model_row(m) for m in con.execute(
                    "SELECT * FROM models WHERE run_id=?", (r["run_id"],))]
                d["steps"] = [dict(s) for s in con.execute(
                    "SELECT step, status, duration, reused FROM steps WHERE run_id=?"
                    " ORDER BY position", (r["run_id"],))]
                out.append(d)
            return out

    def run(self, run_id: str) -> dict[str, Any]:
        with self._connect() as con:
            r = con.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if r is None:
                raise LineageError(f"no run {run_id!r} in {self.path}; see `mlops-nb runs`")
            d = dict(r)
            d["params"] = json.loads(d["params"])
            d["steps"] = []
            for s in con.execute("SELECT * FROM steps WHERE run_id=? ORDER BY position",
                                 (run_id,)):
                step = dict(s)
                step.pop("run_id")
                arts = con.execute("SELECT role, path, sha256 FROM artifacts WHERE run_id=?"
                                   " AND step=? ORDER BY path", (run_id, s["step"])).fetchall()
                step["inputs"] = {a["path"]: a["sha256"] for a in arts if a["role"] == "input"}
                step["outputs"] = {a["path"]: a["sha256"] for a in arts if a["role"] == "output"}
                step["metrics"] = {m["name"]: m["value"] for m in con.execute(
                    "SELECT name, value FROM metrics WHERE run_id=? AND step=?",
                    (run_id, s["step"]))}
                d["steps"].append(step)
            d["models"] = [_model_row(m) for m in con.execute(
                "SELECT * FROM models WHERE run_id=?", (run_id,))]
            return d

    def model_run(self, name: str, version: int) -> str:
        """The run that registered model NAME:VERSION."""
        with self._connect() as con:
            r = con.execute("SELECT run_id FROM models WHERE name=? AND version=? ORDER BY at"
                            " LIMIT 1", (name, version)).fetchone()
        if r is None:
            raise LineageError(f"no run recorded model {name}:{version} in {self.path}")
        return str(r["run_id"])


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _model_row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["reasons"] = json.loads(d["reasons"])
    d["metrics"] = json.loads(d["metrics"])
    return d


def _mark_reused(con: sqlite3.Connection, run_id: str) -> None:
    """A step whose start (or, without timings, end) equals that of an earlier run did not
    run again."""
    con.execute(
        "UPDATE steps SET reused = EXISTS (SELECT 1 FROM steps p WHERE p.step = steps.step"
        " AND p.run_id != steps.run_id AND COALESCE(p.started, p.finished) IS NOT NULL"
        " AND COALESCE(p.started, p.finished) = COALESCE(steps.started, steps.finished))"
        " WHERE run_id = ?", (run_id,))


# --- reading a run from the project -------------------------------------------------------


def git_state(root: Path) -> tuple[str | None, bool]:
    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                 timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else False
    return commit, dirty


def path_hash(path: Path) -> str | None:
    """sha256 of a file, the recorded hash of a step output folder, or None when missing."""
    from mlops_nb import artifacts

    if path.is_dir():
        meta = path / "meta.json"
        if meta.exists():
            try:
                return str(json.loads(meta.read_text())["sha256"])
            except (OSError, ValueError, KeyError):
                return None
        import hashlib

        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path).as_posix()}:{artifacts.sha256_file(f)}\n".encode())
        return h.hexdigest()
    return artifacts.sha256_file(path) if path.is_file() else None


def _timings(executed: Path) -> dict[str, Any]:
    """Status and timings of a step from its executed notebook (papermill's metadata when
    there is some; else an error output means failed, and the file's mtime is its end)."""
    try:
        doc = json.loads(executed.read_text(encoding="utf-8"))
        pm = doc.get("metadata", {}).get("papermill") or {}
    except (OSError, ValueError, AttributeError):
        return {"status": "not run"}
    if pm.get("start_time"):
        status = "failed" if pm.get("exception") else ("completed" if pm.get("end_time")
                                                        else "running")
        return {"status": status, "started": pm.get("start_time"),
                "finished": pm.get("end_time"), "duration": pm.get("duration")}
    failed = any(o.get("output_type") == "error" for c in doc.get("cells", [])
                 for o in c.get("outputs", []))
    mtime = datetime.fromtimestamp(executed.stat().st_mtime, UTC).isoformat()
    return {"status": "failed" if failed else "completed", "started": None,
            "finished": mtime, "duration": None}


def lookup(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def collect(root: Path, *, status: str, current_step: str | None = None,
            run_id: str | None = None, note: str = "") -> RunRecord:
    """A run record of the project as it stands, from dvc.yaml, outputs and params.yaml."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    safe = YAML(typ="safe", pure=True)
    def read(name: str) -> Any:
        path = root / name
        return (safe.load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}

    try:  # no dvc.yaml (not compiled, interactive use): a run without steps
        stages = read("dvc.yaml").get("stages") or {}
        params_all = read("params.yaml")
    except (OSError, ValueError, AttributeError, YAMLError) as exc:
        raise LineageError(f"cannot read the pipeline of {root}: {exc}; run"
                           " `mlops-nb compile`") from exc
    steps, params = [], {}
    for name, stage in stages.items():
        executed = f"outputs/{name}/{name}.ipynb"
        t = _timings(root / executed)
        if name == current_step:  # the step taking the snapshot ends now
            t["status"] = status
            now = datetime.now(UTC)
            t["finished"] = now.isoformat()
            with contextlib.suppress(TypeError, ValueError):
                t["duration"] = (now - datetime.fromisoformat(t["started"])).total_seconds()
        deps = [str(d) for d in stage.get("deps") or []]
        outs = [str(o) for o in stage.get("outs") or [] if str(o) != executed]
        metrics: dict[str, float] = {}
        for m in stage.get("metrics") or []:
            with contextlib.suppress(OSError, ValueError):
                data = json.loads((root / str(m)).read_text())
                metrics.update({k: v for k, v in data.items() if isinstance(v, (int, float))})
            outs.append(str(m))
        for p in stage.get("params") or []:
            params[str(p)] = lookup(params_all, str(p))
        steps.append(StepRecord(name, t["status"], t.get("started"), t.get("finished"),
                                t.get("duration"), {d: path_hash(root / d) for d in deps},
                                {o: path_hash(root / o) for o in outs}, metrics))
    started = min((s.started for s in steps if s.started), default=None)
    commit, dirty = git_state(root)
    return RunRecord(run_id or new_run_id(), status, started,
                     datetime.now(UTC).isoformat(), commit, dirty, params,
                     tuple(steps), note)


def record_project_run(root: Path, status: str, *, current_step: str | None = None,
                       note: str = "", models: list[ModelEvent] | None = None) -> str:
    """Snapshot the project and record it as a run (for runners: a failed step, a finish)."""
    run = collect(root, status=status, current_step=current_step, note=note)
    LineageStore(default_path(root)).record(run, models)
    return run.run_id
