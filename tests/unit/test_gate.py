"""The model gate: rules on numbers, then promote_if_better with a real registry and store."""

from __future__ import annotations

import math

import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from mlops_nb import guards
from mlops_nb.errors import ConfigError, ModelBlockedError
from mlops_nb.execute import runtime
from mlops_nb.guards import gate
from mlops_nb.guards.lineage import LineageStore
from mlops_nb.guards.registry import Registry

ACC = gate.config_from(["accuracy"])


def test_first_model_passes_without_baseline():
    dec = gate.decide({"accuracy": 0.7}, None, ACC)
    assert dec.passed and dec.reasons[0] == "no baseline yet: first model"


def test_floor_holds_even_for_the_first_model():
    cfg = gate.config_from(["accuracy"], floors={"accuracy": 0.8})
    dec = gate.decide({"accuracy": 0.7}, None, cfg)
    assert not dec.passed and "below the floor 0.8" in dec.reasons[0]


def test_better_passes_worse_is_blocked():
    assert gate.decide({"accuracy": 0.91}, {"accuracy": 0.90}, ACC).passed
    dec = gate.decide({"accuracy": 0.85}, {"accuracy": 0.90}, ACC, baseline_name="m:1")
    assert not dec.passed and "worse" in dec.reasons[0] and dec.baseline == "m:1"


def test_a_tie_is_not_an_improvement_unless_allowed():
    dec = gate.decide({"accuracy": 0.9}, {"accuracy": 0.9}, ACC, baseline_name="m:1")
    assert not dec.passed and "tie" in dec.reasons[0]
    tie_ok = gate.config_from(["accuracy"], allow_tie=True)
    assert gate.decide({"accuracy": 0.9}, {"accuracy": 0.9}, tie_ok).passed


def test_minimum_absolute_and_relative_improvement():
    cfg = gate.config_from(["accuracy"], min_delta=0.02)
    assert not gate.decide({"accuracy": 0.91}, {"accuracy": 0.90}, cfg).passed
    assert gate.decide({"accuracy": 0.93}, {"accuracy": 0.90}, cfg).passed
    rel = gate.config_from(["accuracy"], min_relative=0.10)
    assert not gate.decide({"accuracy": 0.95}, {"accuracy": 0.90}, rel).passed
    assert gate.decide({"accuracy": 0.99}, {"accuracy": 0.90}, rel).passed


def test_lower_is_better_metrics():
    assert gate.default_direction("val_loss") == "lower"
    assert gate.default_direction("rmse") == "lower"
    assert gate.default_direction("f1_macro") == "higher"
    cfg = gate.config_from({"rmse": {"floor": 2.0}})
    assert gate.decide({"rmse": 1.0}, {"rmse": 1.5}, cfg).passed
    assert not gate.decide({"rmse": 1.6}, {"rmse": 1.5}, cfg).passed
    assert "above the ceiling" in gate.decide({"rmse": 2.5}, None, cfg).reasons[0]


def test_every_metric_must_hold_and_one_must_improve():
    cfg = gate.config_from(["accuracy", "f1"])
    assert gate.decide({"accuracy": 0.9, "f1": 0.81}, {"accuracy": 0.9, "f1": 0.8}, cfg).passed
    dec = gate.decide({"accuracy": 0.95, "f1": 0.7}, {"accuracy": 0.9, "f1": 0.8}, cfg)
    assert not dec.passed and dec.reasons == tuple(c.reason for c in dec.checks[1:])


def test_nan_candidate_is_blocked_nan_baseline_is_not_compared():
    dec = gate.decide({"accuracy": math.nan}, {"accuracy": 0.9}, ACC)
    assert not dec.passed and "NaN" in dec.reasons[0]
    dec = gate.decide({"accuracy": 0.9}, {"accuracy": math.nan}, ACC)
    assert not dec.passed and "no metric could be compared" in dec.reasons[0]
    assert dec.to_dict()["checks"][0]["baseline"] is None  # JSON-safe, no NaN
    cfg = gate.config_from(["accuracy", "f1"])
    assert gate.decide({"accuracy": 0.95, "f1": 0.9}, {"accuracy": 0.9, "f1": math.nan},
                       cfg).passed


def test_missing_candidate_metric_is_blocked():
    dec = gate.decide({}, {"accuracy": 0.9}, ACC)
    assert not dec.passed and "no value" in dec.reasons[0]


def test_unreadable_baseline_is_never_replaced_blindly():
    dec = gate.unreadable_baseline("m:1", "hash mismatch")
    assert not dec.passed and "cannot be read (hash mismatch)" in dec.reasons[0]


@pytest.mark.parametrize("bad", [[], {"accuracy": {"direction": "up"}},
                                 {"accuracy": {"floor": "high"}}, {"accuracy": {"x": 1}}])
def test_bad_gate_settings_are_config_errors(bad):
    with pytest.raises(ConfigError):
        gate.config_from(bad)


# --- promote_if_better: the one-call guard ---------------------------------------------


