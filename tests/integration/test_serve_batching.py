"""Adaptive batching: concurrent requests predicted together, each answered with its own records.

50 clients, released together by a barrier, each send records of their own to a real server;
each gets the model's predictions (and probabilities when asked) for exactly its records. A
record the model cannot take, or one that breaks the schema, fails its own request (422 with
its own record numbers) and never its neighbours'. Hostile batch limits are refused.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlops_nb import artifacts
from tests.integration.serving import serve_cli, serving, trained_example

pytestmark = pytest.mark.slow

CLIENTS = 50


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return trained_example(tmp_path_factory.mktemp("batching") / "example",
                           tmp_path_factory.mktemp("build"))


def table(root: Path):  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.concat([artifacts.load(root / "outputs/prepare/X_train"),
                      artifacts.load(root / "outputs/prepare/X_test")], ignore_index=True)


def together(url: str, bodies: list[dict]) -> list[httpx.Response]:
    """POST every body at once: one thread and connection each, released by one barrier."""
    barrier = threading.Barrier(len(bodies))
    answers: list[httpx.Response | None] = [None] * len(bodies)

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            c.get("/health")  # the connection is open before the barrier
            barrier.wait()
            answers[i] = c.post("/predict", json=bodies[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a is not None for a in answers)
    return answers  # type: ignore[return-value]


def test_fifty_concurrent_clients_each_get_their_own_answers(root: Path):
    x = table(root)
    model = artifacts.load(root / "outputs/train/model")
    parts = [x.iloc[[i, i + CLIENTS, i + 2 * CLIENTS]] for i in range(CLIENTS)]  # distinct rows
    bodies = [{"records": json.loads(p.to_json(orient="records")), "proba": i % 3 == 0}
              for i, p in enumerate(parts)]
    with serving(root, "--runtime", "sklearn", "--batch-max-wait-ms", "5") as server:
        answers = together(server.url, bodies)
        batching = server.client.get("/version").json()["batching"]
    for i, (part, res) in enumerate(zip(parts, answers, strict=True)):
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["predictions"] == model.predict(part).tolist(), i
        if i % 3 == 0:
            want = np.round(model.predict_proba(part).astype(np.float32).astype(float), 6)
            assert body["probabilities"] == want.tolist() and body["classes"] == [0, 1, 2]
        else:
            assert "probabilities" not in body
    assert batching["largest_batch"] > 1, batching  # they were predicted together
    assert batching["model_calls"] < CLIENTS + 1


def test_a_bad_record_in_a_batch_fails_alone(root: Path):
    x = table(root)
    model = artifacts.load(root / "outputs/train/model")
    parts = [x.iloc[[i, i + CLIENTS]] for i in range(CLIENTS)]
    bodies = [{"records": json.loads(p.to_json(orient="records"))} for p in parts]
    bodies[7]["records"][1]["petal_width"] = 0.0  # log(0): the model cannot take it
    bodies[23]["records"][0]["sepal_length"] = "5.1"  # breaks the schema
    with serving(root, "--runtime", "sklearn") as server:
        answers = together(server.url, bodies)
        batching = server.client.get("/version").json()["batching"]
    for i, (part, res) in enumerate(zip(parts, answers, strict=True)):
        if i == 7:
            assert res.status_code == 422, res.text
            assert [(e["record"], e["type"]) for e in res.json()["errors"]] == \
                [(1, "model_rejected")]
        elif i == 23:
            assert res.status_code == 422, res.text
            assert [(e["record"], e["field"]) for e in res.json()["errors"]] == \
                [(0, "sepal_length")]
        else:
            assert res.status_code == 200, (i, res.text)
            assert res.json()["predictions"] == model.predict(part).tolist(), i
    assert batching["largest_batch"] > 1, batching


@pytest.mark.parametrize("option,value", [
    ("--batch-max-records", "0"), ("--batch-max-records", "1000000000"),
    ("--batch-max-records", "12'; rm -rf ~"), ("--batch-max-wait-ms", "-1"),
    ("--batch-max-wait-ms", "nan")])
def test_hostile_batch_limits_are_refused_naming_the_option(root: Path, option: str,
                                                            value: str):
    res = serve_cli(root, option, value, "--port", "0")
    assert res.returncode == 2, res.stderr
    assert option in res.stderr and "Traceback" not in res.stderr


def test_batch_settings_refuse_hostile_values_in_the_library_too():
    from mlops_nb.errors import UsageError
    from mlops_nb.serve.batching import BatchSettings

    for bad in ({"max_records": 0}, {"max_records": True}, {"max_records": 10**9},
                {"max_wait_ms": 0}, {"max_wait_ms": float("nan")}, {"max_wait_ms": -1.0},
                {"max_records": 2.5}):
        with pytest.raises(UsageError, match="--batch-max-"):
            BatchSettings(**bad)  # type: ignore[arg-type]
