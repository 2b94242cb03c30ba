"""The model registry: versions, stages, safe storage; a malicious pickle never runs."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlops_nb import artifacts
from mlops_nb.artifacts import trust
from mlops_nb.cli import main
from mlops_nb.errors import RegistryError, UnsafeModelError
from mlops_nb.guards.registry import Registry, load_model_file, parse_ref


@pytest.fixture(scope="module")
def data():
    return load_iris(return_X_y=True)


@pytest.fixture
def reg(tmp_path):
    return Registry(tmp_path / ".mlops_nb" / "registry")


def model(data, c=1.0):
    x, y = data
    return LogisticRegression(C=c, max_iter=500).fit(x, y)


class Plain:
    """Not a scikit-learn object: skops would need it trusted, so it goes to pickle."""

    def __init__(self, k: int) -> None:
        self.k = k


class Exploit:
    """Unpickling this writes a marker file: what an attacker's 'model' would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"with open({self.marker!r}, 'w') as f: f.write('pwned')",))


def test_register_stores_skops_and_loads_the_same_model(reg, data):
    m = model(data)
    mv = reg.register("iris", m, {"accuracy": 0.97}, info={"run_id": "r1"})
    assert (mv.version, mv.stage, mv.format, mv.ref) == (1, "candidate", "skops", "iris:1")
    assert mv.info["run_id"] == "r1" and (mv.path / "model" / "data.skops").exists()
    back = reg.load_model("iris", 1)
    assert np.array_equal(back.predict(data[0]), m.predict(data[0]))


def test_promote_archives_the_previous_production(reg, data):
    for c in (0.1, 1.0, 10.0):
        reg.register("iris", model(data, c), {"accuracy": c})
    reg.promote("iris", 1)
    reg.promote("iris", 3)
    stages = [(v.version, v.stage) for v in reg.versions("iris")]
    assert stages == [(1, "archived"), (2, "candidate"), (3, "production")]
    assert reg.get("iris").version == 3 and reg.get("iris", "latest").version == 3
    assert reg.get("iris", "v2").version == 2
    history = reg.get("iris", 1).info["history"]
    assert [h["stage"] for h in history] == ["candidate", "production", "archived"]
    assert history[-1]["by"] == "iris:3"


def test_staging_holds_one_version_beside_production(reg, data):
    for c in (0.1, 1.0, 10.0):
        reg.register("iris", model(data, c), {"accuracy": c})
    reg.promote("iris", 1)
    reg.set_stage("iris", 2, "staging")
    reg.set_stage("iris", 3, "staging")
    stages = [(v.version, v.stage) for v in reg.versions("iris")]
    assert stages == [(1, "production"), (2, "archived"), (3, "staging")]
    assert reg.get("iris", "staging").version == 3 and reg.get("iris").version == 1
    assert reg.in_stage("iris", "staging").version == 3
    reg.promote("iris", 3)  # the gate's path is unchanged: any stage may be promoted
    assert [v.stage for v in reg.versions("iris")] == ["archived", "archived", "production"]
    with pytest.raises(RegistryError, match="has no staging version"):
        reg.get("iris", "staging")
    with pytest.raises(RegistryError, match="iris:2 moved to archived meanwhile"):
        reg.set_stage("iris", 2, "staging", expect="candidate")  # what deploy checked
    assert reg.get("iris", 2).stage == "archived"


def test_unknown_model_version_or_stage_is_a_registry_error(reg, data):
    with pytest.raises(RegistryError, match="no model named 'nope'"):
        reg.get("nope")
    reg.register("iris", model(data), {})
    with pytest.raises(RegistryError, match="has no production version"):
        reg.get("iris")
    with pytest.raises(RegistryError, match="no version 7"):
        reg.get("iris", 7)
    with pytest.raises(RegistryError, match="unknown stage"):
        reg.set_stage("iris", 1, "qa")
    with pytest.raises(RegistryError, match="invalid model name"):
        reg.versions("../etc")
    assert RegistryError("x").exit_code == 9


def test_parse_ref():
    assert parse_ref("iris:3") == ("iris", "3")
    assert parse_ref("iris@production") == ("iris", "production")
    assert parse_ref("iris") == ("iris", None)


def test_pickle_only_when_explicitly_allowed(reg):
    with pytest.raises(RegistryError, match="allow_pickle=True"):
        reg.register("plain", Plain(3), {})
    assert reg.versions("plain") == []  # nothing half-written
    mv = reg.register("plain", Plain(3), {}, allow_pickle=True)
    assert mv.format == "pickle"
    with pytest.raises(UnsafeModelError):
        reg.load_model("plain", 1)
    assert reg.load_model("plain", 1, allow_pickle=True).k == 3


