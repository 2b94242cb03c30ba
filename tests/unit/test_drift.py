"""Drift tests and distances on samples whose answer is known (fixed seeds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_nb.cli import main
from mlops_nb.errors import ConfigError
from mlops_nb.guards.validation import check
from mlops_nb.guards.validation import drift as d


def normal(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(shift, 1.0, n)})


def categories(n: int, seed: int, p: list[float], values: str = "abc") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"c": rng.choice(list(values), n, p=p)})


@pytest.mark.parametrize("n, method", [(500, "ks"), (5000, "wasserstein"),
                                       (1_000_000, "wasserstein")])
def test_same_distribution_does_not_drift(n, method):
    res = d.compare(normal(n, 1), normal(n, 2))
    col = res.columns[0]
    assert col.method == method and col.drifted is False and not res.dataset_drift
    assert col.psi is not None and col.psi < 0.1  # PSI is reported too


@pytest.mark.parametrize("n, method", [(500, "ks"), (5000, "wasserstein"),
                                       (1_000_000, "wasserstein")])
def test_one_sigma_shift_drifts(n, method):
    res = d.compare(normal(n, 1), normal(n, 2, shift=1.0))
    col = res.columns[0]
    assert col.method == method and col.drifted is True and res.dataset_drift
    if method == "wasserstein":
        assert col.statistic == pytest.approx(1.0, abs=0.05)  # normalised by the std
    else:
        assert col.statistic < 1e-10  # a p-value
    assert col.psi > 0.25
    assert col.distance_method == "wasserstein"  # a distance, also for small samples
    assert col.distance == pytest.approx(1.0, abs=0.2)


def test_categorical_methods_by_sample_size():
    same = [0.5, 0.3, 0.2]
    small = d.compare(categories(500, 1, same), categories(500, 2, same)).columns[0]
    large = d.compare(categories(5000, 1, same), categories(5000, 2, same)).columns[0]
    assert (small.method, small.drifted) == ("chisquare", False)
    assert (large.method, large.drifted) == ("jensenshannon", False)
    moved = d.compare(categories(5000, 1, same), categories(5000, 2, [0.2, 0.3, 0.5]))
    assert moved.columns[0].drifted is True and moved.columns[0].statistic > 0.1


def test_unseen_category_drifts():
    ref = categories(500, 1, [0.5, 0.5], "ab")
    cur = categories(500, 2, [0.4, 0.3, 0.3], "abz")
    col = d.compare(ref, cur).columns[0]
    assert col.method == "chisquare" and col.drifted is True


def test_low_cardinality_numeric_uses_jensen_shannon():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"k": rng.integers(0, 3, 5000)})
    cur = pd.DataFrame({"k": rng.integers(0, 3, 5000)})
    assert d.compare(ref, cur).columns[0].method == "jensenshannon"


def test_constant_columns():
    same = d.compare(pd.DataFrame({"x": [3.0] * 2000}), pd.DataFrame({"x": [3.0] * 2000}))
    assert (same.columns[0].statistic, same.columns[0].drifted) == (0.0, False)
    moved = d.compare(pd.DataFrame({"x": [3.0] * 2000}), pd.DataFrame({"x": [4.0] * 2000}))
    assert moved.columns[0].drifted is True
    small = d.compare(pd.DataFrame({"x": [3.0] * 5}), pd.DataFrame({"x": [3.0] * 5}))
    assert small.columns[0].drifted is False


def test_all_nan_column_is_not_checked_and_never_a_clean_pass():
    ref = pd.DataFrame({"x": np.arange(100.0), "empty": [np.nan] * 100})
    cur = pd.DataFrame({"x": np.arange(100.0), "empty": [np.nan] * 100})
    res = d.compare(ref, cur)
    empty = res.columns[1]
    assert empty.drifted is None and "no non-null values" in empty.note
    assert res.unchecked == ("empty",) and not res.dataset_drift
    assert check(cur, schema=None, reference=ref)["status"] == "warn"


def test_five_rows_give_a_valid_p_value():
    col = d.compare(normal(5, 1), normal(5, 2)).columns[0]
    assert col.method == "ks" and 0.0 <= col.statistic <= 1.0
    assert (col.reference_rows, col.current_rows) == (5, 5)


def test_raw_statistics_are_reported_even_without_drift():
    rep = check(normal(200, 1), schema=None, reference=normal(200, 2))
    col = rep["drift"]["columns"][0]
    assert rep["status"] == "pass"
    assert isinstance(col["statistic"], float) and isinstance(col["psi"], float)
    assert col["threshold"] == 0.05
    assert col["distance_method"] == "wasserstein" and 0 <= col["distance"] < 0.3


def test_thresholds_are_configurable():
    ref, cur = normal(5000, 1), normal(5000, 2, shift=0.3)  # distance ~0.3
    assert d.compare(ref, cur).columns[0].drifted is True
    assert d.compare(ref, cur, d.from_mapping(0.5)).columns[0].drifted is False
    per_col = d.from_mapping({"columns": {"x": {"method": "psi", "threshold": 10}}})
    col = d.compare(ref, cur, per_col).columns[0]
    assert (col.method, col.threshold, col.drifted) == ("psi", 10.0, False)


def test_dataset_share_decides_the_data_set_verdict():
    ref = pd.concat([normal(2000, 1), normal(2000, 3).rename(columns={"x": "y"})], axis=1)
    cur = pd.concat([normal(2000, 2, 1.0), normal(2000, 4).rename(columns={"x": "y"})], axis=1)
    assert d.compare(ref, cur).share_drifted == 0.5 and d.compare(ref, cur).dataset_drift
    assert not d.compare(ref, cur, d.DriftConfig(dataset_share=0.6)).dataset_drift


@pytest.mark.parametrize("bad", [{"method": "magic"}, {"threshold": -1}, {"threshold": "x"},
                                 {"thresh": 0.1}, "high"])
def test_bad_drift_settings_are_config_errors(bad):
    with pytest.raises(ConfigError):
        d.from_mapping(bad)


def test_cli_drift_reads_params_yaml_and_exits_7(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLOPS_NB_ROOT", raising=False)
    normal(5000, 1).to_parquet("ref.parquet")
    normal(5000, 2, shift=0.3).to_parquet("cur.parquet")
    assert main(["drift", "ref.parquet", "cur.parquet"]) == 7
    assert "DRIFT" in capsys.readouterr().out
    (tmp_path / "params.yaml").write_text("guards:\n  drift:\n    threshold: 0.5\n")
    assert main(["drift", "ref.parquet", "cur.parquet"]) == 0
    assert main(["drift", "ref.parquet", "cur.parquet", "--threshold", "0.1"]) == 7