@pytest.fixture
def project(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "_context", {})
    monkeypatch.setenv("MLOPS_NB_ROOT", str(tmp_path))
    monkeypatch.delenv("MLOPS_NB_REGISTRY", raising=False)
    monkeypatch.delenv("MLOPS_NB_LINEAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True, as_frame=True)


def acting(*args, **kwargs):
    """promote_if_better as a pipeline step calls it: it changes the registry (here, outside
    a step, that takes apply=True)."""
    return guards.promote_if_better(*args, apply=True, **kwargs)


def fit(iris, depth):
    x, y = iris
    return DecisionTreeClassifier(max_depth=depth, random_state=0).fit(x, y)


def test_promote_first_then_block_worse_and_record_why(project, iris):
    good, bad = fit(iris, 3), fit(iris, 1)
    first = acting(good, {"accuracy": 0.0}, name="m", eval_data=iris)
    # the candidate is re-scored on eval_data: the number passed in is not trusted
    assert first["outcome"] == "promoted" and first["version"] == 1
    assert first["metrics"]["accuracy"] == pytest.approx(0.973, abs=0.01)
    worse = acting(bad, {"accuracy": 1.0}, name="m", eval_data=iris)
    assert worse["outcome"] == "blocked" and worse["version"] is None
    assert "worse" in worse["reasons"][0]
    reg = Registry(project / ".mlops_nb" / "registry")
    assert [(v.version, v.stage) for v in reg.versions("m")] == [(1, "production")]
    runs = LineageStore(project / ".mlops_nb" / "lineage.db").runs()
    assert [m["decision"] for r in runs for m in r["models"]] == ["blocked", "promoted"]
    assert "worse" in runs[0]["models"][0]["reasons"][0]


def test_better_model_archives_the_previous(project, iris):
    acting(fit(iris, 1), {"accuracy": 0}, name="m", eval_data=iris)
    dec = acting(fit(iris, 3), {"accuracy": 0}, name="m", eval_data=iris)
    assert dec["promoted"] and dec["baseline"] == "m:1"
    reg = Registry(project / ".mlops_nb" / "registry")
    assert [(v.version, v.stage) for v in reg.versions("m")] == [(1, "archived"),
                                                                  (2, "production")]


def test_fail_if_blocked_raises_exit_8(project, iris):
    acting(fit(iris, 3), {"accuracy": 0}, name="m", eval_data=iris)
    with pytest.raises(ModelBlockedError) as err:
        acting(fit(iris, 1), {"accuracy": 0}, name="m", eval_data=iris,
                                 fail_if_blocked=True)
    assert err.value.exit_code == 8
    runs = LineageStore(project / ".mlops_nb" / "lineage.db").runs()
    assert runs[0]["status"] == "failed" and runs[0]["models"][0]["decision"] == "blocked"


def test_unreadable_baseline_blocks_the_candidate(project, iris):
    acting(fit(iris, 1), {"accuracy": 0}, name="m", eval_data=iris)
    stored = project / ".mlops_nb/registry/m/v1/model/data.skops"
    stored.write_bytes(b"not a model")
    dec = acting(fit(iris, 3), {"accuracy": 0}, name="m", eval_data=iris)
    assert dec["outcome"] == "blocked" and "cannot be read" in dec["reasons"][0]


def test_failed_data_report_blocks_promotion(project, iris):
    dec = acting(fit(iris, 3), {"accuracy": 0}, name="m", eval_data=iris,
                                   data_report={"status": "fail"})
    assert dec["outcome"] == "blocked" and dec["reasons"] == ["the data failed validation"]


def test_metric_without_scorer_uses_recorded_baseline(project, iris):
    acting(fit(iris, 3), {"my_score": 0.5}, name="m", eval_data=iris)
    dec = acting(fit(iris, 3), {"my_score": 0.6}, name="m", eval_data=iris)
    assert dec["promoted"] and dec["checks"][0]["baseline"] == 0.5


def test_baseline_that_cannot_score_the_new_data_blocks(project, iris):
    x, y = iris
    acting(fit(iris, 3), {"accuracy": 0}, name="m", eval_data=iris)
    fewer = x.iloc[:, :3]
    candidate = DecisionTreeClassifier(random_state=0).fit(fewer, y)
    dec = acting(candidate, {"accuracy": 0}, name="m", eval_data=(fewer, y))
    assert dec["outcome"] == "blocked" and "cannot be scored" in dec["reasons"][0]


def test_broken_dvc_yaml_does_not_lose_the_decision(project, iris):
    (project / "dvc.yaml").write_text("stages: [unclosed\n")
    dec = acting(fit(iris, 3), {"accuracy": 0}, name="m", eval_data=iris)
    assert dec["promoted"] and dec["run_id"]
    runs = LineageStore(project / ".mlops_nb" / "lineage.db").runs()
    assert runs[0]["models"][0]["decision"] == "promoted" and runs[0]["steps"] == []


# --- outside a pipeline step: decide and report, change nothing (issue 26.7) ---------------


def test_outside_a_step_reports_and_changes_nothing(project, iris, caplog):
    with caplog.at_level("WARNING", logger="mlops_nb.guards"):
        dec = guards.promote_if_better(fit(iris, 3), {"accuracy": 0}, name="m", eval_data=iris)
    assert dec["outcome"] == "would promote" and not dec["promoted"] and not dec["applied"]
    assert dec["version"] is None and dec["run_id"] is None and dec["passed"]
    said = caplog.text
    assert "outside a pipeline step: would promote" in said and "apply=True" in said
    assert "nothing was registered or promoted" in said
    assert Registry(project / ".mlops_nb" / "registry").versions("m") == []
    assert not (project / ".mlops_nb" / "lineage.db").exists()
    # explicit apply=True acts; then a worse model outside a step is reported as blocked
    guards.promote_if_better(fit(iris, 3), {"accuracy": 0}, name="m", eval_data=iris,
                             apply=True)
    worse = guards.promote_if_better(fit(iris, 1), {"accuracy": 0}, name="m", eval_data=iris)
    assert worse["outcome"] == "blocked" and worse["baseline"] == "m:1"
    with pytest.raises(ModelBlockedError):
        guards.promote_if_better(fit(iris, 1), {"accuracy": 0}, name="m", eval_data=iris,
                                 fail_if_blocked=True)
    reg = Registry(project / ".mlops_nb" / "registry")
    assert [(v.version, v.stage) for v in reg.versions("m")] == [(1, "production")]
    assert len(LineageStore(project / ".mlops_nb" / "lineage.db").runs()) == 1
