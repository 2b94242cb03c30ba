"""Feedback closes the loop on a real server: labels of earlier predictions, given by request
id and record index through POST /feedback or `mlops-nb feedback FILE`, are stored all or
nothing (a bad entry is named, and nothing of its request is stored, nor anything stored
before changed), and `mlops-nb monitor` turns them into online quality per version."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mlops_nb import artifacts
from mlops_nb.guards.lineage import LineageStore, default_path
from mlops_nb.guards.registry import Registry, default_root, reference_of, schema_of
from tests.conftest import cli_in_process, sh
from tests.integration.serving import raw_post, serving, trained_example
from tests.receiver import receiving

pytestmark = pytest.mark.slow

TOKEN = "feedback-token-of-32-characters!"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return trained_example(tmp_path_factory.mktemp("feedback") / "example",
                           tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def server(root):
    with serving(root, "--poll", "0.1", token=TOKEN) as s:
        yield s


def records(root: Path, n: int, start: int = 0) -> list[dict]:
    frame = artifacts.load(root / "outputs/prepare/X_test").iloc[start:start + n]
    return json.loads(frame.to_json(orient="records"))


def predict(server, recs: list[dict], **headers: str) -> dict:
    res = server.client.post("/predict", json={"records": recs}, headers=headers)
    assert res.status_code == 200, res.text
    return res.json()


def stored(root: Path) -> dict[str, bytes]:
    """Every feedback file's bytes: what a refused submission must leave as it was."""
    folder = root / ".mlops_nb/serving/iris"
    return {p.name: p.read_bytes() for p in sorted(folder.glob("feedback*.jsonl"))}


def labels(root: Path) -> list[dict]:
    return [json.loads(x) for data in stored(root).values() for x in data.splitlines()]


def send(server, entries, **kw) -> httpx.Response:
    return server.client.post("/feedback", json={"labels": entries}, **kw)


def test_labels_are_stored_joined_to_their_predictions(root, server):
    batch = predict(server, records(root, 3))
    one = predict(server, records(root, 1, 3))
    assert len(batch["request"]) == 32 and batch["request"] != one["request"]
    before = len(labels(root))
    res = send(server, [{"request": batch["request"], "index": i, "label": p}
                        for i, p in enumerate(batch["predictions"])]
               + [{"request": one["request"], "label": one["predictions"][0]}])  # index 0
    assert res.status_code == 200, res.text
    assert res.json() == {"model": "iris", "stored": 4}
    new = labels(root)[before:]
    assert [(x["request"], x["index"], x["label"], x["prediction"]) for x in new] == [
        *((batch["request"], i, p, p) for i, p in enumerate(batch["predictions"])),
        (one["request"], 0, one["predictions"][0], one["predictions"][0])]
    assert all(x["version"] == batch["version"] and x["served"] <= x["ts"] for x in new)
    metrics = server.client.get("/metrics").text
    assert 'mlops_nb_requests_total{path="/feedback",status="200"}' in metrics
    assert "mlops_nb_feedback_labels_total" in metrics
    folder = root / ".mlops_nb/serving/iris"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {"0o600"}


def test_a_client_request_id_is_kept_and_a_hostile_one_replaced(root, server):
    mine = predict(server, records(root, 1), **{"X-Request-Id": "order-\"42\"-'x'"})
    assert mine["request"] == "order-\"42\"-'x'"
    long = predict(server, records(root, 1), **{"X-Request-Id": "x" * 129})
    assert len(long["request"]) == 32  # too long to be named by a label: a fresh id
    res = send(server, [{"request": "order-\"42\"-'x'", "label": mine["predictions"][0]}])
    assert res.status_code == 200, res.text


