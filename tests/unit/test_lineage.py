"""The lineage store: snapshots of a project, queries, two writers, a writer killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from mlops_nb import artifacts
from mlops_nb.cli import main
from mlops_nb.errors import LineageError
from mlops_nb.guards import lineage
from mlops_nb.guards.registry import Registry

DVC_YAML = """\
stages:
  load:
    cmd: python -m mlops_nb.step load
    deps:
    - steps/load.ipynb
    - data/raw.csv
    outs:
    - outputs/load/df
    - outputs/load/load.ipynb
  train:
    cmd: python -m mlops_nb.step train
    deps:
    - steps/train.ipynb
    - outputs/load/df
    params:
    - demo.ALPHA
    outs:
    - outputs/train/train.ipynb
    metrics:
    - outputs/train/metrics.json
"""


def executed(path, start, end, exception=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pm = {"start_time": start, "end_time": end, "duration": 2.5, "exception": exception}
    path.write_text(json.dumps({"cells": [], "metadata": {"papermill": pm}}))


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    (root / "steps").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "params.yaml").write_text("demo:\n  ALPHA: 0.5\n  UNUSED: 1\n")
    (root / "data/raw.csv").write_text("a\n1\n")
    for s in ("load", "train"):
        (root / f"steps/{s}.ipynb").write_text(f"{{\"step\": \"{s}\"}}")
    artifacts.save(pd.DataFrame({"a": [1]}), root / "outputs/load/df")
    executed(root / "outputs/load/load.ipynb", "2026-01-01T10:00:00+00:00",
             "2026-01-01T10:00:02+00:00")
    executed(root / "outputs/train/train.ipynb", "2026-01-01T10:00:03+00:00",
             "2026-01-01T10:00:05+00:00")
    (root / "outputs/train/metrics.json").write_text('{"accuracy": 0.75}')
    return root


def test_collect_reads_steps_hashes_params_metrics_timings(project):
    run = lineage.collect(project, status="completed")
    assert [s.step for s in run.steps] == ["load", "train"]
    load, train = run.steps
    assert load.status == "completed" and load.duration == 2.5
    assert load.inputs["data/raw.csv"] == artifacts.sha256_file(project / "data/raw.csv")
    assert load.outputs["outputs/load/df"] == artifacts.read_meta(
        project / "outputs/load/df")["sha256"]
    assert train.inputs["steps/train.ipynb"] == artifacts.sha256_file(
        project / "steps/train.ipynb")
    assert train.metrics == {"accuracy": 0.75}
    assert run.params == {"demo.ALPHA": 0.5}  # only what a stage declares
    assert run.git_commit is None  # not a git repo: recorded as unknown, not an error


def test_failed_and_missing_steps_get_their_status(project):
    executed(project / "outputs/train/train.ipynb", "2026-01-01T10:00:03+00:00",
             "2026-01-01T10:00:05+00:00", exception=True)
    (project / "outputs/load/load.ipynb").unlink()
    load, train = lineage.collect(project, status="failed").steps
    assert (load.status, train.status) == ("not run", "failed")


def test_record_and_query_runs_and_models(project, tmp_path):
    store = lineage.LineageStore(tmp_path / "l.db")
    first = lineage.collect(project, status="completed")
    store.record(first, [lineage.ModelEvent("m", 1, "promoted", ("first",), {"acc": 0.7})])
    executed(project / "outputs/train/train.ipynb", "2026-01-02T09:00:00+00:00",
             "2026-01-02T09:00:01+00:00")
    second = lineage.collect(project, status="completed")
    store.record(second, [lineage.ModelEvent("m", None, "blocked", ("worse",), {"acc": 0.1})])
    runs = store.runs()
    assert [r["run_id"] for r in runs] == [second.run_id, first.run_id]
    assert runs[0]["models"][0]["decision"] == "blocked"
    assert runs[0]["models"][0]["reasons"] == ["worse"]
    # load did not run again in the second run: same start time as in the first
    assert [(s["step"], s["reused"]) for s in runs[0]["steps"]] == [("load", 1), ("train", 0)]
    assert runs[0]["started"] == "2026-01-02T09:00:00+00:00"
    assert store.model_run("m", 1) == first.run_id
    full = store.run(first.run_id)
    assert full["steps"][1]["inputs"]["outputs/load/df"] is not None
    assert full["steps"][1]["metrics"] == {"accuracy": 0.75}
    with pytest.raises(LineageError):
        store.model_run("m", 2)
    with pytest.raises(LineageError, match="no run 'nope'"):
        store.run("nope")


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from mlops_nb.guards import lineage
    store = lineage.LineageStore(Path(sys.argv[1]))
    for i in range(int(sys.argv[3])):
        steps = tuple(lineage.StepRecord(f"s{j}", "completed", outputs={f"o{j}": "h"},
                                         metrics={"m": j}) for j in range(5))
        run = lineage.RunRecord(f"{sys.argv[2]}-{i}", "completed", None, "t", None, False,
                                {"p": i}, steps)
        store.record(run)
""")


