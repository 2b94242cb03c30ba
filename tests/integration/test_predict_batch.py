"""`mlops-nb predict` over files: CSV and Parquet, the schema checked first, atomic output
that is never overwritten without --overwrite, and nothing left after a kill mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_nb import artifacts
from tests.conftest import sh, tool_env
from tests.integration.serving import trained_example

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return trained_example(tmp_path_factory.mktemp("batch") / "example",
                           tmp_path_factory.mktemp("build"))


def predict(root: Path, *args: str):
    return sh([sys.executable, "-m", "mlops_nb", "predict", *args], root, check=False)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_good_file_is_predicted_like_the_pipeline(root, tmp_path, suffix):
    x = artifacts.load(root / "outputs/prepare/X_test").reset_index(drop=True)
    src = tmp_path / f"in{suffix}"
    x.to_csv(src, index=False) if suffix == ".csv" else x.to_parquet(src)
    out = tmp_path / f"out{suffix}"
    res = predict(root, "--input", str(src), "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert "rows/s" in res.stdout and "45 rows" in res.stdout
    got = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    expected = artifacts.load(root / "outputs/train/model").predict(x)
    assert got["prediction"].tolist() == expected.tolist()
    assert list(got.columns) == [*x.columns, "prediction"]

    before = out.read_bytes()
    res = predict(root, "--input", str(src), "--output", str(out))
    assert res.returncode == 2 and "--overwrite" in res.stderr
    assert out.read_bytes() == before
    res = predict(root, "--input", str(src), "--output", str(out), "--overwrite")
    assert res.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, out.name])


GOOD = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"
MALFORMED = {
    "missing column": ("sepal_length,sepal_width,petal_length\n5.1,3.5,1.4\n", "missing"),
    "extra column": ("sepal_length,sepal_width,petal_length,petal_width,x\n5.1,3.5,1.4,0.2,1\n",
                     "'x' is not in the schema"),
    "wrong type": (GOOD + "5.0,three,1.4,0.2\n", "'sepal_width' should be float"),
    "empty value": (GOOD + "5.0,,1.4,0.2\n", "null"),
    "infinity": (GOOD + "5.0,inf,1.4,0.2\n", "infinite"),
    "ragged rows": (GOOD + "5.0,3.1,1.4,0.2,9,9\n", "not a readable csv"),
    "value the model cannot take": (GOOD + "5.0,3.1,1.4,0\n", "cannot predict"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_is_refused_and_writes_nothing(root, tmp_path, case):
    text, says = MALFORMED[case]
    src = tmp_path / "in.csv"
    src.write_text(text)
    res = predict(root, "--input", str(src), "--output", str(tmp_path / "out.csv"))
    assert res.returncode == 7, res.stderr
    assert says in res.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["in.csv"]


def test_unknown_formats_are_usage_errors(root, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text(GOOD)
    assert predict(root, "--input", str(src), "--output", str(tmp_path / "o.csv")
                   ).returncode == 2
    (tmp_path / "in.csv").write_text(GOOD)
    res = predict(root, "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "o.xls"))
    assert res.returncode == 2 and ".parquet" in res.stderr


def test_a_kill_mid_write_leaves_no_output(root, tmp_path):
    x = artifacts.load(root / "outputs/prepare/X_test")
    big = pd.DataFrame(np.repeat(x.to_numpy(), 20000, axis=0), columns=x.columns)
    src = tmp_path / "big.parquet"
    big.to_parquet(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "mlops_nb", "predict", "--input", str(src),
                             "--output", str(out_dir / "pred.csv")], cwd=root,
                            env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fds = Path(f"/proc/{proc.pid}/fd")
    writing = False
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        try:  # the output being written: an unnamed file in out_dir
            links = [os.readlink(fd) for fd in fds.iterdir()]
        except OSError:
            continue
        if any(link.startswith(str(out_dir)) for link in links):
            writing = True
            break
        time.sleep(0.01)
    assert writing, "never saw the output being written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(out_dir.iterdir()) == []  # no output, not even a temporary file
