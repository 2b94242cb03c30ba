"""`mlops-nb deploy` for real: a uv venv made from the repository's lock, `mlops-nb serve` on
127.0.0.1, real HTTP.

A good version reaches staging and a running `serve iris@staging` swaps to it without a failed
request; a version whose served answers differ from the registered model's (a model whose
predictions are random), one whose load test misses its floor, and one that does not load in
the fresh environment (a lock without scikit-learn) are refused with their stage unchanged;
production needs staging first (or --force). Each deploy is a lineage event.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mlops_nb.ci import deploy, deployenv
from mlops_nb.errors import DeployRefused, UsageError
from mlops_nb.guards.lineage import LineageStore, default_path
from mlops_nb.guards.registry import Registry, default_root, reference_of, schema_of
from tests.conftest import REPO, tool_env
from tests.integration.serving import serving, trained_example

pytestmark = pytest.mark.slow

FAST = "mlops_nb:\n  deploy:\n    load_test_seconds: 1\n    load_test_clients: 2\n"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    project = trained_example(tmp_path_factory.mktemp("deploy") / "example",
                              tmp_path_factory.mktemp("build"))
    (project / "requirements.lock").write_bytes((REPO / "requirements.lock").read_bytes())
    with open(project / "params.yaml", "a", encoding="utf-8") as f:
        f.write(FAST)
    return project


def registry(root: Path) -> Registry:
    return Registry(default_root(root))


def new_version(root: Path, model=None) -> int:
    """A new candidate of 'iris': v1's model (or `model`) with v1's schema and sample."""
    reg = registry(root)
    v1 = reg.get("iris", 1)
    chosen = model if model is not None else reg.load_model("iris", 1)
    return reg.register("iris", chosen, {"accuracy": 0.9}, schema=schema_of(v1),
                        reference=reference_of(v1)).version


def stages(root: Path) -> dict[int, str]:
    return {v.version: v.stage for v in registry(root).versions("iris")}


def events(root: Path) -> list[dict]:
    return LineageStore(default_path(root)).events("deploy")


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # as on machines that write no bytecode: deploy's processes still compile theirs once
    return subprocess.run([sys.executable, "-m", "mlops_nb", "deploy", *args], cwd=root,
                          env=tool_env(PYTHONDONTWRITEBYTECODE="1"), capture_output=True,
                          text=True, timeout=900)


def test_a_good_version_reaches_staging_and_a_staging_service_swaps_to_it(root):
    first = new_version(root)
    registry(root).set_stage("iris", first, "staging")
    second = new_version(root)
    with serving(root, "iris@staging", "--poll", "0.1") as s:
        seen: list[tuple[int, int]] = []
        stop = threading.Event()
        good = reference_of(registry(root).get("iris", 1)).head(3)
        body = {"records": [{k: float(v) for k, v in r.items()}
                            for r in good.to_dict("records")]}

        def client() -> None:
            with httpx.Client(base_url=s.url, timeout=30) as c:
                while not stop.is_set():
                    r = c.post("/predict", json=body)
                    seen.append((r.status_code, r.json().get("version", -1)))

        worker = threading.Thread(target=client)
        worker.start()
        try:
            done = cli(root, f"iris:{second}", "--to", "staging")
            assert done.returncode == 0, done.stderr
            assert f"iris:{second} is now in staging" in done.stdout
            assert "ok  smoke test" in done.stdout and "ok  load test" in done.stdout
            env = deployenv.python_of(deployenv.find_lock(root)).parent.parent
            assert list(env.glob("lib/python*/site-packages/sklearn/__pycache__/*.pyc")), \
                "the deploy's processes compiled nothing: each later one compiles again"
            deadline = time.monotonic() + 60
            while s.client.get("/version").json()["version"] != second:
                assert time.monotonic() < deadline, "the service did not swap"
                time.sleep(0.05)  # polling a condition (the served version)
            assert s.client.get("/version").json()["following"] == "staging"
            count = len(seen)
            while len(seen) < count + 5:  # the new version answers the client
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join()
    assert seen and all(code == 200 for code, _ in seen), [x for x in seen if x[0] != 200]
    assert {v for _, v in seen} == {first, second}
    assert stages(root)[first] == "archived" and stages(root)[second] == "staging"
    event = events(root)[0]
    assert event["subject"] == f"iris:{second}" and event["payload"]["moved"] is True
    checks = {c["name"]: c for c in event["payload"]["checks"]}
    assert list(checks) == ["fresh environment", "memory and load time", "smoke test",
                            "load test"]
    assert checks["memory and load time"]["figures"]["peak_memory_mb"] > 10
    assert checks["load test"]["figures"]["requests"] > 0
    # staging -> production: the checks again, then the old production version is archived
    result = deploy.deploy(root, "iris@staging", "production")
    assert result.moved and [c.ok for c in result.checks] == [True] * 4
    assert stages(root)[second] == "production" and stages(root)[1] == "archived"


def test_production_is_reached_from_staging_only_unless_forced(root):
    version = new_version(root)
    before = stages(root)
    done = cli(root, f"iris:{version}", "--to", "production")
    assert done.returncode == 2, done.stderr
    assert f"iris:{version} is in stage candidate: production is reached from staging" \
        in done.stderr
    assert stages(root) == before
    forced = cli(root, f"iris:{version}", "--to", "production", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    shown = json.loads(forced.stdout)
    assert shown["moved"] is True and [c["ok"] for c in shown["checks"]] == [True] * 4
    assert stages(root)[version] == "production"
    assert [v for v, st in stages(root).items() if st == "production"] == [version]
    assert events(root)[0]["payload"]["force"] is True


def test_served_answers_that_differ_are_refused(root):
    from sklearn.dummy import DummyClassifier

    v1 = registry(root).get("iris", 1)
    x = reference_of(v1)
    y = registry(root).load_model("iris", 1).predict(x)
    # a real model whose every predict() draws again: its served answers are not the ones
    # the registered model gives here
    version = new_version(root, DummyClassifier(strategy="stratified").fit(x, y))
    before, count = stages(root), len(events(root))
    with pytest.raises(DeployRefused, match=rf"iris:{version} to staging refused at the smoke"
                                            r" test check: \d+ of 20 answers differ: record"):
        deploy.deploy(root, f"iris:{version}", "staging")
    assert stages(root) == before
    event = events(root)[0]
    assert len(events(root)) == count + 1 and event["payload"]["moved"] is False
    assert [c["ok"] for c in event["payload"]["checks"]] == [True, True, False]


def test_a_load_test_below_its_floor_is_refused(root):
    version = new_version(root)
    params = root / "params.yaml"
    text = params.read_text(encoding="utf-8")
    params.write_text(text + "    min_requests_per_second: 1000000\n", encoding="utf-8")
    try:
        before = stages(root)
        done = cli(root, f"iris:{version}", "--to", "staging")
    finally:
        params.write_text(text, encoding="utf-8")
    assert done.returncode == 23, done.stderr
    assert "refused at the load test check" in done.stderr
    assert "under min_requests_per_second 1000000" in done.stderr
    assert stages(root) == before


def test_a_model_that_does_not_load_in_the_fresh_environment_is_refused(root, tmp_path):
    version = new_version(root)
    lock = root / "requirements.lock"
    text = lock.read_text(encoding="utf-8")
    kept, skip = [], False
    for line in text.splitlines(keepends=True):  # the lock without scikit-learn's entry
        if not line.startswith(" "):
            skip = line.startswith("scikit-learn==")
        if not skip:
            kept.append(line)
    assert len(kept) < len(text.splitlines())
    lock.write_text("".join(kept), encoding="utf-8")
    try:
        before = stages(root)
        with pytest.raises(DeployRefused, match=r"(?s)refused at the fresh environment check:"
                                                r" iris:\d+ does not load in an environment"
                                                r" made from the project's lock.*sklearn"):
            deploy.deploy(root, f"iris:{version}", "staging")
    finally:
        lock.write_text(text, encoding="utf-8")
    assert stages(root) == before
    failed = events(root)[0]["payload"]["checks"]
    assert [c["ok"] for c in failed] == [False] and "No module named 'sklearn'" in \
        failed[0]["detail"]


def test_hostile_names_and_limits_change_nothing(root):
    before, count = stages(root), len(events(root))
    for name in ("iris'\n:1", 'ir"is', "../iris"):
        done = cli(root, name, "--to", "staging")
        assert done.returncode == 9, done.stderr
        assert "invalid model name" in done.stderr and "Traceback" not in done.stderr
    params = root / "params.yaml"
    text = params.read_text(encoding="utf-8")
    version = new_version(root)
    params.write_text(text + "    max_p99_ms: \"fast\\n\"\n", encoding="utf-8")
    try:
        done = cli(root, f"iris:{version}", "--to", "staging")
    finally:
        params.write_text(text, encoding="utf-8")
    assert done.returncode == 3, done.stderr
    assert "mlops_nb.deploy.max_p99_ms must be a positive number, not 'fast\\n'" in done.stderr
    with pytest.raises(UsageError, match="--to must be one of"):
        deploy.deploy(root, f"iris:{version}", "archived")
    assert stages(root) == {**before, version: "candidate"} and len(events(root)) == count


def test_ci_run_deploy_takes_each_new_version_through_staging_to_production(root):
    """`ci run --deploy` (the workflows' main branch): the gate only registered the version
    (MLOPS_NB_GATE_REGISTER_ONLY in the worktree), then deploy to staging and to production
    are checks of the run; a version whose checks fail stops there, failing the run."""
    from mlops_nb.ci import run as ci_run
    from mlops_nb.ci import workspace
    from mlops_nb.ci.result import FAILED, OK, CiResult
    from mlops_nb.guards import REGISTER_ONLY_ENV

    with workspace.worktree(root, ci_run._dvc(), True, register_only=True) as ws:
        assert ws.env[REGISTER_ONLY_ENV] == "1"
    with workspace.worktree(root, ci_run._dvc(), True) as ws:
        assert REGISTER_ONLY_ENV not in ws.env
    new = new_version(root)
    result = CiResult("c", None, "main", False)
    ci_run._deploy(result, root, [("iris", new)])
    assert [(c.name, c.outcome) for c in result.checks] == [
        (f"deploy iris:{new} to staging", OK), (f"deploy iris:{new} to production", OK)]
    assert stages(root)[new] == "production"

    from sklearn.dummy import DummyClassifier

    x = reference_of(registry(root).get("iris", 1))
    y = registry(root).load_model("iris", 1).predict(x)
    # answers drawn again at every predict(): the smoke test refuses it, nothing moves
    bad = new_version(root, DummyClassifier(strategy="stratified").fit(x, y))
    result = CiResult("c", None, "main", False)
    ci_run._deploy(result, root, [("iris", bad)])
    assert [(c.name, c.outcome) for c in result.checks] == [
        (f"deploy iris:{bad} to staging", FAILED)]
    assert "smoke test" in result.checks[0].detail
    assert stages(root)[bad] == "candidate" and stages(root)[new] == "production"
    result = CiResult("c", None, "main", False)
    ci_run._deploy(result, root, [])
    assert result.checks[0].detail == "the gate registered no new version"
