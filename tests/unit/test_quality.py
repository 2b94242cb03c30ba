"""Online quality's pure parts: the metrics equal scikit-learn's, intervals, verdicts against
floors and the offline metrics, too few labels give no verdict; the thresholds of params.yaml;
label types; the feedback log read back and followed across a rotation."""

from __future__ import annotations

import json
import os
import random
import time

import pytest
from sklearn import metrics as skm

from mlops_nb.errors import ConfigError
from mlops_nb.monitor import qmetrics, qreport, rollback
from mlops_nb.monitor.quality import (
    Thresholds,
    evaluate,
    from_report,
    offline_below_floor,
    thresholds,
)
from mlops_nb.serve import feedlog
from mlops_nb.serve.feedback import Target, check_entry, parse_body
from mlops_nb.serve.reqlog import RequestLog


def pairs(n: int, right: float, classes=(0, 1, 2), seed: int = 1):
    rnd = random.Random(seed)
    y = [rnd.choice(classes) for _ in range(n)]
    p = [v if rnd.random() < right else rnd.choice(classes) for v in y]
    return y, p


@pytest.mark.parametrize("name, sk", [
    ("accuracy", skm.accuracy_score),
    ("f1_macro", lambda y, p: skm.f1_score(y, p, average="macro")),
    ("f1_micro", lambda y, p: skm.f1_score(y, p, average="micro")),
    ("f1_weighted", lambda y, p: skm.f1_score(y, p, average="weighted")),
    ("f1", lambda y, p: skm.f1_score(y, p, average="macro")),  # three classes: macro
])
def test_classifier_metrics_equal_scikit_learns(name, sk):
    y, p = pairs(300, 0.7)
    assert qmetrics.value(name, y, p) == pytest.approx(sk(y, p))


def test_binary_f1_and_regression_metrics_equal_scikit_learns():
    y, p = pairs(200, 0.8, classes=(0, 1))
    assert qmetrics.value("f1", y, p) == pytest.approx(skm.f1_score(y, p))
    rnd = random.Random(2)
    yr = [rnd.gauss(10, 3) for _ in range(150)]
    pr = [v + rnd.gauss(0, 1) for v in yr]
    assert qmetrics.value("rmse", yr, pr) == pytest.approx(skm.mean_squared_error(yr, pr) ** .5)
    assert qmetrics.value("mae", yr, pr) == pytest.approx(skm.mean_absolute_error(yr, pr))
    assert qmetrics.value("r2", yr, pr) == pytest.approx(skm.r2_score(yr, pr))


def test_intervals_wilson_for_accuracy_bootstrap_for_the_others():
    low, high, method = qmetrics.interval("accuracy", [1] * 8 + [0] * 2, [1] * 10, 0.95)
    assert method == "wilson" and (round(low, 3), round(high, 3)) == (0.49, 0.943)
    y, p = pairs(400, 0.7)
    low, high, method = qmetrics.interval("f1_macro", y, p, 0.95)
    value = qmetrics.value("f1_macro", y, p)
    assert method == "bootstrap" and low < value < high and high - low < 0.15
    assert qmetrics.interval("f1_macro", y, p, 0.95) == (low, high, method)  # seeded
    assert qmetrics.interval("rmse", [], [], 0.95) == (None, None, "none")


def labels(version: int, y, p, served: float = 1_000_000.0):
    return [{"version": version, "label": a, "prediction": b, "served": served + i,
             "request": f"r{i}", "index": 0} for i, (a, b) in enumerate(zip(y, p, strict=True))]


CLASSIFIER = {"stage": "production", "metrics": {"accuracy": 0.95, "f1_macro": 0.94},
              "classes": [0, 1, 2]}


def test_a_version_below_its_offline_accuracy_or_floor_is_breached():
    good, bad = pairs(100, 1.0), pairs(100, 0.2)
    q = evaluate("iris", labels(1, *good) + labels(2, *bad),
                 {1: {**CLASSIFIER, "stage": "archived"}, 2: CLASSIFIER},
                 Thresholds(min_labelled=30, floors={"accuracy": 0.6}))
    assert q.status == "breached"
    one, two = q.versions[1], q.versions[2]
    assert (one.enough, one.below_floor, one.breached) == (True, False, [])
    assert one.metrics["accuracy"].status == "held" and one.metrics["accuracy"].value == 1.0
    assert two.below_floor and set(two.breached) == {"accuracy", "f1_macro"}
    acc = two.metrics["accuracy"]
    assert acc.below_floor and acc.dropped and acc.allowed == pytest.approx(0.95 * 0.95)
    assert two.metrics["f1"].status == "no threshold"  # not offline, no floor
    assert set(two.metrics) == {"accuracy", "f1", "f1_macro"}
    d = q.to_dict()
    assert d["versions"]["2"]["below_floor"] and d["thresholds"]["floors"] == {"accuracy": 0.6}
    assert from_report(json.loads(json.dumps(d))) == q  # plain JSON, and back
    policy = rollback.from_online(from_report(d).versions)  # what monitor --rollback judges
    assert policy[2].below_floor and policy[2].enough and not policy[1].below_floor
    assert policy[2].floors["accuracy"] == 0.6 and policy[2].metrics["accuracy"] < 0.6
    assert any("BREACHED" in line for line in qreport.lines(d))


