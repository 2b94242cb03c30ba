"""Shadow comparison on a real server: `serve iris --shadow iris@staging` answers with the
production version, predicts the same records with the staging one off the request path, logs
them beside the answers under the same request ids, and labels given for those requests give
the staging version its online quality in `mlops-nb monitor`'s report. A shadow that is
missing, damaged or raising, or a full shadow queue, never changes an answer or a status."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mlops_nb.errors import UsageError
from mlops_nb.guards.registry import Registry, default_root
from mlops_nb.serve.shadow import check_ref
from tests.conftest import sh
from tests.integration.serving import free_port, serve_cli, serving, wait_for
from tests.receiver import iris_project

pytestmark = pytest.mark.slow


def iris(n: int = 150) -> tuple[list[dict], list[int]]:
    """The iris records (as served: short column names) and their true classes."""
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in x.columns]
    rows = x.sample(n, random_state=3)
    return json.loads(rows.to_json(orient="records")), [int(v) for v in y[rows.index]]


def register(root: Path, *, worse: bool = False, extra_column: bool = False,
             stage: str | None = "staging") -> int:
    """A new iris version (trained on shuffled labels when `worse`; with a column the served
    records lack when `extra_column`, so it raises on them), put in `stage`."""
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mlops_nb.guards.validation import schema as schema_mod

    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in x.columns]
    if extra_column:
        x = x.assign(colour=1.0)
    if worse:
        y = y.sample(frac=1.0, random_state=0).reset_index(drop=True)
    model = LogisticRegression(max_iter=300).fit(x, np.asarray(y))
    reg = Registry(default_root(root))
    mv = reg.register("iris", model, {"accuracy": 0.95}, schema=schema_mod.infer(x, ranges=True),
                      reference=x)
    if stage:
        reg.set_stage("iris", mv.version, stage)
    return mv.version


def log_lines(root: Path) -> list[dict]:
    folder = root / ".mlops_nb/serving/iris"
    return [json.loads(x) for p in sorted(folder.glob("requests-*.jsonl"))
            for x in p.read_text().splitlines() if x.strip()]


def shadow_lines(root: Path) -> dict[str, dict]:
    return {x["request"]: x for x in log_lines(root) if x.get("shadow") is True}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = iris_project(tmp_path_factory.mktemp("shadow") / "p")  # version 1 in production
    register(root, worse=True)  # version 2, staging, predicts badly
    return root


@pytest.fixture(scope="module")
def server(root):
    with serving(root, "iris", "--shadow", "iris@staging", "--poll", "0.1") as s:
        yield s


def predict(server, recs: list[dict], **headers: str) -> dict:
    res = server.client.post("/predict", json={"records": recs}, headers=headers)
    assert res.status_code == 200, res.text
    return res.json()


def test_shadow_predictions_are_logged_with_the_shadow_version_and_request_ids(root, server):
    from mlops_nb.monitor import servelog

    info = server.client.get("/version").json()
    assert info["version"] == 1 and info["shadow"]["ref"] == "iris@staging"
    assert info["shadow"]["version"] == 2 and info["shadow"]["problem"] is None
    health = server.client.get("/health").json()
    assert health["status"] == "ok" and health["shadow"]["status"] == "ok"
    recs, _ = iris(7)
    answers = [predict(server, recs[:3]), predict(server, recs[3:4], **{"X-Request-Id": 'o"1\''}),
               predict(server, recs[4:])]
    assert all(a["version"] == 1 for a in answers)
    ids = [a["request"] for a in answers]
    assert wait_for(lambda: set(ids) <= set(shadow_lines(root)))
    lines = shadow_lines(root)
    for a, n in zip(answers, (3, 1, 3), strict=True):
        line = lines[a["request"]]
        assert line["version"] == 2 and line["served_version"] == 1 and line["model"] == "iris"
        assert line["rows"] == n and len(line["prediction"]) == n and "x" not in line
    served = {x["request"]: x for x in log_lines(root) if not x.get("shadow")}
    assert all(served[r]["version"] == 1 and served[r]["rows"] == lines[r]["rows"] for r in ids)
    # drift monitoring reads only what was served: the shadow lines are neither served
    # records nor bad lines
    data = servelog.read(root / ".mlops_nb/serving/iris")
    assert set(data.versions) == {1} and data.bad.count == 0
    metrics = server.client.get("/metrics").text
    assert 'mlops_nb_shadow_records_total{outcome="predicted"}' in metrics


def test_labels_give_the_shadow_version_its_online_quality(root, server, tmp_path):
    """Version 2 (shuffled labels) in shadow, version 1 serving: the same 40 labels judge
    both; monitor shows version 2 marked shadow, clearly worse than version 1."""
    recs, truth = iris(40)
    answers = [predict(server, [r]) for r in recs]
    res = server.client.post("/feedback", json={"labels": [
        {"request": a["request"], "label": y} for a, y in zip(answers, truth, strict=True)]})
    assert res.status_code == 200, res.text
    assert res.json()["stored"] == 40  # the labels given; their shadow twins come along
    stored = [json.loads(x) for p in (root / ".mlops_nb/serving/iris").glob("feedback*.jsonl")
              for x in p.read_text().splitlines()]
    twins = [x for x in stored if x.get("shadow") is True]
    assert {x["request"] for x in twins} == {a["request"] for a in answers}
    assert {x["version"] for x in twins} == {2}
    # a label of the wrong type for the served version is still refused, shadow or not
    bad = server.client.post("/feedback", json={"labels": [
        {"request": predict(server, recs[:1])["request"], "label": "setosa"}]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["type"] == "label_type"

    (root / "params.yaml").write_text(json.dumps(
        {"mlops_nb": {"quality": {"min_labelled": 30}}}) + "\n")
    try:
        out = sh([sys.executable, "-m", "mlops_nb", "monitor", "iris", "--min-rows", "100000",
                  "--report-dir", str(tmp_path / "report")], root)
    finally:
        (root / "params.yaml").write_text("{}\n")
    q = json.loads((tmp_path / "report/monitor.json").read_text())["quality"]
    one, two = q["versions"]["1"], q["versions"]["2"]
    assert one["shadow"] == 0 and two["shadow"] == two["labelled"] >= 40
    assert two["stage"] == "staging" and two["enough"]
    acc1, acc2 = one["metrics"]["accuracy"]["value"], two["metrics"]["accuracy"]["value"]
    assert acc1 > 0.9 and acc2 < 0.6, (acc1, acc2)
    assert two["below_floor"] and not one["below_floor"]
    assert "version 2 (staging, classifier, shadow):" in out.stdout, out.stdout
    assert "(staging, shadow)" in (tmp_path / "report/monitor.html").read_text()


def test_bulk_labels_are_joined_to_the_shadow_predictions_too(root, server, tmp_path):
    import pandas as pd

    recs, truth = iris(3)
    out = predict(server, recs)
    assert wait_for(lambda: out["request"] in shadow_lines(root))
    shadowed = shadow_lines(root)[out["request"]]
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"request": [out["request"]] * 3, "index": [0, 1, 2],
                  "label": truth}).to_csv(csv, index=False)
    res = sh([sys.executable, "-m", "mlops_nb", "feedback", str(csv)], root)
    assert "stored 3 label(s)" in res.stdout
    folder = root / ".mlops_nb/serving/iris"
    mine = [json.loads(x) for p in folder.glob("feedback*.jsonl")
            for x in p.read_text().splitlines() if out["request"] in x]
    twins = sorted((x["index"], x["prediction"], x["label"]) for x in mine if x.get("shadow"))
    assert twins == [(i, shadowed["prediction"][i], truth[i]) for i in range(3)]
    assert {x["version"] for x in mine} == {1, shadowed["version"]} and len(mine) == 6


def test_a_failing_shadow_never_changes_an_answer_and_health_says_why(root, server):
    """No staging version, then a damaged one, then one that raises on every record: the
    answers and their status stay those of version 1 alone, /health stays ok and says the
    shadow's problem; a good staging version is then followed."""
    recs, _ = iris(20)
    reg = Registry(default_root(root))
    s = server
    expected = predict(s, recs)["predictions"]  # the module's server: one start costs seconds
    reg.set_stage("iris", reg.in_stage("iris", "staging").version, "archived")

    def still_answers(why: str) -> None:
        health = s.client.get("/health").json()
        assert health["status"] == "ok" and health["shadow"]["status"] == "failing"
        assert why in health["shadow"]["problem"], health
        for _ in range(3):
            out = predict(s, recs)
            assert out["predictions"] == expected and out["version"] == 1

    def shadow_says(why: str) -> bool:
        return why in (s.client.get("/health").json()["shadow"]["problem"] or "")

    assert wait_for(lambda: shadow_says("no staging version"))
    still_answers("no staging version")

    damaged = register(root, stage=None)
    model = next(p for p in (reg.get("iris", damaged).path / "model").iterdir()
                 if p.suffix == ".skops")
    model.write_bytes(model.read_bytes()[:-100])
    reg.set_stage("iris", damaged, "staging")
    assert wait_for(lambda: shadow_says("hash mismatch"))
    still_answers(f"iris/v{damaged}/model")

    raising = register(root, extra_column=True)
    assert wait_for(lambda: s.client.get("/version").json()["shadow"]["version"] == raising)
    predict(s, recs)
    assert wait_for(lambda: shadow_says("failed to predict"))
    still_answers("failed to predict")
    assert 'outcome="failed"' in s.client.get("/metrics").text

    good = register(root)
    assert wait_for(lambda: s.client.get("/version").json()["shadow"]["version"] == good)
    rid = predict(s, recs)["request"]
    assert wait_for(lambda: rid in shadow_lines(root))
    assert shadow_lines(root)[rid]["version"] == good
    assert s.client.get("/health").json()["shadow"] == {
        "ref": "iris@staging", "version": good, "status": "ok", "problem": None,
        "dropped": 0}


