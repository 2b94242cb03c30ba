"""Bounds of serving's parts, without a server: the cost and size of a hostile body's errors,
Host names, paths kept out of /health, the token file, and log pruning between processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from mlops_nb.errors import UsageError
from mlops_nb.guards.registry import Registry
from mlops_nb.guards.validation.schema import ColumnSchema, Schema
from mlops_nb.serve.guard import host_of
from mlops_nb.serve.holder import public
from mlops_nb.serve.reqlog import RequestLog, log_files
from mlops_nb.serve.schema import MAX_ERRORS, RequestInvalid, RequestSchema
from mlops_nb.serve.server import ServeSettings, hosts, read_token_file

SCHEMA = Schema(tuple(ColumnSchema(n, "float", False) for n in ("a", "b", "c", "d")))
GOOD = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}


def errors(body: dict | str, max_rows: int = 1000) -> list:
    raw = body if isinstance(body, str) else json.dumps(body)
    with pytest.raises(RequestInvalid) as info:
        RequestSchema(SCHEMA, max_rows).parse(raw.encode())
    return info.value.errors


def test_eighty_thousand_unknown_fields_cost_one_scan_and_one_error():
    fields = {f"u{i}": 0 for i in range(80_000)}
    for record in ({**GOOD, **fields}, {"a": "x", **fields}):
        found = errors({"records": [record]})
        assert len(found) == 1 and "unknown fields such as 'u0'" in found[0].message


def test_errors_are_capped_with_a_count():
    found = errors({"records": [{}] * 1000})  # 4,000 missing fields
    assert len(found) == MAX_ERRORS + 1
    assert found[-1].message == f"and {4000 - MAX_ERRORS} more errors"
    few = errors({"records": [{**GOOD, **{f"x{i}": 1 for i in range(9)}}]})
    assert [e.field for e in few[:5]] == ["x0", "x1", "x2", "x3", "x4"]
    assert few[-1].message == "record 0: and 4 more unknown fields"
    long_name = errors({"records": [{**GOOD, "y" * 100_000: 1}]})
    assert len(json.dumps([e.to_dict() for e in long_name])) < 1000


def test_hostile_bodies_get_errors_not_crashes():
    for body in ('[' * 100_000, '{"records": [' + '[' * 100_000 + ']}', '{"records": "\\ud800"}',
                 '{"records": [{"a\\": 1, "b": 2}]}', '{"proba": 1, "records": []}'):
        assert errors(body)


def test_host_names():
    assert host_of(b"127.0.0.1:8000") == "127.0.0.1"
    assert host_of(b"[::1]:8000") == "::1" and host_of(b"LOCALHOST") == "localhost"
    assert hosts(ServeSettings(root=".")) == ("localhost", "127.0.0.1", "::1")
    assert hosts(ServeSettings(root=".", host="0.0.0.0")) == ("*",)
    assert "api.example" in hosts(ServeSettings(root=".", allowed_hosts=("api.example",)))


def test_health_messages_name_no_absolute_paths(tmp_path):
    reg = Registry(tmp_path / "reg")
    text = public(f"{tmp_path}/reg/iris/v3/model/data.skops is damaged; see /etc/passwd",
                  reg)
    assert text == "iris/v3/model/data.skops is damaged; see passwd"


def test_the_token_file_must_be_private(tmp_path):
    path = tmp_path / "token"
    path.write_text("a-token-long-enough-1234\n")
    path.chmod(0o600)
    assert read_token_file(path) == "a-token-long-enough-1234"
    path.chmod(0o640)
    with pytest.raises(UsageError, match="chmod 600"):
        read_token_file(path)
    with pytest.raises(UsageError, match="cannot open"):
        read_token_file(tmp_path / "missing")


def test_pruning_never_removes_a_live_processs_file(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        theirs = tmp_path / f"requests-{other.pid}.jsonl"
        theirs.write_text('{"x": 1}\n')
        os.utime(theirs, (1, 1))  # the oldest file of the folder
        log = RequestLog(tmp_path, max_bytes=200, max_files=2)
        log.start()
        for i in range(20):
            assert log.submit({"ts": time.time(), "request": str(i)}, [{"a": i}], [0])
            log.flush()
        log.stop()
        assert theirs.exists()
    finally:
        other.communicate(b"")
    log = RequestLog(tmp_path, max_bytes=200, max_files=2)
    log.start()  # the other process is gone: its file is pruned as an old one
    log.stop()
    assert not theirs.exists() and len(log_files(tmp_path)) <= 2
    assert oct(tmp_path.stat().st_mode & 0o777) == "0o700"