def test_fewer_labels_than_the_minimum_give_no_verdict_and_no_breach():
    q = evaluate("iris", labels(1, *pairs(29, 0.0)), {1: CLASSIFIER},
                 Thresholds(min_labelled=30, floors={"accuracy": 0.9}))
    v = q.versions[1]
    assert q.status == "insufficient" and not v.enough and not v.below_floor
    assert v.labelled == 29 and v.metrics["accuracy"].status == "insufficient"
    assert v.metrics["accuracy"].value is not None  # shown, just not judged
    assert any("fewer than 30: no verdict" in line for line in qreport.lines(q.to_dict()))


def test_error_metrics_floors_are_ceilings_and_drops_are_rises():
    rnd = random.Random(3)
    y = [rnd.gauss(0, 1) for _ in range(60)]
    p = [v + 2.0 for v in y]  # off by 2: rmse = mae = 2
    info = {"stage": "production", "metrics": {"rmse": 1.0, "mae": 1.9}, "classes": []}
    q = evaluate("house", labels(1, y, p), {1: info},
                 Thresholds(min_labelled=10, max_drop=0.1, floors={"mae": 2.5}))
    v = q.versions[1]
    assert v.kind == "regressor" and set(v.metrics) == {"rmse", "mae"}
    assert v.metrics["rmse"].allowed == pytest.approx(1.1) and v.metrics["rmse"].dropped
    mae = v.metrics["mae"]
    assert mae.allowed == pytest.approx(2.09) and not mae.dropped and not mae.below_floor
    assert v.breached == ["rmse"]
    assert not v.offline_below_floor
    q = evaluate("house", labels(1, y, p), {1: info},
                 Thresholds(min_labelled=10, floors={"mae": 1.5}))
    assert q.versions[1].offline_below_floor  # the offline mae is past the ceiling already
    assert offline_below_floor({"accuracy": 0.7}, Thresholds(floors={"accuracy": 0.8}))
    assert not offline_below_floor({"accuracy": 0.9, "rmse": True},
                                   Thresholds(floors={"accuracy": 0.8, "rmse": 1.0}))


def test_windows_split_by_prediction_time_and_unknown_versions_are_noted():
    y, p = pairs(40, 1.0)
    rows = labels(1, y[:20], p[:20], served=0.0) + labels(1, y[20:], p[20:], served=7200.0)
    q = evaluate("iris", rows + labels(9, [0], [0]), {1: CLASSIFIER},
                 Thresholds(min_labelled=10, window_hours=1))
    windows = q.versions[1].windows
    assert [w["labelled"] for w in windows] == [20, 20]
    assert windows[0]["start"] == "1970-01-01T00:00:00+00:00"
    assert windows[1]["metrics"]["accuracy"]["value"] == 1.0
    assert q.notes == ["1 label(s) of version 9, which the registry no longer has: not"
                       " evaluated"]


def test_thresholds_from_params_yaml_are_checked():
    assert thresholds(None) == Thresholds()
    th = thresholds({"mlops_nb": {"quality": {"min_labelled": 50, "max_drop": 0.1,
                                              "floors": {"accuracy": 0.8, "rmse": 3}}}})
    assert (th.min_labelled, th.max_drop, dict(th.floors)) == (50, 0.1, {"accuracy": 0.8,
                                                                          "rmse": 3.0})
    for bad, says in [({"min_labelled": 0}, "min_labelled must be a whole number"),
                      ({"min_labelled": 2.5}, "min_labelled must be a whole number"),
                      ({"max_drop": "5%"}, "max_drop must be a number"),
                      ({"max_drop": True}, "max_drop must be a number"),
                      ({"confidence": 1.0}, "confidence must be a number from 0.5"),
                      ({"floors": {"acuracy": 0.8}}, "floors: 'acuracy' is not a metric"),
                      ({"floors": {'a"\nb': 0.8}}, "floors: 'a\"\\\\nb' is not a metric"),
                      ({"floors": [0.8]}, "floors must map metric names"),
                      ({"min_labeled": 5}, "'min_labeled' is not a threshold"),
                      ({"floors": {"accuracy": float("nan")}}, "floors.accuracy must be")]:
        with pytest.raises(ConfigError, match=says):
            thresholds({"mlops_nb": {"quality": bad}})


def test_labels_must_have_the_targets_type():
    classes = Target((0, 1, 2))
    assert classes.problem(1) is None
    for bad in ("1", True, 1.5, 3, None):
        assert "not one of the model's classes" in classes.problem(bad)
    assert Target(("cat", "dog")).problem("dog") is None
    assert Target((0.0, 1.0)).problem(1) is None  # an int equal to a float class
    numbers = Target(None)
    assert numbers.problem(2) is None and numbers.problem(-1.5e10) is None
    for bad in ("2", True, 10**400, float("inf")):
        assert numbers.problem(bad), bad
    assert classes.from_text("2") == 2 and classes.from_text("x") == "x"
    assert Target((False, True)).from_text("true") is True
    assert numbers.from_text("1.5") == 1.5