def test_a_full_shadow_queue_drops_and_counts_and_never_blocks(root, tmp_path):
    """A real server whose shadow is held busy (its own lock) with room for 2 requests: 12
    requests are all answered at once; the shadow predicts those it had room for (in one
    call) and counts the rest as dropped, in /metrics too."""
    import uvicorn

    from mlops_nb.serve.app import create_app
    from mlops_nb.serve.holder import ModelHolder
    from mlops_nb.serve.metrics import Metrics
    from mlops_nb.serve.reqlog import RequestLog
    from mlops_nb.serve.shadow import Shadow

    reg = Registry(default_root(root))
    metrics = Metrics()
    reqlog = RequestLog(tmp_path / "log")
    shadow = Shadow(reg, "iris:2", reqlog, metrics_registry=metrics.registry, queue_size=2,
                    poll=0.1)
    app = create_app(ModelHolder(reg, "iris", poll=0.1), reqlog=reqlog, metrics=metrics,
                     shadow=shadow)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started)
    recs, _ = iris(2)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            with shadow.busy:  # the shadow cannot predict meanwhile
                for _ in range(12):
                    r = c.post("/predict", json={"records": recs})
                    assert r.status_code == 200 and r.json()["version"] == 1
                dropped = shadow.counts["queue_full"]
                # the shadow took 1 to 3 requests before it blocked, the queue 2 more: of
                # 12 requests of 2 records, 7 to 9 dropped
                assert 14 <= dropped <= 18 and dropped % 2 == 0, shadow.counts
            assert shadow.wait_settled(30)
            assert shadow.counts["predicted"] + dropped == 24 and shadow.counts["failed"] == 0
            text = c.get("/metrics").text
            assert f'mlops_nb_shadow_records_total{{outcome="queue_full"}} {dropped}.0' in text
            assert c.get("/health").json()["shadow"]["dropped"] == dropped
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    logged = [json.loads(x) for p in (tmp_path / "log").glob("requests-*.jsonl")
              for x in p.read_text().splitlines()]
    assert sum(1 for x in logged if x.get("shadow")) * 2 == 24 - dropped
    assert sum(1 for x in logged if not x.get("shadow")) == 12


