"""The request parser's quick path (TypedDicts, no Python per record) gives exactly the records
the full parse gives for a valid body, and never accepts what the full parse refuses: every
bad body gets the full parse's own errors."""

from __future__ import annotations

import json

import pytest

from mlops_nb.guards.validation.schema import ColumnSchema, Schema
from mlops_nb.serve.schema import RequestInvalid, RequestSchema

SCHEMA = Schema((ColumnSchema("sepal length (cm)", "float", False),
                 ColumnSchema("_id", "int", False),
                 ColumnSchema("model_config", "category", False, values=("a", "b")),
                 ColumnSchema('quote"d', "bool", False),
                 ColumnSchema("when", "datetime", True),
                 ColumnSchema("note", "str", True)))
GOOD = {"sepal length (cm)": 5, "_id": 3, "model_config": "a", 'quote"d': True,
        "when": "2026-01-02T03:04:05", "note": None}
VALID = [{"records": [GOOD]}, {"records": [GOOD, {**GOOD, "sepal length (cm)": 1.5}],
                               "proba": True},
         {"records": [dict(reversed(list(GOOD.items())))], "proba": False}]
INVALID = [
    '{"records": [{"sepal length (cm)": NaN, "_id": 1, "model_config": "a",'
    ' "quote\\"d": true, "when": null, "note": null}]}',
    json.dumps({"records": [{**GOOD, "extra": 1}]}),
    json.dumps({"records": [{**GOOD, "f0": 1}]}),
    json.dumps({"records": [GOOD], "other": 1}),
    json.dumps({"records": [GOOD], "proba": "yes"}),
    json.dumps({"records": [{**GOOD, "_id": 1.5}]}),
    json.dumps({"records": [{**GOOD, "model_config": "c"}]}),
    json.dumps({"records": [{**GOOD, "sepal length (cm)": "5"}]}),
    json.dumps({"records": [{k: v for k, v in GOOD.items() if k != "_id"}]}),
    json.dumps({"records": [GOOD] * 11}),
    json.dumps({"records": []}), json.dumps([GOOD]), "not json", json.dumps({"records": [1]}),
]


def parsers() -> tuple[RequestSchema, RequestSchema]:
    quick, full = RequestSchema(SCHEMA, max_rows=10), RequestSchema(SCHEMA, max_rows=10)
    assert quick._quick is not None
    full._quick = None
    return quick, full


@pytest.mark.parametrize("body", VALID)
def test_a_valid_body_gives_the_same_records_in_both_paths(body):
    quick, full = parsers()
    text = json.dumps(body).encode()
    got, want = quick.parse_request(text), full.parse_request(text)
    assert got == want
    assert [list(r) for r in got[0]] == [list(r) for r in want[0]]  # column order too
    assert [[type(v) for v in r.values()] for r in got[0]] == \
        [[type(v) for v in r.values()] for r in want[0]]


@pytest.mark.parametrize("body", INVALID)
def test_a_bad_body_gets_the_full_parses_errors(body):
    quick, full = parsers()
    with pytest.raises(RequestInvalid) as got:
        quick.parse_request(body.encode())
    with pytest.raises(RequestInvalid) as want:
        full.parse_request(body.encode())
    assert [e.to_dict() for e in got.value.errors] == [e.to_dict() for e in want.value.errors]
