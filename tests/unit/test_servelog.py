"""The serving log read back by `monitor`: a line is taken only when it has the shape
serve.reqlog writes and the training reference's column types; any other line (invalid JSON,
deep nesting, a `ts` that is not a time, a list where a number belongs, a huge line...) is
skipped and counted with its reason and place, never fatal. Log files that are symlinks, FIFOs
or another user's are not read, and said so."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from mlops_nb.monitor import servelog
from mlops_nb.serve.reqlog import line

REFERENCE = pd.DataFrame({"a": [1.0, 2.0], "n": [1, 2], "ok": [True, False],
                          "colour": ["red", "blue"]})
KINDS = servelog.column_kinds(REFERENCE)
GOOD = line({"ts": 1000.0, "request": "r", "model": "m", "version": 1},
            [{"a": 1.5, "n": 3, "ok": True, "colour": "red"},
             {"a": 2.5, "n": None, "ok": False, "colour": "blue"}], [1, 0])


def served(**change: object) -> str:
    rec = json.loads(GOOD)
    rec.update(change)
    return json.dumps(rec)


def x_with(**cols: object) -> str:
    rec = json.loads(GOOD)
    rec["x"].update(cols)
    return json.dumps(rec)


BAD = {
    "invalid JSON": ('{"ts": 1.0, "x": {', "invalid JSON"),
    "deep nesting": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "deep nesting in a value": (x_with(a=[json.loads("[" * 500 + "]" * 500), 1.0]),
                                "not a number"),
    "ts not a time": (served(ts="yesterday"), "'ts' is not a time"),
    "ts a list": (served(ts=[1]), "'ts' is not a time"),
    "ts missing": (json.dumps({k: v for k, v in json.loads(GOOD).items() if k != "ts"}),
                   "'ts' is not a time"),
    "version infinite": (GOOD.replace('"version":1', '"version":Infinity'), "not finite"),
    "version a string": (served(version="1"), "'version' is not a version number"),
    "version true": (served(version=True), "'version' is not a version number"),
    "rows a list": (served(rows=[2]), "'rows' is not a positive count"),
    "rows zero": (served(rows=0, x={"a": []}, prediction=[]), "'rows' is not a positive"),
    "list where a number belongs": (x_with(a=[[1.0, 2.0], 3.0]), "'x' that is not a number"),
    "text where a number belongs": (x_with(a=["abc", 3.0]), "'x' that is not a number"),
    "bool where a number belongs": (x_with(a=[True, 3.0]), "'x' that is not a number"),
    "number where a bool belongs": (x_with(ok=[1, 0]), "not true or false"),
    "NaN in x": (GOOD.replace('"a":[1.5,', '"a":[NaN,'), "not finite"),
    "huge integer": (x_with(n=[10**30, 1]), "'x' that is not a number"),
    "dict where a category belongs": (x_with(colour=[{"a": 1}, "red"]), "a single value"),
    "short column": (x_with(a=[1.0]), "not a list of 'rows' values"),
    "x a list": (served(x=[1, 2]), "'x' is not a mapping"),
    "prediction a list of lists": (served(prediction=[[1], [0]]), "'prediction'"),
    "prediction too short": (served(prediction=[1]), "'prediction'"),
    "not an object": ("[1, 2, 3]", "not a JSON object"),
    "not UTF-8": ("", "not UTF-8"),
    "other columns": (x_with(extra=[1, 2]), "other columns than the training reference's"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_line_is_skipped_counted_and_named(tmp_path, case):
    text, reason = BAD[case]
    raw = text.encode("utf-8") if case != "not UTF-8" else b'{"ts": "\xff\xfe"}'
    (tmp_path / "requests-1.jsonl").write_bytes(GOOD.encode() + raw + b"\n" + GOOD.encode())
    data = servelog.read(tmp_path, version=1, since=0, kinds=KINDS)
    assert len(data.features) == 4  # both good lines, nothing of the bad one
    assert data.bad.count == 1 and data.skipped == 1
    ((got, n),) = data.bad.reasons.items()
    assert reason in got and n == 1
    assert data.bad.first == [{"file": "requests-1.jsonl", "line": 2, "reason": got}]


def test_a_huge_line_is_skipped_without_being_held(tmp_path, monkeypatch):
    monkeypatch.setattr(servelog, "MAX_LINE_BYTES", 4096)
    huge = served(x={"a": [1.0] * 5000}, rows=5000, prediction=[0] * 5000)  # valid but long
    (tmp_path / "requests-1.jsonl").write_text(GOOD + huge + "\n" + GOOD + "x" * 9000)
    data = servelog.read(tmp_path, version=1, kinds=KINDS)
    assert len(data.features) == 4 and data.bad.count == 2
    assert data.bad.reasons == {"longer than 4,096 bytes": 2}
    assert [b["line"] for b in data.bad.first] == [2, 4]


def test_the_line_limit_is_bounded_by_what_a_server_writes():
    assert servelog.MAX_LINE_BYTES == 64 * 2**20


def test_the_frame_has_the_reference_types(tmp_path):
    (tmp_path / "requests-1.jsonl").write_text(GOOD)
    data = servelog.read(tmp_path, version=1, kinds=KINDS)
    assert list(data.features.columns) == list(REFERENCE.columns)
    assert data.features["a"].dtype.kind == "f" and data.features["n"].isna().sum() == 1
    assert data.predictions.tolist() == [1, 0]


def test_symlinked_fifo_and_foreign_log_files_are_not_read(tmp_path):
    outside = tmp_path / "outside.jsonl"
    outside.write_text(GOOD)
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "requests-1.jsonl").symlink_to(outside)
    os.mkfifo(log_dir / "requests-2.jsonl")  # reading it would block for ever
    foreign = log_dir / "requests-3.jsonl"
    foreign.write_text(GOOD)
    if os.geteuid() == 0:
        os.chown(foreign, 65534, 65534)
    (log_dir / "requests-4.jsonl").write_text(GOOD)
    data = servelog.read(log_dir, version=1, kinds=KINDS)
    assert len(data.features) == 2  # requests-4 only
    why = dict(s.split(": ", 1) for s in data.skipped_files)
    assert why["requests-1.jsonl"] == "a symlink, never followed"
    assert why["requests-2.jsonl"] == "not a regular file"
    if os.geteuid() == 0:
        assert why["requests-3.jsonl"].startswith("owned by another user")