def test_two_concurrent_writers_lose_nothing(tmp_path):
    db = tmp_path / "l.db"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), name, "40"])
             for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 80
    assert con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 400
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


KILLED = textwrap.dedent("""
    import sys
    from pathlib import Path
    from mlops_nb.guards import lineage

    class Stall:
        def __float__(self):  # called inside the open transaction
            print("ready", flush=True)
            sys.stdin.readline()  # blocks until killed
            return 0.0

    steps = (lineage.StepRecord("s", "completed", metrics={"m": Stall()}),)
    run = lineage.RunRecord("half", "completed", None, "t", None, False, {}, steps)
    lineage.LineageStore(Path(sys.argv[1])).record(run)
""")


def test_a_writer_killed_mid_run_leaves_no_half_run(tmp_path):
    db = tmp_path / "l.db"
    store = lineage.LineageStore(db, timeout=5)
    store.record(lineage.RunRecord("before", "completed", None, "t0", None, False, {}, ()))
    with subprocess.Popen([sys.executable, "-c", KILLED, str(db)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout.readline().strip() == "ready"  # the transaction is open now
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    assert [r["run_id"] for r in store.runs()] == ["before"]
    store.record(lineage.RunRecord("after", "completed", None, "t1", None, False, {}, ()))
    assert [r["run_id"] for r in store.runs()] == ["after", "before"]
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*) FROM steps WHERE run_id='half'").fetchone()[0] == 0


def test_unopenable_store_is_a_lineage_error(tmp_path):
    (tmp_path / "not_a_dir").write_text("")
    with pytest.raises(LineageError) as err:
        lineage.LineageStore(tmp_path / "not_a_dir" / "l.db").record(
            lineage.RunRecord("r", "completed", None, "t", None, False, {}, ()))
    assert err.value.exit_code == 10


def test_cli_runs_and_lineage(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLOPS_NB_ROOT", str(project))
    for var in ("MLOPS_NB_REGISTRY", "MLOPS_NB_LINEAGE"):
        monkeypatch.delenv(var, raising=False)
    assert main(["runs"]) == 0
    assert "no runs recorded yet" in capsys.readouterr().out
    run = lineage.collect(project, status="completed")
    lineage.LineageStore(project / ".mlops_nb/lineage.db").record(
        run, [lineage.ModelEvent("m", 1, "promoted", ("first",), {})])
    from sklearn.dummy import DummyClassifier

    Registry(project / ".mlops_nb/registry").register(
        "m", DummyClassifier().fit([[0]], [0]), {"acc": 1.0},
        info={"run_id": run.run_id, "data": {"data/raw.csv": "abc123"},
              "code": {"steps/train.ipynb": "def456"}})
    assert main(["runs"]) == 0
    assert "m:1 promoted" in capsys.readouterr().out
    assert main(["lineage", "m:1"]) == 0
    out = capsys.readouterr().out
    assert f"run {run.run_id}: completed" in out and "demo.ALPHA=0.5" in out
    assert "data/raw.csv  abc123" in out and "steps/train.ipynb  def456" in out
    assert main(["lineage", "m:1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["run_id"] == run.run_id
    assert main(["lineage", "m:5"]) == 9


def test_executed_notebook_without_papermill_timings(project, tmp_path):
    """Another runner's executed notebook: an error output means failed; mtime is the end."""
    nb = project / "outputs/train/train.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "error", "ename": "DataValidationError", "evalue": "x"}]}],
        "metadata": {}}))
    (project / "outputs/load/load.ipynb").write_text('{"cells": [], "metadata": {}}')
    store = lineage.LineageStore(tmp_path / "l.db")
    first = lineage.collect(project, status="failed")
    assert [s.status for s in first.steps] == ["completed", "failed"]
    assert first.steps[0].finished and first.steps[0].started is None
    store.record(first)
    nb.write_text('{"cells": [], "metadata": {}}')
    os.utime(nb, (1e9, 1e9))  # train ran again (a different end), load did not
    store.record(lineage.collect(project, status="completed"))
    assert [(s["step"], s["reused"]) for s in store.runs()[0]["steps"]] == [
        ("load", 1), ("train", 0)]