def test_entries_and_bodies_are_checked_before_any_lookup():
    assert check_entry(0, {"request": "r", "label": 1}) == (("r", 0, 1), [])
    _, errors = check_entry(3, {"request": "a\nb", "index": True, "label": {"x": 1}})
    assert {(e.entry, e.kind) for e in errors} == {(3, "request_invalid"),
                                                   (3, "index_invalid"), (3, "label_type")}
    assert parse_body(b'{"labels": [{"request": "r", "label": 0}]}') == [
        {"request": "r", "label": 0}]


def test_the_feedback_log_is_read_back_and_followed_across_a_rotation(tmp_path):
    entry = {"ts": time.time(), "request": "r1", "index": 0, "model": "m", "version": 1,
             "served": 5.0, "prediction": 1, "label": 1, "source": "api"}
    with feedlog.locked(tmp_path):
        feedlog.append(tmp_path, feedlog.line(entry) + "{torn\n" + feedlog.line(
            {**entry, "request": "r2", "served": "later"}), max_bytes=2**20, max_files=3)
    got, skipped = feedlog.read(tmp_path)
    assert [r["request"] for r in got] == ["r1"]
    assert skipped.count == 2 and skipped.first[0] == {"file": "feedback.jsonl", "line": 2,
                                                       "reason": "invalid JSON (a torn or"
                                                                 " damaged line)"}
    assert oct(os.stat(tmp_path / "feedback.jsonl").st_mode & 0o777) == "0o600"
    tail = feedlog.Tail(tmp_path, feedlog.PATTERN)
    assert len(list(tail.new_lines())) == 3
    os.rename(tmp_path / "feedback.jsonl", tmp_path / "feedback-1-1.jsonl")  # rotated
    with feedlog.locked(tmp_path):
        feedlog.append(tmp_path, feedlog.line({**entry, "request": "r3"}), max_bytes=2**20,
                       max_files=3)
    assert [json.loads(raw)["request"] for _, _, raw in tail.new_lines()] == ["r3"]
    assert feedlog.read(tmp_path, since=6.0)[0] == []
    for i in range(5):  # rotation keeps the newest max_files files
        with feedlog.locked(tmp_path):
            feedlog.append(tmp_path, feedlog.line({**entry, "request": f"x{i}"}),
                           max_bytes=10, max_files=3)
    assert len(feedlog.files(tmp_path, feedlog.PATTERN)) == 3


def test_a_symlinked_feedback_file_is_never_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    folder = tmp_path / "log"
    folder.mkdir()
    (folder / "feedback.jsonl").symlink_to(victim)
    with pytest.raises(Exception, match="symlink"), feedlog.locked(folder):
        feedlog.append(folder, "x\n", max_bytes=2**20, max_files=3)
    assert victim.read_text() == "keep\n"
    assert feedlog.read(folder)[1].files == ["feedback.jsonl: a symlink, never followed"]


def test_the_request_log_says_when_what_was_queued_is_written(tmp_path):
    log = RequestLog(tmp_path)
    log.start()
    try:
        log.submit({"ts": 1.0, "request": "r", "model": "m", "version": 1}, [{"a": 1}], [0])
        assert log.wait_written(timeout=30)
        assert '"request":"r"' in next(tmp_path.glob("requests-*.jsonl")).read_text()
    finally:
        log.stop()


def test_a_labels_file_is_named_with_what_is_wrong_in_it(tmp_path):
    from mlops_nb.errors import DataValidationError, UsageError
    from mlops_nb.serve.feedfile import read_entries

    (tmp_path / "typo.csv").write_text("request,idx,label\nr1,0,1\n")
    with pytest.raises(DataValidationError, match="unknown column 'idx'") as err:
        read_entries(tmp_path / "typo.csv")
    assert err.value.exit_code == 7 and "typo.csv" in str(err.value)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(UsageError, match="junk.parquet: cannot be read as parquet"):
        read_entries(tmp_path / "junk.parquet")
    with pytest.raises(UsageError, match="missing.csv: no such file"):
        read_entries(tmp_path / "missing.csv")
    (tmp_path / "labels.txt").write_text("request,label\nr1,1\n")
    with pytest.raises(UsageError, match="labels.txt: not a .csv or .parquet file"):
        read_entries(tmp_path / "labels.txt")


def test_csv_labels_keep_ids_as_text_and_missing_cells_named(tmp_path):
    from mlops_nb.serve.feedfile import read_entries

    path = tmp_path / "labels.csv"
    path.write_text('request,index,label\n00123,0,1\n"a ""quoted""\nid",,setosa\n')
    assert read_entries(path) == [{"request": "00123", "index": 0, "label": "1"},
                                  {"request": 'a "quoted"\nid', "label": "setosa"}]