def bad_cases(good: str, other: str) -> dict[str, tuple[list, set]]:
    """name -> (entries, {(entry, type)} the 422 must name); entry 0 is always good."""
    ok = {"request": good, "index": 0, "label": 0}
    return {
        "unknown id": ([ok, {"request": "no-such-request", "label": 0}],
                       {(1, "unknown_request")}),
        "index past the request's records": ([ok, {"request": good, "index": 5, "label": 1}],
                                             {(1, "index_invalid")}),
        "a string for int classes": ([ok, {"request": other, "label": "setosa"}],
                                     {(1, "label_type")}),
        "a float label": ([ok, {"request": other, "label": 1.5}], {(1, "label_type")}),
        "true is no class": ([ok, {"request": other, "label": True}], {(1, "label_type")}),
        "a class the model has not": ([ok, {"request": other, "label": 7}],
                                      {(1, "label_type")}),
        "labelled twice in one body": ([ok, {"request": other, "label": 1},
                                        {"request": other, "index": 0, "label": 2}],
                                       {(2, "duplicate")}),
        "a quote and newline in the id": ([ok, {"request": 'a"\n\\b', "label": 0}],
                                          {(1, "request_invalid")}),
        "a huge id": ([ok, {"request": "r" * 100_000, "label": 0}], {(1, "request_invalid")}),
        "a huge integer": ([ok, {"request": other, "label": 10**400}], {(1, "label_type")}),
        "a nested label": ([ok, {"request": other, "label": [[[0]]]}], {(1, "label_type")}),
        "no label": ([ok, {"request": other}], {(1, "label_missing")}),
        "an unknown field": ([ok, {"request": other, "label": 0, "lable": 0}],
                             {(1, "extra_forbidden")}),
        "a negative index": ([ok, {"request": other, "index": -1, "label": 0}],
                             {(1, "index_invalid")}),
    }


def test_bad_feedback_is_refused_naming_each_entry_and_nothing_is_stored(root, server):
    first = predict(server, records(root, 2))
    good, other = first["request"], predict(server, records(root, 1))["request"]
    assert send(server, [{"request": good, "index": 1, "label": first["predictions"][1]}]
                ).status_code == 200
    for name, (entries, expected) in bad_cases(good, other).items():
        before = stored(root)
        res = send(server, entries)
        assert res.status_code == 422, (name, res.text)
        errors = res.json()["errors"]
        assert {(e["entry"], e["type"]) for e in errors} == expected, (name, errors)
        assert all(f"entry {e['entry']}:" in e["message"] for e in errors), errors
        assert stored(root) == before, name  # entry 0 was good: not stored either
    # a label stored already is never overwritten
    before = stored(root)
    res = send(server, [{"request": good, "index": 1, "label": 2}])
    assert res.status_code == 422 and res.json()["errors"][0]["type"] == "duplicate"
    assert "never overwritten" in res.json()["errors"][0]["message"]
    assert stored(root) == before


@pytest.mark.parametrize("body, kind", [
    (b"[" * 100_000 + b"]" * 100_000, "json_invalid"),  # deep JSON
    (b'{"labels": [{"request": "r", "label": NaN}]}', "json_invalid"),
    (b'{"labels": [{"request": "r", "label": 1e400}]}', "label_type"),  # infinity
    (b'{"labels": []}', "body_invalid"),
    (b'{"labels": [], "more": 1}', "extra_forbidden"),
    (b'"labels"', "body_invalid"),
    (b'{"labels": ' + json.dumps([{"request": "r", "label": 0}] * 10_001).encode() + b"}",
     "too_long"),
], ids=["deep", "nan", "huge float", "empty", "extra key", "not an object", "too many"])
def test_hostile_bodies_get_422_and_store_nothing(root, server, body, kind):
    before = stored(root)
    res = server.client.post("/feedback", content=body,
                             headers={"Content-Type": "application/json"})
    assert res.status_code == 422, res.text[:300]
    assert kind in {e["type"] for e in res.json()["errors"]}
    assert stored(root) == before


