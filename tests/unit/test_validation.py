"""Schema inference and validation on hand-made data whose anomalies are known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops_nb import guards
from mlops_nb.cli import main
from mlops_nb.errors import ConfigError, DataValidationError
from mlops_nb.execute import runtime
from mlops_nb.guards.validation import check
from mlops_nb.guards.validation import schema as schema_mod


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "age": [20, 35, 50, 65, 80],
        "height": [1.5, 1.6, 1.7, 1.8, np.nan],
        "colour": ["red", "green", "blue", "red", "green"],
        "ok": [True, False, True, True, False],
        "const": [7.0] * 5,
        "empty": [np.nan] * 5,
    })


@pytest.fixture
def outside_step(monkeypatch, tmp_path):
    """No running step; the project is tmp_path."""
    monkeypatch.setattr(runtime, "_context", {})
    monkeypatch.setenv("MLOPS_NB_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def kinds(anomalies):
    return sorted((a.kind, a.column) for a in anomalies)


def test_infer_types_nulls_ranges_domains(frame):
    s = schema_mod.infer(frame, ranges=True)
    cols = {c.name: c for c in s.columns}
    assert [c.name for c in s.columns] == list(frame.columns)
    assert (cols["age"].type, cols["age"].min, cols["age"].max) == ("int", 20, 80)
    assert cols["age"].nullable is False
    assert (cols["height"].type, cols["height"].nullable) == ("float", True)
    assert cols["height"].max == 1.8
    assert cols["colour"].type == "category"
    assert cols["colour"].values == ("blue", "green", "red")
    assert cols["ok"].type == "bool" and cols["ok"].values == (False, True)
    assert (cols["const"].min, cols["const"].max) == (7.0, 7.0)
    assert cols["empty"].nullable and cols["empty"].min is None
    stats = s.statistics
    assert stats["rows"] == 5 and stats["columns"]["age"] == {
        "nulls": 0, "distinct": 5, "mean": 50.0, "std": pytest.approx(23.717082),
        "min": 20, "max": 80}
    assert stats["columns"]["empty"] == {"nulls": 5, "distinct": 0}


def test_schema_yaml_round_trip_is_readable(frame, tmp_path):
    s = schema_mod.infer(frame, min_rows=3)
    path = tmp_path / "schema.yaml"
    schema_mod.save(s, path)
    text = path.read_text()
    assert text.startswith("# Data schema") and "values: [blue, green, red]" in text
    assert schema_mod.load(path) == s


def test_conforming_data_has_no_anomaly(frame):
    assert schema_mod.validate(frame, schema_mod.infer(frame)) == []


def test_every_anomaly_is_listed_not_only_the_first(frame):
    s = schema_mod.infer(frame, min_rows=10, ranges=True)
    bad = frame.drop(columns=["height"]).assign(
        age=[20, 35, 50, 65, 99], colour=["red", "purple", "blue", "red", None],
        extra=1)
    found = schema_mod.validate(bad, s)
    assert kinds(found) == [("extra_column", "extra"), ("missing_column", "height"),
                            ("nulls", "colour"), ("out_of_range", "age"),
                            ("too_few_rows", None), ("unseen_category", "colour")]
    unseen = next(a for a in found if a.kind == "unseen_category")
    assert (unseen.count, unseen.examples) == (1, ("purple",))
    assert next(a for a in found if a.kind == "out_of_range").examples == (99,)


def test_wrong_type_is_reported(frame):
    s = schema_mod.infer(frame)
    found = schema_mod.validate(frame.assign(age=["a", "b", "c", "d", "e"]), s)
    assert kinds(found) == [("wrong_type", "age")]


def test_int_column_with_nulls_reports_nulls_not_type(frame):
    s = schema_mod.infer(frame)
    found = schema_mod.validate(frame.assign(age=[20, None, 50, 65, 80]), s)
    assert kinds(found) == [("nulls", "age")]


def test_constant_column_rejects_another_value(frame):
    s = schema_mod.infer(frame, ranges=True)
    found = schema_mod.validate(frame.assign(const=[7.0, 7.0, 7.0, 7.0, 8.0]), s)
    assert kinds(found) == [("out_of_range", "const")]


def test_all_nan_column_validates_and_gaining_values_is_fine(frame):
    s = schema_mod.infer(frame)
    assert schema_mod.validate(frame.assign(empty=[1.0, np.nan, 2, 3, 4]), s) == []


def test_five_rows_and_min_rows():
    small = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    assert schema_mod.validate(small, schema_mod.infer(small)) == []
    found = schema_mod.validate(small, schema_mod.infer(small, min_rows=6))
    assert kinds(found) == [("too_few_rows", None)]


def test_a_million_rows_counts_exactly():
    rng = np.random.default_rng(0)
    big = pd.DataFrame({"x": rng.uniform(0, 1, 1_000_000),
                        "c": rng.choice(["a", "b"], 1_000_000)})
    s = schema_mod.infer(big, ranges=True)
    bad = big.copy()
    bad.loc[:9, "x"] = 5.0
    bad.loc[10:12, "c"] = "z"
    found = {a.kind: a.count for a in schema_mod.validate(bad, s)}
    assert found == {"out_of_range": 10, "unseen_category": 3}


def test_bad_schema_file_is_a_config_error(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("columns:\n  x: {type: number}\n")
    with pytest.raises(ConfigError, match="'type' must be one of"):
        schema_mod.load(path)


def test_report_status_pass_fail_warn(frame):
    s = schema_mod.infer(frame)
    assert check(frame, schema=s)["status"] == "pass"
    bad = frame.drop(columns=["age"])
    rep = check(bad, schema=s)
    assert (rep["status"], rep["blocking"]) == ("fail", True)
    assert rep["problems"] == ["column 'age' is missing"]
    rep = check(bad, schema=s, warn_only=True)
    assert (rep["status"], rep["blocking"]) == ("warn", False)


def test_guard_writes_schema_then_fails_with_exit_7_and_reports(frame, outside_step):
    root = outside_step
    rep = guards.validate_data(frame, schema="s.yaml", name="people")
    assert rep["status"] == "pass" and (root / "s.yaml").exists()
    with pytest.raises(DataValidationError) as err:
        guards.validate_data(frame.drop(columns=["age"]), schema="s.yaml", name="people")
    assert err.value.exit_code == 7 and "column 'age' is missing" in str(err.value)
    saved = json.loads((root / "people_validation.json").read_text())
    assert saved["status"] == "fail" and saved["anomalies"][0]["kind"] == "missing_column"
    assert "column &#x27;age&#x27; is missing" in (root / "people_validation.html").read_text()
    warned = guards.validate_data(frame.drop(columns=["age"]), schema="s.yaml", warn_only=True)
    assert warned["status"] == "warn"


def test_cli_validate_data_infer_then_exit_7(frame, tmp_path, capsys):
    frame.to_parquet(tmp_path / "train.parquet")
    frame.drop(columns=["ok"]).to_csv(tmp_path / "new.csv", index=False)
    schema = str(tmp_path / "s.yaml")
    assert main(["validate-data", str(tmp_path / "train.parquet"), "--schema", schema,
                 "--infer"]) == 0
    assert main(["validate-data", str(tmp_path / "train.parquet"), "--schema", schema]) == 0
    assert "PASS" in capsys.readouterr().out
    code = main(["validate-data", str(tmp_path / "new.csv"), "--schema", schema,
                 "--report-dir", str(tmp_path / "rep")])
    out = capsys.readouterr()
    assert code == 7
    assert "column 'ok' is missing" in out.out and "failed validation" in out.err
    assert (tmp_path / "rep" / "new_validation.html").exists()
    assert main(["validate-data", str(tmp_path / "new.csv"), "--schema", schema,
                 "--warn-only"]) == 0


def test_guard_errors_have_distinct_exit_codes_findable_by_name():
    from mlops_nb.errors import exit_code_of

    codes = {n: exit_code_of(n) for n in ("DataValidationError", "ModelBlockedError",
                                          "RegistryError", "UnsafeModelError", "LineageError")}
    assert codes == {"DataValidationError": 7, "ModelBlockedError": 8, "RegistryError": 9,
                     "UnsafeModelError": 9, "LineageError": 10}
    assert exit_code_of("StepFailed") == 5 and exit_code_of("ValueError") is None


def test_guard_accepts_arrays_and_series_and_rejects_scalars(outside_step):
    from mlops_nb.errors import UsageError

    rep = guards.validate_data(np.arange(10.0).reshape(5, 2), schema="arr.yaml", name="arr")
    assert rep["status"] == "pass" and rep["rows"] == 5
    assert guards.validate_data(pd.Series([1, 2], name="s"), schema=None)["status"] == "pass"
    with pytest.raises(UsageError, match="must be a table"):
        guards.validate_data(3, schema=None)


def test_a_schema_inferred_from_the_training_split_accepts_the_test_split():
    """Ranges are opt-in (as in TFDV): a split's extremes bound nothing (issue 11, item 15)."""
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    frame = load_wine(as_frame=True).frame
    train, test = train_test_split(frame, test_size=0.3, random_state=0)
    s = schema_mod.infer(train)
    assert all(c.min is None and c.max is None for c in s.columns)
    assert [a for a in schema_mod.validate(test, s) if a.kind != "unseen_category"] == []
    assert s.statistics["columns"]["alcohol"]["max"] == float(train["alcohol"].max())
    assert schema_mod.validate(test, schema_mod.infer(train, ranges=True)) != []
