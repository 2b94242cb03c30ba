"""`mlops-nb serve` for real: uvicorn in a subprocess on a free loopback port, real HTTP.

The served model is the example pipeline's promoted one (`dvc repro`): its predictions equal
the pipeline's on the same rows; every bad request gets a 422 naming record and field; 100 MB
bodies are refused with and without Content-Length; tokens; a promotion is served without a
restart and without a failed request, and a version that cannot load leaves the old serving.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import threading
from pathlib import Path

import httpx
import pytest

from mlops_nb import artifacts
from mlops_nb.guards.registry import Registry, schema_of
from tests.conftest import sh
from tests.integration.serving import GOOD, raw_post, serving, trained_example, wait_for

pytestmark = pytest.mark.slow

TOKEN = "s3cret-token-of-32-characters-ok"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return trained_example(tmp_path_factory.mktemp("serve") / "example",
                           tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def server(root):
    with serving(root, "--max-rows", "50") as s:
        yield s


def rows(root: Path, name: str = "X_test") -> list[dict]:
    frame = artifacts.load(root / "outputs/prepare" / name)
    return json.loads(frame.to_json(orient="records"))


def test_predictions_equal_the_pipelines_on_the_same_rows(root, server):
    x_test = artifacts.load(root / "outputs/prepare/X_test")
    pipeline_model = artifacts.load(root / "outputs/train/model")
    assert type(pipeline_model).__name__ == "Pipeline"  # the preparation travels with it
    res = server.client.post("/predict", json={"records": rows(root)})
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["model"], body["version"]) == ("iris", 1)
    assert body["predictions"] == pipeline_model.predict(x_test).tolist()

    version = server.client.get("/version").json()
    assert version["version"] == 1 and version["following"] == "production"
    assert version["data"]["outputs/prepare/X_train"] == \
        artifacts.read_meta(root / "outputs/prepare/X_train")["sha256"]
    assert "steps/train.ipynb" in version["code"] and len(version["git_commit"]) == 40
    assert server.client.get("/health").json()["status"] == "ok"
    openapi = server.client.get("/openapi.json").json()
    schema = json.dumps(openapi["paths"]["/predict"])
    assert "petal_width" in schema and "maxItems" in schema
    assert server.client.get("/docs").status_code == 200
    metrics = server.client.get("/metrics").text
    assert 'mlops_nb_requests_total{path="/predict",status="200"}' in metrics
    assert 'mlops_nb_request_seconds_bucket{le="0.5",path="/predict"}' in metrics
    for cls in set(body["predictions"]):
        assert f'prediction="{cls}",version="1"' in metrics




def rec(**change) -> dict:
    out = {**GOOD, **change}
    return {k: v for k, v in out.items() if v is not ...}


BAD = {  # name: (raw JSON body, the (record, field) pairs the answer must name)
    "missing field": (json.dumps({"records": [GOOD, rec(petal_width=...)]}), {(1, "petal_width")}),
    "extra field": (json.dumps({"records": [rec(colour="red")]}), {(0, "colour")}),
    "string for a number": (json.dumps({"records": [GOOD, GOOD, rec(sepal_length="5.1")]}),
                            {(2, "sepal_length")}),
    "bool for a number": (json.dumps({"records": [rec(petal_length=True)]}),
                          {(0, "petal_length")}),
    "null": (json.dumps({"records": [rec(sepal_width=None)]}), {(0, "sepal_width")}),
    "NaN": ('{"records": [{"sepal_length": NaN, "sepal_width": 3.5, "petal_length": 1.4,'
            ' "petal_width": 0.2}]}', {(0, "sepal_length")}),
    "Infinity": ('{"records": [{"sepal_length": 5.1, "sepal_width": Infinity,'
                 ' "petal_length": 1.4, "petal_width": 0.2}]}', {(0, "sepal_width")}),
    "-Infinity": ('{"records": [{"sepal_length": 5.1, "sepal_width": 3.5,'
                  ' "petal_length": -Infinity, "petal_width": 0.2}]}', {(0, "petal_length")}),
    "overflow to infinity": ('{"records": [{"sepal_length": 1e999, "sepal_width": 3.5,'
                             ' "petal_length": 1.4, "petal_width": 0.2}]}', {(0, "sepal_length")}),
    "empty batch": (json.dumps({"records": []}), {(None, "records")}),
    "over the row limit": (json.dumps({"records": [GOOD] * 51}), {(None, "records")}),
    "no records key": (json.dumps({"rows": [GOOD]}), {(None, "records"), (None, "rows")}),
    "records not a list": (json.dumps({"records": GOOD}), {(None, "records")}),
    "record not an object": (json.dumps({"records": [GOOD, [1, 2, 3, 4]]}), {(1, None)}),
    "not JSON": ("sepal_length=5.1", {(None, None)}),
    "a value the model cannot take": (json.dumps({"records": [GOOD, rec(petal_width=0.0)]}),
                                      {(1, None)}),
}


@pytest.mark.parametrize("case", list(BAD))
def test_every_bad_request_gets_422_naming_record_and_field(server, case):
    body, where = BAD[case]
    res = server.client.post("/predict", content=body,
                             headers={"content-type": "application/json"})
    assert res.status_code == 422, res.text
    errors = res.json()["errors"]
    assert {(e["record"], e["field"]) for e in errors} == where, errors
    assert all(e["message"] for e in errors)


def test_no_bad_request_was_a_server_error(server):
    for body, _ in BAD.values():
        server.client.post("/predict", content=body)
    metrics = server.client.get("/metrics").text
    assert 'status="422"' in metrics and 'status="500"' not in metrics


HUNDRED_MB = 100 * 2**20


def megabytes(total: int):
    chunk = b"x" * 2**20
    for _ in range(total // len(chunk)):
        yield chunk


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_100_mb_body_is_refused_with_413(server, chunked):
    headers = {"Content-Type": "application/json"}
    if not chunked:
        headers["Content-Length"] = str(HUNDRED_MB)
    status, response, sent = raw_post(server.port, "/predict", headers,
                                      megabytes(HUNDRED_MB), chunked)
    assert status == 413, response[:300]
    assert b"over the limit" in response
    assert sent < HUNDRED_MB  # refused before the body was all in
    assert server.client.get("/health").status_code == 200  # and it goes on serving
    ok = server.client.post("/predict", json={"records": [GOOD]})
    assert ok.status_code == 200


def test_a_small_chunked_body_is_served(server):
    body = json.dumps({"records": [GOOD]}).encode()
    status, response, _ = raw_post(server.port, "/predict", {"Connection": "close",
                                                         "Content-Type": "application/json"},
                                   [body[:10], body[10:]], chunked=True)
    assert status == 200, response
    assert b'"predictions":[0]' in response


def test_tokens_are_required_and_checked(root):
    with serving(root, token=TOKEN) as s:
        url = s.url + "/predict"
        body = {"records": [GOOD]}
        assert httpx.post(url, json=body).status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}
                          ).status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": TOKEN}).status_code == 401
        assert httpx.get(s.url + "/version").status_code == 401
        assert httpx.get(s.url + "/metrics").status_code == 401
        assert httpx.get(s.url + "/health").status_code == 200  # liveness stays open
        assert s.client.post("/predict", json=body).status_code == 200


def test_binding_beyond_loopback_needs_a_token(root):
    res = sh([sys.executable, "-m", "mlops_nb", "serve", "--host", "0.0.0.0"], root,
             check=False)
    assert res.returncode == 2 and "token" in res.stderr and "0.0.0.0" in res.stderr
    res = sh([sys.executable, "-m", "mlops_nb", "serve", "--host", "0.0.0.0", "--token",
              "short"], root, check=False)
    assert res.returncode == 2 and "at least 16" in res.stderr


def test_a_promotion_is_served_without_restart_or_a_failed_request(root, tmp_path):
    registry = tmp_path / "registry"
    shutil.copytree(root / ".mlops_nb/registry", registry)
    reg = Registry(registry)
    v1 = reg.get("iris", 1)
    with serving(root, "--poll", "0.1", env={"MLOPS_NB_REGISTRY": str(registry)}) as s:
        seen: list[tuple[int, int]] = []  # (status, version) of every answer
        per_client: list[list[int]] = [[], [], []]  # versions, in each client's order
        stop = threading.Event()

        def load(mine: list[int]) -> None:
            with httpx.Client(base_url=s.url, timeout=30) as c:
                while not stop.is_set():
                    r = c.post("/predict", json={"records": [GOOD] * 10})
                    seen.append((r.status_code, r.json().get("version", -1)))
                    mine.append(r.json().get("version", -1))

        workers = [threading.Thread(target=load, args=(mine,)) for mine in per_client]
        for w in workers:
            w.start()
        try:
            model = reg.load_model("iris", 1)
            v2 = reg.register("iris", model, {"accuracy": 0.95}, schema=schema_of(v1))
            reg.promote("iris", v2.version)
            assert wait_for(lambda: s.client.get("/version").json()["version"] == 2)
            served_v2 = len(seen)
            assert wait_for(lambda: len(seen) > served_v2 + 5)  # v2 answers the load

            # a version whose model file is damaged: the service keeps serving v2, says why
            v3 = reg.register("iris", model, {"accuracy": 0.99}, schema=schema_of(v1))
            model_file = next(p for p in (v3.path / "model").iterdir() if p.suffix == ".skops")
            model_file.write_bytes(model_file.read_bytes()[:-100])
            reg.promote("iris", v3.version)
            assert wait_for(lambda: s.client.get("/version").json()["swap_error"])
            version = s.client.get("/version").json()
            assert version["version"] == 2 and "iris:3" in version["swap_error"]
            assert "still serving iris:2" in version["swap_error"]
            assert s.client.get("/health").json()["status"] == "degraded"
            assert s.client.post("/predict", json={"records": [GOOD]}).json()["version"] == 2
        finally:
            stop.set()
            for w in workers:
                w.join()
    assert seen and all(code == 200 for code, _ in seen), [x for x in seen if x[0] != 200]
    for versions in per_client:  # each client: v1, then v2, never back
        assert versions[0] == 1 and versions[-1] == 2 and versions == sorted(versions)


def test_a_pinned_version_is_served(root):
    with serving(root, "iris:1", "--poll", "0.1") as s:
        version = s.client.get("/version").json()
        assert (version["version"], version["following"]) == (1, "pinned")


def test_served_records_are_logged_for_monitoring(root):
    log_dir = root / ".mlops_nb/serving/iris"
    shutil.rmtree(log_dir, ignore_errors=True)
    with serving(root) as s:
        s.client.post("/predict", json={"records": [GOOD, rec(sepal_length=6.0)]})
    (line,) = [json.loads(x) for f in sorted(log_dir.glob("requests-*.jsonl"))
               for x in f.read_text().splitlines()]
    assert (line["version"], line["rows"]) == (1, 2)
    assert line["x"]["sepal_length"] == [5.1, 6.0] and len(line["prediction"]) == 2
    assert math.isfinite(line["ts"])


def test_several_workers_serve_and_their_metrics_add_up(root):
    log_dir = root / ".mlops_nb/serving/iris"
    shutil.rmtree(log_dir, ignore_errors=True)
    with serving(root, "--workers", "2") as s:
        for i in range(12):  # a new connection each, so both workers get some
            res = httpx.post(s.url + "/predict", json={"records": [GOOD]},
                             headers={"Connection": "close", "x-request-id": f"r{i}"})
            assert res.status_code == 200
        metrics = s.client.get("/metrics").text
    assert 'mlops_nb_requests_total{path="/predict",status="200"} 12.0' in metrics
    assert 'mlops_nb_predictions_total{model="iris",prediction="0",version="1"} 12.0' \
        in metrics
    # every record logged, in files only their owner reads (issue 21 item 8)
    logged = [json.loads(x)["request"] for f in log_dir.glob("requests-*.jsonl")
              for x in f.read_text().splitlines()]
    assert sorted(logged) == sorted(f"r{i}" for i in range(12))
    assert {oct(p.stat().st_mode & 0o777) for p in (log_dir, log_dir.parent)} == {"0o700"}
    assert {oct(f.stat().st_mode & 0o777) for f in log_dir.iterdir()} == {"0o600"}
