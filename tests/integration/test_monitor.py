"""Monitoring closes the loop: data like the training data served -> `monitor` says ok (0);
shifted data served through /predict -> `monitor --retrain` reports drift (exit 14), writes
the HTML and JSON report, and a retraining run through DVC has run the gate."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlops_nb import artifacts
from mlops_nb.serve.reqlog import line
from tests.conftest import cli_in_process, sh, tool_env
from tests.integration.serving import serving, trained_example

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return trained_example(tmp_path_factory.mktemp("monitor") / "example",
                           tmp_path_factory.mktemp("build"))


def mlops(args: list[str], root: Path, check: bool = False):
    return sh([sys.executable, "-m", "mlops_nb", *args], root, check=check)


def feed(root: Path, log_dir: Path, frame) -> None:
    records = json.loads(frame.to_json(orient="records"))
    with serving(root, "--log-dir", str(log_dir)) as s:
        for start in range(0, len(records), 20):
            res = s.client.post("/predict", json={"records": records[start:start + 20]})
            assert res.status_code == 200, res.text


def write_log(log_dir: Path, frame, *bad: str, columns: dict[str, str] | None = None) -> None:
    """The log a server would write for `frame` (15 records per request), `bad` lines
    between its requests."""
    records = json.loads(frame.rename(columns=columns or {}).to_json(orient="records"))
    lines = [line({"ts": time.time(), "request": f"r{i}", "model": "iris", "version": 1},
                  records[i:i + 15], [0] * len(records[i:i + 15]))
             for i in range(0, len(records), 15)]
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "requests-1.jsonl", "w") as f:
        for i, text in enumerate(lines):
            f.write(text)
            if i < len(bad):
                f.write(bad[i] + "\n")


def test_bad_log_lines_are_skipped_counted_and_reported(root, tmp_path):
    x = artifacts.load(root / "outputs/prepare/X_test")
    good = json.loads(line({"ts": time.time(), "request": "r", "model": "iris",
                            "version": 1}, [{c: 1.0 for c in x.columns}], [0]))
    bad = ["[" * 100_000,  # deep nesting
           json.dumps({**good, "ts": "yesterday"}),  # a ts that is not a time
           json.dumps({**good, "x": {**good["x"], "petal_width": [[1.0, 2.0]]}}),  # a list
           '{"ts": 1.0, "request": "torn", "x": {"sepal_',  # invalid JSON
           json.dumps({**good, "request": "x" * (64 * 2**20)})]  # a huge line
    write_log(tmp_path / "log", x.iloc[:30], bad[0], bad[1])
    with open(tmp_path / "log" / "requests-2.jsonl", "w") as f:
        f.write("\n".join(bad[2:]) + "\n")
        f.write(line({"ts": time.time(), "request": "r", "model": "iris", "version": 1},
                     json.loads(x.iloc[30:].to_json(orient="records")), [0] * 15))
    os.utime(tmp_path / "log" / "requests-2.jsonl")  # the newer file
    res = cli_in_process(["monitor", "--log-dir", str(tmp_path / "log"), "--report-dir",
                          str(tmp_path / "report"), "--since-hours", "1"], root, check=False)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    report = json.loads((tmp_path / "report/monitor.json").read_text())
    assert (report["status"], report["rows"]) == ("ok", 45)
    assert report["unreadable_lines"] == report["bad_lines"]["count"] == 5
    reasons = report["bad_lines"]["reasons"]
    assert reasons == {"nested too deeply": 1, "'ts' is not a time (a number of seconds)": 1,
                       "a value of 'x' that is not a number": 1,
                       "invalid JSON (a torn or damaged line)": 1,
                       "longer than 67,108,864 bytes": 1}, reasons
    assert [(b["file"], b["line"]) for b in report["bad_lines"]["first"]] == [
        ("requests-1.jsonl", 2), ("requests-1.jsonl", 4), ("requests-2.jsonl", 1),
        ("requests-2.jsonl", 2), ("requests-2.jsonl", 3)]
    assert "serving log: 5 bad line(s) skipped" in res.stdout
    assert "nested too deeply (1)" in res.stdout and "first at requests-1.jsonl:2" in res.stdout
    assert "5 bad line(s) skipped" in (tmp_path / "report/monitor.html").read_text()


def test_served_columns_other_than_the_reference_are_an_error(root, tmp_path):
    x = artifacts.load(root / "outputs/prepare/X_test")
    write_log(tmp_path / "log", x, columns={"petal_width": "petal_w\"\nidth"})
    res = cli_in_process(["monitor", "--log-dir", str(tmp_path / "log"), "--report-dir",
                          str(tmp_path / "report")], root, check=False)
    assert res.returncode == 7, res.stdout + res.stderr  # data failed validation
    assert "OK" not in res.stdout
    err = res.stderr.strip().splitlines()[-1]
    assert "45 served record(s) have other columns than the training reference" in err
    assert "the reference's column 'petal_width' missing from the served records" in err
    assert "the served records' column 'petal_w\"\\nidth' not in the reference" in err
    assert not (tmp_path / "report").exists()  # no report that could be taken for a verdict


def test_a_second_retrain_says_one_is_running_and_exits_15(root, tmp_path):
    write_log(tmp_path / "log", artifacts.load(root / "outputs/prepare/X_test"))
    args = ["monitor", "--retrain", "--log-dir", str(tmp_path / "log"), "--report-dir",
            str(tmp_path / "report")]
    lock = root / ".mlops_nb/retrain.lock"
    assert mlops(args, root).returncode == 0  # no drift: nothing to retrain
    assert lock.stat().st_mode & 0o777 == 0o600
    with open(lock, "rb+") as held:  # this test process is the retraining that runs
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(json.dumps({"pid": os.getpid(), "started": time.time(),
                               "command": "mlops-nb monitor --retrain"}).encode())
        held.truncate()
        held.flush()
        res = mlops(args, root)
        assert res.returncode == 15, res.stdout + res.stderr
        assert (f"a retraining of this project is already running (pid {os.getpid()},"
                in res.stderr and "wait for it to finish" in res.stderr)
        assert mlops(args[:1] + args[2:], root).returncode == 0  # monitoring alone still runs
    with open(lock, "rb+") as f:  # the refused one took nothing
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_planted_retrain_lock_is_refused_never_followed(root, tmp_path):
    write_log(tmp_path / "log", artifacts.load(root / "outputs/prepare/X_test"))
    args = ["monitor", "--retrain", "--log-dir", str(tmp_path / "log"), "--report-dir",
            str(tmp_path / "report")]
    lock = root / ".mlops_nb/retrain.lock"
    lock.unlink(missing_ok=True)
    victim = tmp_path / "bashrc"
    victim.write_text("echo hello\n")
    lock.symlink_to(victim)
    try:
        res = mlops(args, root)
        assert res.returncode == 11 and "a symlink" in res.stderr, res.stderr
        assert victim.read_text() == "echo hello\n"
    finally:
        lock.unlink()
    lock.write_text("")
    try:
        if os.geteuid() == 0:  # another user's lock file
            os.chown(lock, 65534, 65534)
            res = mlops(args, root)
            assert res.returncode == 11 and "owned by another user" in res.stderr, res.stderr
    finally:
        lock.unlink()


def test_unshifted_data_is_ok(root, tmp_path):
    feed(root, tmp_path / "log", artifacts.load(root / "outputs/prepare/X_test"))
    res = mlops(["monitor", "--log-dir", str(tmp_path / "log"), "--report-dir",
                 str(tmp_path / "report")], root)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads((tmp_path / "report/monitor.json").read_text())
    assert (report["status"], report["rows"], report["drift_detected"]) == ("ok", 45, False)
    assert report["retraining"] is None


def test_too_few_records_give_no_verdict(root, tmp_path):
    # the served log of 5 records (the real server's log is read in the two tests around)
    write_log(tmp_path / "log", artifacts.load(root / "outputs/prepare/X_test").head(5))
    res = cli_in_process(["monitor", "--log-dir", str(tmp_path / "log"), "--report-dir",
                          str(tmp_path / "report")], root, check=False)
    assert res.returncode == 0 and "INSUFFICIENT" in res.stdout


def test_shifted_data_reports_drift_and_starts_retraining(root):
    x = artifacts.load(root / "outputs/prepare/X_train")
    shifted = x.assign(petal_length=x["petal_length"] * 1.6 + 1.0,
                       sepal_width=x["sepal_width"] + 0.8,
                       sepal_length=x["sepal_length"] + 1.5)
    feed(root, root / ".mlops_nb/serving/iris", shifted)  # the default log folder
    runs_before = len(json.loads(mlops(["runs", "--json"], root, check=True).stdout))

    lock = root / ".mlops_nb/retrain.lock"
    first = subprocess.Popen([sys.executable, "-m", "mlops_nb", "monitor", "--retrain"],
                             cwd=root, env=tool_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while f'"pid": {first.pid},' not in (lock.read_text() if lock.exists() else ""):
        assert first.poll() is None, first.communicate()  # a condition, not a time
        assert time.monotonic() < deadline, "the first monitor --retrain never took the lock"
        time.sleep(0.02)  # polling a condition (the lock's holder), not synchronising on time
    os.kill(first.pid, signal.SIGSTOP)  # held at any point after it took the lock, so the
    try:  # second surely starts while the first is deciding or retraining
        second = mlops(["monitor", "--retrain"], root)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    assert second.returncode == 15, second.stdout + second.stderr
    assert f"a retraining of this project is already running (pid {first.pid}" in second.stderr
    res = subprocess.CompletedProcess(first.args, first.returncode, out, err)
    assert res.returncode == 14, res.stdout + res.stderr  # drift has its own exit code
    with open(lock, "rb+") as f:  # released: nothing the retraining started kept it
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert "drifted" in res.stderr and "DRIFT" in res.stdout
    folder = root / ".mlops_nb/monitor/iris"
    report = json.loads((folder / "monitor.json").read_text())
    assert report["drift_detected"] and report["status"] == "drift"
    assert {"petal_length", "sepal_width", "sepal_length"} <= set(report["drifted_columns"])
    skew = {c["column"]: c for c in report["skew"]["columns"]}
    assert skew["sepal_width"]["mean_shift_std"] > 1
    assert any(a["kind"] == "out_of_range" for a in report["skew"]["anomalies"])
    html = (folder / "monitor.html").read_text()
    assert "Training-serving skew" in html and "Retraining" in html

    retraining = report["retraining"]
    assert retraining["exit_code"] == 0, Path(retraining["log"]).read_text()[-2000:]
    exps = sh(["dvc", "exp", "list", "--name-only"], root).stdout.split()
    assert retraining["experiment"] in exps
    runs = json.loads(mlops(["runs", "--json"], root, check=True).stdout)
    assert len(runs) > runs_before
    (event,) = runs[0]["models"]  # the retrained model went through the gate
    assert event["decision"] in ("promoted", "blocked") and event["reasons"]
    assert retraining["decision"]["decision"] == event["decision"]


def _events(root: Path) -> list[dict]:
    from mlops_nb.guards.lineage import LineageStore

    return LineageStore(root / ".mlops_nb" / "lineage.db").events("trigger")


def test_trigger_dry_run_names_each_trigger_that_holds_and_none_otherwise(root, tmp_path):
    x = artifacts.load(root / "outputs/prepare/X_test")
    write_log(tmp_path / "calm", x)
    args = ["trigger", "--dry-run", "--report-dir", str(tmp_path / "report")]
    # other tests of this module retrain on the same project: count, do not expect none
    exps = sh(["dvc", "exp", "list", "--all-commits", "--name-only"], root).stdout
    res = mlops([*args, "--log-dir", str(tmp_path / "calm")], root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "nothing to do: no trigger holds" in res.stdout
    assert "HOLDS" not in res.stdout and "no DVC-tracked input changed" in res.stdout
    assert "no data-set drift in 45 served records" in res.stdout
    calm = _events(root)[0]["payload"]
    assert calm["retrain"] is False and calm["dry_run"] is True
    schema = root / "notebooks" / "iris.schema.yaml"
    before = schema.read_text()
    schema.write_text(before + "# new data\n")
    write_log(tmp_path / "shifted", x * 3 + 1)
    try:
        res = mlops([*args, "--schedule", "--log-dir", str(tmp_path / "shifted"), "--json"],
                    root)
    finally:
        schema.write_text(before)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    holds = {t["kind"]: t for t in doc["triggers"] if t["holds"]}
    assert set(holds) == {"new-data", "schedule", "drift", "skew"}, doc
    assert holds["new-data"]["figures"]["changed"] == {"notebooks/iris.schema.yaml": "modified"}
    assert holds["drift"]["figures"]["drifted_columns"]
    assert doc["retrain"] is True and doc["outcome"] is None  # a dry run changes nothing
    assert _events(root)[0]["payload"]["triggers"] == doc["triggers"]
    assert sh(["dvc", "exp", "list", "--all-commits", "--name-only"], root).stdout == exps


def test_trigger_on_schedule_retrains_through_dvc_and_the_gate_then_deploys_to_staging(
        root, tmp_path):
    """The retrained model beats production (here a majority-class model) and is registered,
    not promoted: the trigger deploys it to staging through deploy's checks, and production
    keeps its version."""
    from sklearn.dummy import DummyClassifier

    from mlops_nb.guards.registry import Registry, default_root, reference_of, schema_of
    from tests.conftest import REPO

    reg = Registry(default_root(root))
    trained = reg.production("iris")
    x, y = artifacts.load(root / "outputs/prepare/X_test"), [0] * 3 + [1] * 3
    weak = reg.register("iris", DummyClassifier().fit(x.head(6), y), {"accuracy": 0.3},
                        schema=schema_of(trained), reference=reference_of(trained))
    reg.promote("iris", weak.version)
    params = root / "params.yaml"
    before = params.read_text()
    params.write_text(before + "mlops_nb:\n  deploy:\n    load_test_seconds: 1\n"
                               "    load_test_clients: 2\n")
    (root / "requirements.lock").write_bytes((REPO / "requirements.lock").read_bytes())
    try:
        res = mlops(["trigger", "--schedule", "--log-dir", str(tmp_path / "none"),
                     "--report-dir", str(tmp_path / "report")], root)
        weak_after = reg.get("iris", weak.version).stage
    finally:
        params.write_text(before)
        (root / "requirements.lock").unlink()
        reg.promote("iris", trained.version)  # the module's other tests serve that one
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "HOLDS  schedule" in res.stdout and "retrained: retrain-iris-" in res.stdout
    assert "gate: registered" in res.stdout
    outcome = _events(root)[0]["payload"]["outcome"]
    assert outcome["ok"] and outcome["experiment"] in sh(
        ["dvc", "exp", "list", "--all-commits", "--name-only"], root).stdout
    staged = outcome["deploy"]
    new = outcome["decision"]["version"]
    assert staged["moved"] and staged["ref"] == f"iris:{new}" and staged["to"] == "staging"
    assert f"deployed iris:{new} to staging" in res.stdout
    assert [c["ok"] for c in staged["checks"]] == [True] * 4
    assert reg.get("iris", new).stage == "staging"
    assert weak_after == "production"  # production is a human's (or main's) deploy
    bad = mlops(["trigger", "--min-rows", "0"], root)
    assert bad.returncode == 2 and "--min-rows" in bad.stderr
