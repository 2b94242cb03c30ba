"""Files from outside the project's own run are never trusted: no unpickling without consent."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest

from mlops_nb import artifacts
from tests.conftest import cli


class _Payload:
    """Unpickling it runs code: it writes the file named in `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _malicious_output(folder: Path, marker: Path) -> Path:
    """A step-output folder (meta.json and all) whose pickle runs code, with a hash that
    matches, as anyone who writes the folder can make it."""
    artifacts.save({1, 2, 3}, folder)  # a set: not JSON, so it is pickled
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format"] in ("pickle", "cloudpickle"), meta
    data = folder / meta["file"]
    data.write_bytes(pickle.dumps(_Payload(marker)))
    meta["sha256"] = hashlib.sha256(data.read_bytes()).hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("command", ["validate-data", "drift"])
def test_a_pickle_in_a_folder_is_not_loaded_without_allow_pickle(tmp_path, command):
    marker = tmp_path / "pwned"
    evil = _malicious_output(tmp_path / "evil", marker)
    good = tmp_path / "good.csv"
    good.write_text("a,b\n1,2\n3,4\n")
    args = ([command, str(evil), "--reference", str(good)] if command == "validate-data"
            else [command, str(good), str(evil)])
    res = cli(args, tmp_path, check=False)
    assert res.returncode == 2, res.stderr
    assert "--allow-pickle" in res.stderr and "Traceback" not in res.stderr
    assert not marker.exists()
    cli([*args, "--allow-pickle"], tmp_path, check=False)
    assert marker.exists()  # the flag is what lets it through


def test_skops_trust_is_decided_by_the_code_not_by_the_output_folder(tmp_path):
    from sklearn.preprocessing import FunctionTransformer

    from mlops_nb.artifacts import skops_io
    from mlops_nb.errors import ArtifactError

    folder = tmp_path / "model"
    artifacts.save(FunctionTransformer(), folder)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format"] == "skops"
    # a tampered folder: a transformer that calls os.system, and meta.json trusting it
    sio = skops_io()
    payload = sio.dumps(FunctionTransformer(func=os.system))
    (folder / "data.skops").write_bytes(payload)
    meta["trusted"] = sorted(sio.get_untrusted_types(data=payload))
    meta["sha256"] = hashlib.sha256(payload).hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="does not trust"):
        artifacts.load(folder)


def test_an_estimator_holding_its_own_types_is_pickled_not_skops(tmp_path):
    from sklearn.preprocessing import FunctionTransformer

    artifacts.save(FunctionTransformer(func=os.getcwd), tmp_path / "own")
    meta = json.loads((tmp_path / "own/meta.json").read_text())
    assert meta["format"] in ("pickle", "cloudpickle")
    assert artifacts.load(tmp_path / "own").func is os.getcwd  # a run's own output loads