def test_big_bodies_and_missing_tokens_are_refused(root, server):
    rid = predict(server, records(root, 1))["request"]
    before = stored(root)
    ten_mb = 10 * 2**20
    status, response, sent = raw_post(
        server.port, "/feedback", {"Content-Type": "application/json",
                                   "Authorization": f"Bearer {TOKEN}",
                                   "Content-Length": str(ten_mb)},
        iter([b'{"labels": [' + b" " * (ten_mb - 13) + b"]}"]), chunked=False)
    assert status == 413 and b"over the limit" in response, response[:200]
    body = {"labels": [{"request": rid, "label": 0}]}
    url = server.url + "/feedback"
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}
                      ).status_code == 401
    assert httpx.post(url, content=json.dumps(body), headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"}).status_code == 415
    assert stored(root) == before


def test_a_planted_link_or_another_users_file_is_never_written(root, server, tmp_path):
    out = predict(server, records(root, 1))
    entry = [{"request": out["request"], "label": out["predictions"][0]}]
    active = root / ".mlops_nb/serving/iris/feedback.jsonl"
    aside = tmp_path / "aside.jsonl"
    if active.exists():
        os.rename(active, aside)
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    try:
        active.symlink_to(victim)
        res = send(server, entry)
        assert res.status_code == 503 and "nothing was stored" in res.text, res.text
        assert victim.read_text() == "keep\n"
        active.unlink()
        if os.geteuid() == 0:
            active.write_text("")
            os.chown(active, 65534, 65534)
            assert send(server, entry).status_code == 503
            assert active.read_text() == ""
            active.unlink()
    finally:
        active.unlink(missing_ok=True)
        if aside.exists():
            os.rename(aside, active)
    assert send(server, entry).status_code == 200  # and labels are taken again


def test_feedback_waiting_on_its_lock_never_holds_predict(root, server):
    """41 labels wait on the feedback lock (held here, as a long bulk import would): more
    than the 40 threads /predict uses; predictions are still answered, and when the lock is
    let go exactly one of the 41 identical labels is stored."""
    out = predict(server, records(root, 1))
    rid, label = out["request"], out["predictions"][0]
    before = len(labels(root))
    lock = root / ".mlops_nb/serving/iris/feedback.lock"
    answers: list[int] = []
    with open(lock, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        clients = [threading.Thread(target=lambda: answers.append(httpx.post(
            server.url + "/feedback", json={"labels": [{"request": rid, "label": label}]},
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120).status_code))
            for _ in range(41)]
        for c in clients:
            c.start()
        for _ in range(5):
            predict(server, records(root, 2))
        assert answers == []  # every label still waits: the lock was held throughout
    for c in clients:
        c.join()
    assert sorted(answers) == [200] + [422] * 40
    assert len(labels(root)) == before + 1


def mlops(args: list[str], root: Path):
    return sh([sys.executable, "-m", "mlops_nb", *args], root, check=False)


def test_bulk_labels_from_csv_and_parquet(root, server, tmp_path):
    import pandas as pd

    a = predict(server, records(root, 3))
    b = predict(server, records(root, 2, 3))
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"request": [a["request"]] * 3, "index": [0, 1, 2],
                  "label": a["predictions"]}).to_csv(csv, index=False)
    res = mlops(["feedback", str(csv)], root)
    assert res.returncode == 0, res.stderr
    assert "stored 3 label(s)" in res.stdout
    pq = tmp_path / "labels.parquet"
    pd.DataFrame({"request": [b["request"]] * 2, "index": [0, 1],
                  "label": b["predictions"]}).to_parquet(pq)
    assert cli_in_process(["feedback", str(pq)], root, check=False).returncode == 0
    got = {(x["request"], x["index"]): x["source"] for x in labels(root)}
    assert got[(a["request"], 2)] == "file" and got[(b["request"], 1)] == "file"

    before = stored(root)
    bad = tmp_path / 'bad "labels"\n.csv'
    bad.write_text(f"request,index,label\n{b['request']},0,1\nnope,0,1\n{b['request']},9,x\n")
    res = cli_in_process(["feedback", str(bad)], root, check=False)
    assert res.returncode == 7, res.stdout + res.stderr
    assert str(bad) in res.stderr
    assert "row 1 (line 2)" in res.stderr and "stored already" in res.stderr
    assert "row 2 (line 3)" in res.stderr and "unknown request id" in res.stderr
    assert "row 3 (line 4)" in res.stderr
    assert stored(root) == before
    assert "Traceback" not in res.stderr


