"""What the service serves and what it logs (issue 21, items 7 and 8), on a real server.

- a version folder copied into the registry with `stage: production` is not served: only
  versions the registry's record lists (register() wrote it, with the model's digest), and
  never two production versions;
- two processes logging into one folder never delete each other's open file; a full disk
  under the log folder counts every dropped record in /metrics; logs are 0600 in 0700.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from mlops_nb.guards.registry import Registry, schema_of
from tests.conftest import fill_disk, small_disk
from tests.integration.serving import GOOD, registry_copy, serving, trained_example, wait_for
from tests.integration.serving import serve_cli as serve_cmd

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return trained_example(tmp_path_factory.mktemp("planted") / "example",
                           tmp_path_factory.mktemp("build"))


@pytest.fixture()
def registry(root, tmp_path) -> Path:
    return registry_copy(root, tmp_path / "registry")


def plant(registry: Path, number: int, stage: str = "production") -> None:
    """Copy iris:1's folder in as version `number`, as someone with write access could."""
    src = registry / "iris" / "v1"
    aside = registry / "iris" / ".plant"
    shutil.copytree(src, aside)
    record = json.loads((aside / "version.json").read_text())
    record.update(version=number, stage=stage)
    (aside / "version.json").write_text(json.dumps(record))
    aside.rename(registry / "iris" / f"v{number}")  # appears whole, as a copy finally does


def serve_cli(root: Path, *args: str, registry: Path) -> subprocess.CompletedProcess[str]:
    return serve_cmd(root, *args, MLOPS_NB_REGISTRY=str(registry))


def test_a_planted_production_version_is_not_served(root, registry):
    env = {"MLOPS_NB_REGISTRY": str(registry)}
    with serving(root, "--poll", "0.1", env=env) as s:
        plant(registry, 2)
        assert wait_for(lambda: "iris:2" in (s.client.get("/health").json()["reason"] or ""))
        health = s.client.get("/health").json()
        assert "not made by this registry" in health["reason"], health
        assert s.client.get("/version").json()["version"] == 1
        assert s.client.post("/predict", json={"records": [GOOD]}).json()["version"] == 1
    res = serve_cli(root, "iris:2", registry=registry)  # pinned: refused before serving
    assert res.returncode != 0 and "iris:2 is not a version this registry" in res.stderr
    Registry(registry).set_stage("iris", 1, "archived")  # the plant is the only production
    res = serve_cli(root, registry=registry)
    assert res.returncode != 0 and "no production version" in res.stderr
    assert "ignored iris:2" in res.stderr


def test_two_production_versions_are_refused(root, registry):
    reg = Registry(registry)
    v1 = reg.get("iris", 1)
    reg.register("iris", reg.load_model("iris", 1), {"accuracy": 0.9}, schema=schema_of(v1))
    record = registry / "iris" / "v2" / "version.json"  # hand-edited into production too
    record.write_text(record.read_text().replace('"stage": "candidate"',
                                                 '"stage": "production"'))
    res = serve_cli(root, registry=registry)
    assert res.returncode != 0 and "2 production versions (iris:1, iris:2)" in res.stderr


def _log_lines(folder: Path) -> list[dict]:
    return [json.loads(x) for f in sorted(folder.glob("requests-*.jsonl"))
            for x in f.read_text().splitlines() if x.strip()]


def test_one_servers_rotation_never_deletes_anothers_open_log(root, tmp_path):
    logs = tmp_path / "logs"
    args = ("--log-dir", str(logs), "--log-max-bytes", "1000", "--log-max-files", "3")
    with serving(root, *args) as a, serving(root, *args) as b:
        def post(server, rid: str) -> None:
            res = server.client.post("/predict", json={"records": [GOOD]},
                                     headers={"x-request-id": rid})
            assert res.status_code == 200

        post(a, "a0")
        post(a, "a1")
        assert wait_for(lambda: {"a0", "a1"} <= {x["request"] for x in _log_lines(logs)})
        for i in range(30):  # b rotates (and prunes) many times meanwhile
            post(b, f"b{i}")
        post(a, "a2")
        post(a, "a3")
    kept = {x["request"] for x in _log_lines(logs)}
    assert {"a0", "a1", "a2", "a3", "b29"} <= kept, sorted(kept)
    files = list(logs.glob("requests-*.jsonl"))
    assert len(files) <= 3 + 2  # bounded: the rotated files kept, and the two open ones
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)


def test_a_full_log_disk_counts_every_dropped_record(root, tmp_path):
    with small_disk(tmp_path / "disk", "64k") as disk:
        (disk / "logs").mkdir()
        fill_disk(disk, b"x")
        with serving(root, "--log-dir", str(disk / "logs")) as s:
            for _ in range(5):
                res = s.client.post("/predict", json={"records": [GOOD, GOOD]})
                assert res.status_code == 200  # logging never fails a response

            def dropped() -> float:
                text = s.client.get("/metrics").text
                line = next(x for x in text.splitlines()
                            if x.startswith("mlops_nb_log_dropped_records_total"))
                return float(line.split()[-1])

            assert wait_for(lambda: dropped() == 10.0), dropped()