def plant_pickle(reg, tmp_path, payload: bytes, name: str = "evil"):
    """A registry version whose model is a raw pickle, with a matching hash."""
    folder = reg.root / name / "v1"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "data.pkl").write_bytes(payload)
    meta = {"format": "pickle", "file": "data.pkl", "type": "x.Model",
            "sha256": artifacts.sha256_file(folder / "model" / "data.pkl")}
    (folder / "model" / "meta.json").write_text(json.dumps(meta))
    (folder / "version.json").write_text(json.dumps(
        {"version": 1, "stage": "production", "created": "2026-01-01", "metrics": {},
         "format": "skops"}))  # the record lies about the format: the file decides
    return folder


def test_malicious_pickle_is_refused_and_never_runs(reg, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "MARKER"
    plant_pickle(reg, tmp_path, pickle.dumps(Exploit(str(marker))))
    with pytest.raises(UnsafeModelError, match="can run arbitrary code"):
        reg.load_model("evil", 1)
    with pytest.raises(UnsafeModelError):
        reg.load_model("evil")
    with pytest.raises(UnsafeModelError):
        load_model_file(reg.root / "evil" / "v1" / "model")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOPS_NB_ROOT", str(tmp_path))
    assert main(["models", "show", "evil:1"]) == 0  # reading the record loads nothing
    assert main(["models", "list"]) == 0
    assert "evil:1" in capsys.readouterr().out
    assert not marker.exists()
    # allow_pickle allows the format, not a file the registry did not write
    with pytest.raises(RegistryError, match="not stored by register"):
        reg.load_model("evil", 1, allow_pickle=True)
    assert not marker.exists()
    # control: the payload is live, it runs once the bytes are ones the registry wrote
    live = tmp_path / "LIVE"
    folder = plant_pickle(reg, tmp_path, pickle.dumps(Exploit(str(live))), name="control")
    meta = json.loads((folder / "model" / "meta.json").read_text())
    trust.record(reg.trust_root, artifacts.record_key(meta))
    reg.load_model("control", 1, allow_pickle=True)
    assert live.read_text() == "pwned" and not marker.exists()


def test_a_pickle_posing_as_skops_is_refused(reg, tmp_path):
    marker = tmp_path / "MARKER"
    folder = plant_pickle(reg, tmp_path, pickle.dumps(Exploit(str(marker))))
    model_dir = folder / "model"
    (model_dir / "data.pkl").rename(model_dir / "data.skops")
    meta = json.loads((model_dir / "meta.json").read_text())
    meta.update(format="skops", file="data.skops", trusted=["builtins.exec"])
    (model_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match="not a readable skops file"):
        reg.load_model("evil", 1)
    assert not marker.exists()


def test_two_processes_register_distinct_versions(reg, tmp_path):
    code = ("import sys; from mlops_nb.guards.registry import Registry;"
            "from sklearn.dummy import DummyClassifier;"
            "m = DummyClassifier().fit([[0], [1]], [0, 1]);"
            "print(Registry(__import__('pathlib').Path(sys.argv[1])).register('m', m, {}).version)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(reg.root)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    got = sorted(int(p.communicate()[0]) for p in procs)
    assert got == [1, 2] and [v.version for v in reg.versions("m")] == [1, 2]


def test_cli_models_list_promote_show(reg, data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOPS_NB_ROOT", str(tmp_path))
    monkeypatch.delenv("MLOPS_NB_REGISTRY", raising=False)
    assert main(["models", "list"]) == 0
    assert "no models registered yet" in capsys.readouterr().out
    reg.register("iris", model(data), {"accuracy": 0.97})
    reg.register("iris", model(data, 0.1), {"accuracy": 0.9})
    assert main(["models", "promote", "iris:2"]) == 0
    assert "iris:2 is now production" in capsys.readouterr().out
    assert main(["models", "show", "iris@production"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    assert main(["models", "promote", "iris:1", "--stage", "archived"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "iris"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["iris:1", "archived"]
    assert out[1].split()[:2] == ["iris:2", "production"]
    assert main(["models", "promote", "iris:9"]) == 9
    assert main(["models", "promote", "iris"]) == 2
    assert "no version 9" in capsys.readouterr().err


def test_a_reader_never_sees_a_promotion_half_done(reg, data):
    """A promotion writes two version files (the new production, then the old one archived);
    a reader (the service's watcher, `models list`) sees both changes or neither, never two
    production versions or none."""
    m = model(data)
    for _ in range(3):
        reg.register("iris", m, {"accuracy": 0.9})
    reg.promote("iris", 1)
    seen: list[list[int]] = []
    done = threading.Event()

    def read() -> None:
        reader = Registry(reg.root)
        while not done.is_set():
            seen.append([v.version for v in reader.versions("iris") if v.stage == "production"])

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(150):
            reg.promote("iris", 1 + (i + 1) % 3)
    finally:
        done.set()
        thread.join()
    assert len(seen) > 20
    torn = [s for s in seen if len(s) != 1]
    assert not torn, f"{len(torn)} of {len(seen)} reads saw {torn[:3]}"