def quality_of(root: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None,
               **params) -> tuple[dict, str]:
    """monitor's report with these quality thresholds in params.yaml, and what it printed."""
    text = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(text + "mlops_nb:\n  quality: " + json.dumps(params)
                                      + "\n")
    try:
        # the same few test rows served again and again are no sample for drift: only
        # online quality is judged here (drift has its own tests, test_monitor.py)
        res = sh([sys.executable, "-m", "mlops_nb", "monitor", "--min-rows", "100000",
                  "--report-dir", str(tmp_path / "report"), *args], root, check=False,
                 **(env or {}))
    finally:
        (root / "params.yaml").write_text(text)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads((tmp_path / "report/monitor.json").read_text())
    page = (tmp_path / "report/monitor.html").read_text()
    assert "Online quality" in page and "data:image/png;base64," in page
    return report, res.stdout


def trigger_of(root: Path, tmp_path: Path, **params) -> dict:
    """The online-quality trigger of `trigger --dry-run` with these quality thresholds."""
    text = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(text + "mlops_nb:\n  quality: " + json.dumps(params)
                                      + "\n")
    try:
        res = sh([sys.executable, "-m", "mlops_nb", "trigger", "--dry-run", "--json",
                  "--min-rows", "100000", "--report-dir", str(tmp_path / "trigger")], root,
                 check=False)
    finally:
        (root / "params.yaml").write_text(text)
    assert res.returncode == 0, res.stdout + res.stderr
    return next(t for t in json.loads(res.stdout)["triggers"] if t["kind"] == "online-quality")


def test_monitor_gives_online_quality_per_version_against_offline(root, server, tmp_path):
    """Version 1's predictions are confirmed, then version 2 (promoted) is wrong every time:
    version 2 breaches its offline accuracy and the floor, version 1 holds; with a minimum
    above the labels there is no verdict and no breach."""
    reg = Registry(default_root(root))
    v1 = reg.get("iris", 1)
    for i in range(12):
        out = predict(server, records(root, 1, i))
        assert send(server, [{"request": out["request"], "label": out["predictions"][0]}]
                    ).status_code == 200
    v2 = reg.register("iris", reg.load_model("iris", 1), dict(v1.metrics), schema=schema_of(v1),
                      reference=reference_of(v1))
    reg.promote("iris", v2.version)
    deadline = time.monotonic() + 60
    while server.client.get("/version").json()["version"] != v2.version:
        assert time.monotonic() < deadline, "the service never followed the promotion"
        time.sleep(0.05)  # polling a state (the service follows the registry), not a time
    for i in range(12):
        out = predict(server, records(root, 1, i))
        assert out["version"] == v2.version
        wrong = (out["predictions"][0] + 1) % 3
        assert send(server, [{"request": out["request"], "label": wrong}]).status_code == 200

    report, out = quality_of(root, tmp_path, min_labelled=10, floors={"accuracy": 0.5})
    q = report["quality"]
    assert q["status"] == "breached"
    one, two = q["versions"]["1"], q["versions"][str(v2.version)]
    assert one["labelled"] >= 12 and one["enough"] and not one["below_floor"]
    assert set(one["metrics"]) == {"accuracy", "f1", "f1_macro"}  # and the offline f1_macro
    acc = one["metrics"]["accuracy"]
    assert acc["value"] == 1.0 and acc["status"] == "held" and acc["interval"] == "wilson"
    assert acc["offline"] == v1.metrics["accuracy"] and acc["low"] < 1.0
    assert two["labelled"] == 12 and two["below_floor"] and two["stage"] == "production"
    assert set(two["breached"]) == {"accuracy", "f1_macro"}  # the offline metrics
    assert two["metrics"]["f1"]["status"] == "no threshold"  # no offline f1 and no floor
    assert two["metrics"]["accuracy"]["value"] == 0.0
    assert two["metrics"]["accuracy"]["below_floor"] and two["metrics"]["accuracy"]["dropped"]
    assert two["windows"] and two["windows"][-1]["labelled"] == 12

    assert "online quality: BREACHED" in out and "BREACHED" in out.split("version 2")[1]

    # `mlops-nb trigger`'s online-quality trigger reads the same verdict (issue 22)
    online = trigger_of(root, tmp_path, min_labelled=10, floors={"accuracy": 0.5})
    assert online["holds"] and online["figures"]["version"] == v2.version, online
    assert online["figures"]["labelled"] == 12 and "accuracy" in online["figures"]["breached"]
    assert f"iris:{v2.version} on 12 labelled records" in online["reason"]
    online = trigger_of(root, tmp_path, min_labelled=1000)
    assert not online["holds"] and "fewer than 1000" in online["reason"], online

    report, out = quality_of(root, tmp_path, "--rollback", min_labelled=1000,
                             floors={"accuracy": 0.5})
    q = report["quality"]
    assert q["status"] == "insufficient"
    assert not any(v["below_floor"] or v["breached"] for v in q["versions"].values())
    assert "fewer than 1000: no verdict" in out and "BREACHED" not in out
    assert "too few for a verdict: no rollback" in out  # too few labels: nothing moves
    assert reg.production("iris").version == v2.version


