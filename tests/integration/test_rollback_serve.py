"""`mlops-nb models rollback` under load: a real `mlops-nb serve` on 127.0.0.1 follows the
production stage, and concurrent clients see version 2, then version 1, never a failed request;
a real webhook receiver gets exactly one rollback alert, and the lineage store the rollback."""

from __future__ import annotations

import sys
import threading

import httpx
import pytest

from mlops_nb.guards.lineage import LineageStore, default_path
from mlops_nb.guards.registry import Registry, default_root
from tests.conftest import sh
from tests.integration.serving import serving, wait_for
from tests.receiver import iris_project, iris_rows, receiving

pytestmark = pytest.mark.slow


def test_a_rollback_is_served_without_a_failed_request(tmp_path):
    root = iris_project(tmp_path / "p", versions=2)
    Registry(default_root(root)).promote("iris", 2)  # 1 was production before 2
    records = iris_rows(n=10).to_dict(orient="records")
    with receiving() as rec, serving(root, "--poll", "0.1") as s:
        assert s.client.get("/version").json()["version"] == 2
        seen: list[tuple[int, int]] = []  # (status, version) of every answer
        per_client: list[list[int]] = [[], [], []]
        stop = threading.Event()

        def load(mine: list[int]) -> None:
            with httpx.Client(base_url=s.url, timeout=30) as c:
                while not stop.is_set():
                    r = c.post("/predict", json={"records": records})
                    version = r.json().get("version", -1) if r.status_code == 200 else -1
                    seen.append((r.status_code, version))
                    mine.append(version)

        clients = [threading.Thread(target=load, args=(mine,)) for mine in per_client]
        for c in clients:
            c.start()
        try:
            assert wait_for(lambda: all(len(m) > 3 for m in per_client))
            res = sh([sys.executable, "-m", "mlops_nb", "models", "rollback", "iris",
                      "--reason", "online accuracy fell to 0.61"], root,
                     MLOPS_NB_ALERT_WEBHOOK=rec.url)
            assert "rolled back iris:2 -> iris:1 because online accuracy fell" in res.stdout
            assert rec.url not in res.stdout + res.stderr
            assert wait_for(lambda: s.client.get("/version").json()["version"] == 1)
            after = len(seen)
            assert wait_for(lambda: len(seen) > after + 10)  # version 1 answers the load
        finally:
            stop.set()
            for c in clients:
                c.join()
    assert seen and all(code == 200 for code, _ in seen), [x for x in seen if x[0] != 200]
    for versions in per_client:  # each client: 2, then 1, never back
        assert versions[0] == 2 and versions[-1] == 1
        assert versions == sorted(versions, reverse=True)
    (alert,) = rec.bodies()
    assert alert["mlops_nb"]["event"] == "rollback"
    assert "rolled back iris:2 -&gt; iris:1 because online accuracy fell" in alert["text"]
    (event,) = LineageStore(default_path(root)).events("rollback")
    assert (event["payload"]["from"], event["payload"]["to"]) == (2, 1)
