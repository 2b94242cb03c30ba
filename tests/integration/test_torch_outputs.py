"""PyTorch tensors and state_dicts cross steps without pickle (issue 25, item 5), tested with
PyTorch installed: a venv of its own with `pip install torch==2.13.0` (the CPU build; PyTorch
stays out of the project's lock, whose uv would fetch a CUDA build of several GB), made once
and kept in the user's cache, running this checkout's mlops_nb on its PYTHONPATH.

A tensor of each dtype (bfloat16 included), a Parameter and a module's state_dict round-trip
exactly, from a folder this project never wrote (the format runs no code, so it needs no
record of writes), and a module loads the state_dict back; a sparse tensor goes to pickle.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, tool_env

pytestmark = pytest.mark.slow

TORCH = "2.13.0"


@pytest.fixture(scope="module")
def torch_python() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlops_nb-tests"
    venv = cache / f"torch-{TORCH}-py{sys.version_info.major}{sys.version_info.minor}"
    if not (venv / "ready").exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".torch-", dir=cache))
        try:
            subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True)
            res = subprocess.run([str(tmp / "bin/python"), "-m", "pip", "install", "-q",
                                  f"torch=={TORCH}"], capture_output=True, text=True)
            assert res.returncode == 0, res.stderr[-3000:]
            (tmp / "ready").write_text(TORCH)
            shutil.rmtree(venv, ignore_errors=True)
            os.rename(tmp, venv)  # a venv's scripts name their folder: call python by path
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return venv / "bin" / "python"


CODE = r'''
import json, shutil, sys
from collections import OrderedDict
from pathlib import Path
import torch
from mlops_nb import artifacts

tmp = Path(sys.argv[1])
module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
module(torch.randn(4, 3))  # running statistics move
objects = {
    "state_dict": module.state_dict(),
    "grad": torch.arange(6.0).reshape(2, 3).requires_grad_(),
    "parameter": torch.nn.Parameter(torch.randn(2, 2)),
    "scalar": torch.tensor(7),
    "plain_dict": {"w": torch.ones(2), "b": torch.zeros(1)},
}
for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
              torch.complex64):
    objects[str(dtype)] = (torch.randn(3, 4) * 10).to(dtype)
formats = {}
for name, obj in objects.items():
    artifacts.save(obj, tmp / "p/outputs/s" / name, project=tmp / "p")
    formats[name] = json.loads((tmp / "p/outputs/s" / name / "meta.json").read_text())["format"]
    # a copy this project never wrote loads all the same: nothing in the format runs code
    shutil.copytree(tmp / "p/outputs/s" / name, tmp / "q/outputs/s" / name)
    back = artifacts.load(tmp / "q/outputs/s" / name, project=tmp / "q")
    assert type(back) is type(obj), (name, type(back))
    pairs = list(back.items()) if isinstance(obj, dict) else [("", back)]
    for (k, b), (k0, a) in zip(pairs, obj.items() if isinstance(obj, dict) else [("", obj)]):
        assert k == k0 and b.dtype == a.dtype and b.shape == a.shape, (name, k)
        assert torch.equal(b.detach(), a.detach()), (name, k)
        assert b.requires_grad == a.requires_grad, (name, k)
again = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
sd = artifacts.load(tmp / "q/outputs/s/state_dict", project=tmp / "q")
assert isinstance(sd, OrderedDict) and sd._metadata == module.state_dict()._metadata
again.load_state_dict(sd)
x = torch.randn(5, 3)
module.eval(); again.eval()
assert torch.equal(module(x), again(x))
sparse = torch.eye(3).to_sparse()
artifacts.save(sparse, tmp / "p/outputs/s/sparse", project=tmp / "p")
formats["sparse"] = json.loads((tmp / "p/outputs/s/sparse/meta.json").read_text())["format"]
print(json.dumps(formats))
'''


def test_tensors_and_state_dicts_round_trip_without_pickle(torch_python, tmp_path):
    import json

    paths = [sysconfig.get_paths()["purelib"], str(REPO)]
    res = subprocess.run([str(torch_python), "-c", CODE, str(tmp_path)],
                         env=tool_env(PYTHONPATH=os.pathsep.join(paths)),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    formats = json.loads(res.stdout.strip().splitlines()[-1])
    assert formats.pop("sparse") in ("pickle", "cloudpickle")
    assert set(formats.values()) == {"torch-npz"}, formats