def test_monitor_rollback_brings_the_better_version_back_under_load(root, server, tmp_path):
    """The issue's loop end to end: version 2 clearly worse online than version 1 (the test
    above, which this one reuses when it ran first on this server); `monitor --rollback`
    puts version 1 back, the service swaps with no failed request from concurrent clients,
    the webhook gets exactly one alert, the lineage store the rollback and its figures."""
    reg = Registry(default_root(root))
    if reg.production("iris").version == 1:  # run alone: make version 2 and its labels
        test_monitor_gives_online_quality_per_version_against_offline(root, server, tmp_path)
    bad = reg.production("iris").version
    assert bad != 1
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=30,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            while not stop.is_set():
                r = c.post("/predict", json={"records": records(root, 2)})
                seen.append((r.status_code, r.json().get("version", -1)))

    clients = [threading.Thread(target=load) for _ in range(2)]
    with receiving() as rec:
        for c in clients:
            c.start()
        try:
            report, out = quality_of(root, tmp_path, "--rollback",
                                     env={"MLOPS_NB_ALERT_WEBHOOK": rec.url},
                                     min_labelled=10, floors={"accuracy": 0.5})
            assert f"rollback: rolled back iris:{bad} -> iris:1" in out, out
            deadline = time.monotonic() + 60
            while server.client.get("/version").json()["version"] != 1:
                assert time.monotonic() < deadline, "the service never swapped back"
                time.sleep(0.05)  # polling a state, not synchronising on time
            after = len(seen)
            while len(seen) < after + 5:  # version 1 answers the load
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            stop.set()
            for c in clients:
                c.join()
    assert seen and all(code == 200 for code, _ in seen), [x for x in seen if x[0] != 200]
    assert seen[-1][1] == 1
    assert reg.production("iris").version == 1
    (alert,) = rec.bodies()  # one notification: the incident, telling the rollback
    assert f"iris:{bad} -&gt; iris:1" in alert["text"] or f"iris:{bad} -> iris:1" in alert[
        "text"], alert
    (event,) = LineageStore(default_path(root)).events("rollback")
    assert (event["payload"]["from"], event["payload"]["to"]) == (bad, 1)
    assert rec.url not in out
    # the report on disk tells the whole run: the rollback and the incident it opened
    assert report["rollback"]["rolled_back"] and report["rollback"]["to"] == 1, report
    incidents = {i["check"]: kind for kind in ("opened", "ongoing")
                 for i in report["alerts"][kind]}
    assert "quality" in incidents, report["alerts"]
    page = (tmp_path / "report/monitor.html").read_text()
    assert "<h2>Rollback</h2><p>rolled back" in page
    assert f"quality: {incidents['quality']}" in page
    assert rec.url not in (tmp_path / "report/monitor.json").read_text() + page