@pytest.mark.parametrize(("value", "says"), [
    ("other@staging", "a version of the served model 'iris'"),
    ("iris@production", "the version being served"),
    ('iris"\n@staging', "not a model reference"),
    ("iris:abc", "neither a stage nor a version number"),
    ("iris@candidate", "neither a stage nor a version number"),
    ("x" * 100_000, "not a model reference"),
])
def test_hostile_shadow_values_are_refused_with_a_clear_error(value, says):
    with pytest.raises(UsageError, match="give iris@staging"):
        check_ref("iris", value)
    try:
        check_ref("iris", value)
    except UsageError as exc:
        assert says in str(exc) and "\n" not in str(exc)
        assert len(str(exc)) < 400


def test_shadow_refs_that_work_as_documented():
    assert check_ref("iris", "iris") == "iris@staging"  # NAME alone: its staging version
    assert check_ref("iris", "iris@staging") == "iris@staging"
    assert check_ref("iris", "iris:02") == "iris:2"  # pinned
    assert check_ref("iris:1", "iris@production") == "iris@production"  # served is pinned
    with pytest.raises(UsageError, match="the version being served"):
        check_ref("iris:3", "iris:3")
    with pytest.raises(UsageError, match="the version being served"):
        check_ref("iris@staging", "iris")


def test_the_cli_refuses_a_shadow_of_another_model_before_loading(root):
    res = serve_cli(root, "iris", "--shadow", "wine@staging", "--port", str(free_port()))
    assert res.returncode == 2, res.stderr
    assert "the shadow must be a version of the served model 'iris'" in res.stderr


def test_a_request_answered_by_the_shadowed_version_itself_is_not_shadowed(root, tmp_path):
    """`--shadow iris:1` while version 1 serves (e.g. after a promotion): the same
    predictions would count twice in online quality, so that request gets no shadow line."""
    from mlops_nb.serve.reqlog import RequestLog
    from mlops_nb.serve.shadow import Shadow

    reqlog = RequestLog(tmp_path / "log")
    reqlog.start()
    shadow = Shadow(Registry(default_root(root)), "iris:1", reqlog, poll=0.1)
    shadow.start()
    try:
        recs, _ = iris(3)
        assert shadow.submit("served-by-1", time.time(), recs, 1)
        assert shadow.submit("served-by-2", time.time(), recs, 2)
        assert shadow.wait_settled(30)
    finally:
        shadow.stop()
        reqlog.stop()
    assert shadow.counts["same_version"] == 3 and shadow.counts["predicted"] == 3
    logged = [json.loads(x) for p in (tmp_path / "log").glob("requests-*.jsonl")
              for x in p.read_text().splitlines()]
    assert [(x["request"], x["version"], x["served_version"]) for x in logged] == [
        ("served-by-2", 1, 2)]
