"""`mlops-nb predict` over files: CSV and Parquet, the schema checked first, atomic output
that is never overwritten without --overwrite, and nothing left after a kill mid-write."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_nb import artifacts
from mlops_nb.cli import main
from tests.conftest import cli_in_process, sh, tool_env
from tests.conftest import small_disk as tmpfs
from tests.integration.serving import trained_example

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return trained_example(tmp_path_factory.mktemp("batch") / "example",
                           tmp_path_factory.mktemp("build"))


def predict(root: Path, *args: str):
    """`mlops-nb predict ARGS` by the CLI's main() in this process (the model and pandas are
    imported once per test process, not once per call)."""
    return cli_in_process(["predict", *args], root, check=False)


def predict_process(root: Path, *args: str):
    """`mlops-nb predict ARGS` as a process of its own, as a user runs it."""
    return sh([sys.executable, "-m", "mlops_nb", "predict", *args], root, check=False)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_good_file_is_predicted_like_the_pipeline(root, tmp_path, suffix):
    x = artifacts.load(root / "outputs/prepare/X_test").reset_index(drop=True)
    src = tmp_path / f"in{suffix}"
    x.to_csv(src, index=False) if suffix == ".csv" else x.to_parquet(src)
    out = tmp_path / f"out{suffix}"
    res = predict_process(root, "--input", str(src), "--output", str(out))
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


def test_an_output_that_is_a_folder_is_a_usage_error(root, tmp_path, capsys):
    x = artifacts.load(root / "outputs/prepare/X_test")
    src = tmp_path / "in.csv"
    x.to_csv(src, index=False)
    for name, extra in [("outdir", []), ("outdir", ["--overwrite"]), ("out.csv", []),
                        ("out.parquet", ["--overwrite"])]:
        folder = tmp_path / name
        (folder / "keep").mkdir(parents=True, exist_ok=True)
        code = main(["-C", str(root), "predict", "--input", str(src), "--output",
                     str(folder), *extra])  # in this process: the CLI's own boundary
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"{folder} is a folder; name the output file" in err
        assert [p.name for p in folder.iterdir()] == ["keep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.csv", "out.csv", "out.parquet", "outdir"]  # no temporary file beside them


def noisy(x: pd.DataFrame, times: int) -> pd.DataFrame:
    """`x` repeated, each value moved a little: rows that neither CSV nor Parquet compress."""
    rng = np.random.default_rng(0)
    big = np.repeat(x.to_numpy(), times, axis=0)
    return pd.DataFrame(big + rng.uniform(0, 0.01, big.shape), columns=x.columns)


@pytest.fixture
def small_disk(tmp_path: Path):
    with tmpfs(tmp_path / "disk", "1M") as disk:
        yield disk


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_full_disk_is_exit_6_and_leaves_the_earlier_output(root, tmp_path, small_disk,
                                                             suffix):
    x = artifacts.load(root / "outputs/prepare/X_test")
    big = tmp_path / "big.parquet"
    noisy(x, 2000).to_parquet(big)  # 90,000 rows: several MB as CSV or Parquet
    earlier = small_disk / f"pred{suffix}"
    earlier.write_bytes(b"an earlier output\n")
    # a new output (linked into place when complete) and one replacing the earlier one
    target, extra = (small_disk / f"new{suffix}", []) if suffix == ".csv" else \
        (earlier, ["--overwrite"])
    res = predict(root, "--input", str(big), "--output", str(target), *extra)
    assert res.returncode == 6, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert f"{target}: no space left on the disk holding {small_disk}" in res.stderr
    assert "nothing was written" in res.stderr
    assert [p.name for p in small_disk.iterdir()] == [earlier.name]  # no temporary file
    assert earlier.read_bytes() == b"an earlier output\n"


def test_a_row_the_model_cannot_predict_is_named_by_its_index(root, tmp_path):
    x = artifacts.load(root / "outputs/prepare/X_test").reset_index(drop=True)
    frame = noisy(x, 3400)  # 153,000 rows: two chunks of prediction
    frame.loc[123_456, "petal_width"] = 0.0  # its log-ratio is infinite
    src = tmp_path / "in.parquet"
    frame.to_parquet(src)
    res = predict(root, "--input", str(src), "--output", str(tmp_path / "out.csv"))
    assert res.returncode == 7, res.stdout + res.stderr
    assert "row 123456 (counting from 0, the header not counted): the model cannot predict" \
        in res.stderr, res.stderr
    assert "'petal_width': 0.0" in res.stderr
    assert "rows 100000-" not in res.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["in.parquet"]


def test_rows_per_second_leave_the_model_load_out(root, tmp_path):
    x = artifacts.load(root / "outputs/prepare/X_test")
    src = tmp_path / "in.parquet"
    noisy(x, 2000).to_parquet(src)
    started = time.monotonic()
    res = predict(root, "--input", str(src), "--output", str(tmp_path / "out.parquet"))
    wall = time.monotonic() - started
    assert res.returncode == 0, res.stderr
    m = re.search(r"predicted 90000 rows in ([\d.]+) s \(([\d,]+) rows/s; model loaded in"
                  r" ([\d.]+) s, not counted\)", res.stdout)
    assert m, res.stdout
    seconds, rate, load = float(m[1]), int(m[2].replace(",", "")), float(m[3])
    assert load > 0 and seconds > 0 and seconds + load < wall
    assert abs(rate - 90000 / seconds) <= 0.01 * rate + 90000 / seconds ** 2 * 0.0005
