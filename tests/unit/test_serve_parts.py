"""Parts of serving without a server: the request schema from a data schema, the bounded
serving log, and where the service may listen."""

from __future__ import annotations

import json

import pytest

from mlops_nb.errors import UsageError
from mlops_nb.guards.validation.schema import ColumnSchema, Schema
from mlops_nb.monitor import servelog
from mlops_nb.serve.reqlog import RequestLog, line, log_files
from mlops_nb.serve.schema import RequestInvalid, RequestSchema
from mlops_nb.serve.server import check_binding, is_loopback

SCHEMA = Schema((ColumnSchema("x", "float", False, 0.0, 1.0),
                 ColumnSchema("n", "int", True),
                 ColumnSchema("colour", "category", False, values=("red", "blue")),
                 ColumnSchema("ok", "bool", False)))


def parse(body: str, max_rows: int = 3):
    return RequestSchema(SCHEMA, max_rows).parse(body.encode())


def where(body: str) -> set:
    with pytest.raises(RequestInvalid) as info:
        parse(body)
    return {(e.record, e.field, e.kind) for e in info.value.errors}


def test_a_good_batch_parses_and_ranges_are_left_to_monitoring():
    rows = parse('{"records": [{"x": 7, "n": null, "colour": "red", "ok": true},'
                 ' {"x": 0.5, "n": 3, "colour": "blue", "ok": false}]}')
    assert rows == [{"x": 7.0, "n": None, "colour": "red", "ok": True},
                    {"x": 0.5, "n": 3, "colour": "blue", "ok": False}]


def test_each_problem_names_record_field_and_kind():
    good = '{"x": 0.5, "n": 1, "colour": "red", "ok": true}'
    bad = '{"x": "1", "n": 1.5, "colour": "green", "ok": 1}'
    assert where(f'{{"records": [{good}, {bad}]}}') == {
        (1, "x", "float_type"), (1, "n", "int_type"), (1, "colour", "literal_error"),
        (1, "ok", "bool_type")}
    assert where('{"records": [{"x": NaN, "n": 1, "colour": "red", "ok": true, "y": 2}]}'
                 ) == {(0, "x", "finite_number"), (0, "y", "extra_forbidden")}
    assert where('{"records": [{"x": 0.5, "colour": "red", "ok": true}]}') == {
        (0, "n", "missing")}  # nullable is not optional
    assert where('{"records": []}') == {(None, "records", "too_short")}
    assert where(f'{{"records": [{", ".join([good] * 4)}]}}') == {
        (None, "records", "too_long")}


def test_the_serving_log_is_bounded_and_rotated(tmp_path):
    log = RequestLog(tmp_path, max_bytes=2000, max_files=3)
    log.start()
    for i in range(200):
        entry = {"ts": 1.0, "request": f"r{i}", "model": "m", "version": 1}
        assert log.submit(entry, [{"a": i}], [0])
        log.flush()  # one write per request, so the size limit is met many times
    log.stop()
    files = log_files(tmp_path)
    assert 1 < len(files) <= 3
    assert all(f.stat().st_size < 2000 + 200 for f in files)
    kept = [json.loads(line)["x"]["a"][0] for f in files for line in f.read_text().splitlines()]
    assert kept == sorted(kept) and kept[-1] == 199  # the newest rows survive


def test_a_full_log_queue_drops_instead_of_waiting(tmp_path):
    log = RequestLog(tmp_path, queue_size=1)  # writer not started: nothing drains
    assert log.submit({}, [{"a": 0}], [0])
    assert not log.submit({}, [{"a": 1}, {"a": 2}], [0, 1])
    assert log.dropped == 2


def test_the_log_is_columnar_and_a_torn_line_is_skipped(tmp_path):
    text = line({"ts": 1.0, "request": "r", "model": "m", "version": 2},
                [{"a": 1.5, "b": "x"}, {"a": 2.5, "b": "y"}], [1, 0])
    assert json.loads(text)["x"] == {"a": [1.5, 2.5], "b": ["x", "y"]}
    other = line({"ts": 1.0, "request": "s", "model": "m", "version": 1}, [{"a": 9.0}], [2])
    (tmp_path / "requests-1.jsonl").write_text(text + other + '{"ts": 1.0, "x": {')
    data = servelog.read(tmp_path, version=2)
    assert data.features.to_dict("records") == [{"a": 1.5, "b": "x"}, {"a": 2.5, "b": "y"}]
    assert data.predictions.tolist() == [1, 0]
    assert (data.skipped, data.versions) == (1, {2: 2, 1: 1})


def test_only_loopback_binds_without_a_token():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    check_binding("127.0.0.1", None)
    check_binding("0.0.0.0", "a-long-enough-token")
    with pytest.raises(UsageError, match="token"):
        check_binding("0.0.0.0", None)
    with pytest.raises(UsageError, match="at least"):
        check_binding("127.0.0.1", "short")


def test_any_column_name_works_as_a_field():
    odd = RequestSchema(Schema((ColumnSchema("sepal length (cm)", "float", False),
                                ColumnSchema("_id", "int", False),
                                ColumnSchema("model_config", "string", True))))
    assert odd.parse(b'{"records": [{"sepal length (cm)": 1, "_id": 3, "model_config": null}]}'
                     ) == [{"sepal length (cm)": 1.0, "_id": 3, "model_config": None}]
    with pytest.raises(RequestInvalid) as info:
        odd.parse(b'{"records": [{"sepal length (cm)": "x", "_id": 3, "f0": 1}]}')
    assert {(e.field, e.kind) for e in info.value.errors} == {
        ("sepal length (cm)", "float_type"), ("model_config", "missing"),
        ("f0", "extra_forbidden")}
