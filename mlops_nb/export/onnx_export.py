"""`mlops-nb export onnx NAME[:V|@stage]`: the registered model for the edge, checked equal.

The model (preprocessing included) is converted (`onnx_convert`) and run with onnxruntime on
the version's stored training sample; it is kept only when every row gets the same class as
the registered model and every probability (or regression output) is within the tolerance:
absolute 1e-4 plus relative 1e-4. The tolerance is float32's: ONNX's tree ensembles give
their probabilities as float32 (computed in float64 from the float32-cast features, as
scikit-learn computes them), so what remains is float32 rounding (~5e-8), far below 1e-4; a
real difference (a path flipped, a transformer computing another thing) is far above it.
Nothing is written when the check fails. The file goes to `NAME-V.onnx` (in --output), and
beside the version in the registry as `model.onnx` with `onnx.json` (its sha256, opsets,
the check's figures), which `models show` lists and `serve --runtime onnx` requires.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlops_nb.artifacts import atomic
from mlops_nb.errors import ExportError, RegistryError
from mlops_nb.guards.registry import Registry, default_root, parse_ref, reference_of

ATOL = 1e-4
RTOL = 1e-4
RECORD = "onnx.json"
FILE = "model.onnx"


@dataclass(frozen=True)
class OnnxExport:
    ref: str
    path: str
    sha256: str
    bytes: int
    opsets: dict[str, int]
    rows_checked: int
    classes_equal: bool | None  # None for a regressor
    max_abs_diff: float
    atol: float
    rtol: float
    seconds: float


def feeds(session: Any, frame: Any) -> dict[str, Any]:
    """onnxruntime's inputs for a DataFrame: one (n, 1) float64 column per input."""
    out = {}
    for inp in session.get_inputs():
        if inp.name not in frame.columns:
            raise ExportError(None, f"the ONNX model needs column '{inp.name}', which the"
                                    " records do not have")
        out[inp.name] = frame[[inp.name]].to_numpy(dtype=np.float64)
    return out


def check(model: Any, session: Any, sample: Any) -> tuple[bool | None, float]:
    """Compare onnxruntime's answers with the model's on `sample`; raise on a difference."""
    got = session.run(None, feeds(session, sample))
    if hasattr(model, "predict_proba"):
        labels, proba = got[0], got[1]
        want = model.predict(sample)
        differ = np.flatnonzero(np.asarray(labels) != np.asarray(want))
        if differ.size:
            i = int(differ[0])
            raise ExportError(None, f"the ONNX model predicts another class than the"
                                    f" registered model for {differ.size} of {len(sample)}"
                                    f" rows (first: row {i}, {labels[i]!r} instead of"
                                    f" {want[i]!r}); nothing was written")
        expected, actual = model.predict_proba(sample), np.asarray(proba)
        classes_equal: bool | None = True
    else:
        expected = np.asarray(model.predict(sample), dtype=np.float64).reshape(len(sample), -1)
        actual = np.asarray(got[0], dtype=np.float64).reshape(len(sample), -1)
        classes_equal = None
    diff = np.abs(actual - expected)
    worst = float(diff.max()) if diff.size else 0.0
    if not np.allclose(actual, expected, atol=ATOL, rtol=RTOL):
        raise ExportError(None, f"the ONNX model's outputs differ from the registered model's"
                                f" by up to {worst:.3g} (tolerance {ATOL:g} absolute plus"
                                f" {RTOL:g} relative); nothing was written")
    return classes_equal, worst


def export(root: Path, ref: str, output: Path) -> OnnxExport:
    """Convert, check and record the ONNX form of model `ref`; returns what was written."""
    import onnxruntime as rt

    from mlops_nb.export.onnx_convert import convert

    start = time.perf_counter()
    reg = Registry(default_root(root))
    name, which = parse_ref(ref)
    mv = reg.get(name, which)
    sample = reference_of(mv)
    if sample is None:
        raise RegistryError(f"{mv.ref} has no stored training sample to check the ONNX model"
                            " on: register it with promote_if_better(..., reference=X_train)")
    model = reg.load_model(mv.name, mv.version)
    proto = convert(model, sample)
    data = proto.SerializeToString()
    session = rt.InferenceSession(data, providers=["CPUExecutionProvider"])
    classes_equal, worst = check(model, session, sample)
    target = output / f"{mv.name}-{mv.version}.onnx"
    atomic.write_bytes(target, data, root=atomic.boundary(target, root))
    atomic.write_bytes(mv.path / FILE, data, root=reg.root)
    result = OnnxExport(
        mv.ref, str(target), hashlib.sha256(data).hexdigest(), len(data),
        {o.domain or "ai.onnx": int(o.version) for o in proto.opset_import}, len(sample),
        classes_equal, worst, ATOL, RTOL, round(time.perf_counter() - start, 3))
    atomic.write_text(mv.path / RECORD, json.dumps({**asdict(result), "file": FILE},
                                                   indent=1) + "\n", root=reg.root)
    return result


def recorded(mv_path: Path) -> dict[str, Any] | None:
    """The version's ONNX record when its file is there with the recorded hash, else None."""
    try:
        rec = json.loads((mv_path / RECORD).read_text(encoding="utf-8"))
        data = (mv_path / FILE).read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or hashlib.sha256(data).hexdigest() != rec.get("sha256"):
        return None
    return rec
