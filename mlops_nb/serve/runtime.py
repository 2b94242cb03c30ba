"""How a served version computes its answers: scikit-learn, or ONNX Runtime.

A runtime turns validated records (dicts of the schema's columns) into predictions and class
probabilities, and the JSON is the same either way: classes as the scikit-learn model gives
them (its `classes_`, with their Python types), probabilities in its class order.

Rules:
- the ONNX runtime serves only a version whose `mlops-nb export onnx` check passed: the
  registry's `onnx.json` beside the version and a `model.onnx` with the recorded sha256; the
  session is built from the bytes whose hash was checked (never the path read again);
- `auto` uses ONNX when the version has such an export and onnxruntime is installed (the
  extra `mlops_nb[onnx]`), scikit-learn otherwise; `onnx` refuses a version without one
  (RegistryError, exit 9) and a missing onnxruntime (UsageError, exit 2);
- one InferenceSession per loaded version, built when the version is loaded and swapped with
  it; one intra-op thread without spinning, as the service has one model call at a time and
  shares its cores with the event loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlops_nb.errors import RegistryError, UsageError

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "sklearn", "onnx")
RECORD = "onnx.json"  # as mlops_nb.export.onnx_export writes them
FILE = "model.onnx"
FEATURES = "features"  # the last estimator's input in the graph (onnx_convert.FEATURES)
MAX_ONNX_BYTES = 2**31  # protobuf's own limit


class Runtime(Protocol):
    name: str

    def predict(self, records: list[dict[str, Any]]) -> list[Any]: ...

    def proba(self, records: list[dict[str, Any]]) -> Any: ...


def _all_float(schema: Any) -> bool:
    return all(c.type == "float" and not c.nullable for c in schema.columns)


def frame_builder(schema: Any) -> Callable[[list[dict[str, Any]]], Any]:
    """Records -> the DataFrame the model was trained on. Float columns without nulls (the
    common case) go through one float64 array, several times faster than from_records."""
    import pandas as pd

    columns = [c.name for c in schema.columns]
    if _all_float(schema):
        def floats(records: list[dict[str, Any]]) -> Any:
            rows = [[r[c] for c in columns] for r in records]
            return pd.DataFrame(np.array(rows, dtype=np.float64), columns=columns)

        return floats

    def generic(records: list[dict[str, Any]]) -> Any:
        return pd.DataFrame.from_records(records, columns=columns)

    return generic


class SklearnRuntime:
    name = "sklearn"

    def __init__(self, model: Any, schema: Any) -> None:
        self.model = model
        self._frame = frame_builder(schema)

    def predict(self, records: list[dict[str, Any]]) -> list[Any]:
        with np.errstate(all="ignore"):
            return self.model.predict(self._frame(records)).tolist()  # type: ignore[no-any-return]

    def proba(self, records: list[dict[str, Any]]) -> Any:
        with np.errstate(all="ignore"):
            return self.model.predict_proba(self._frame(records))


_DTYPES = {"tensor(double)": np.float64, "tensor(float)": np.float32,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
           "tensor(string)": object}


def _with_features(data: bytes) -> tuple[bytes, bool]:
    """The ONNX model with its last estimator's input (FEATURES, see onnx_convert) also
    given out, when it has one, so rows the preparation made non-finite can be told."""
    import onnx
    from onnx import helper

    proto = onnx.load_from_string(data)
    made = [n for n in proto.graph.node if FEATURES in n.output]
    if len(made) != 1 or made[0].op_type != "Cast" \
            or any(o.name == FEATURES for o in proto.graph.output):
        return data, False
    kind = next(a.i for a in made[0].attribute if a.name == "to")
    proto.graph.output.append(helper.make_tensor_value_info(FEATURES, kind, [None, None]))
    return proto.SerializeToString(), True


class OnnxRuntime:
    """The version's checked ONNX export, answering with the scikit-learn model's classes.

    A batch where the preparation gives a non-finite feature (log of 0, an overflow) goes to
    the scikit-learn model instead, which refuses it (or takes NaN) exactly as the sklearn
    runtime would: the two runtimes never answer such records differently."""

    name = "onnx"

    def __init__(self, data: bytes, model: Any, schema: Any) -> None:
        import onnxruntime as rt

        self._fallback = SklearnRuntime(model, schema)
        data, self._checks = _with_features(data)
        options = rt.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = rt.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self._inputs = []
        for inp in self.session.get_inputs():
            if inp.type not in _DTYPES:
                raise RegistryError(f"the ONNX model's input '{inp.name}' has type {inp.type},"
                                    " which the service cannot feed")
            self._inputs.append((inp.name, _DTYPES[inp.type]))
        self._all_double = all(t is np.float64 for _, t in self._inputs)
        self._names = [name for name, _ in self._inputs]
        outputs = [o.name for o in self.session.get_outputs()]
        classes = getattr(model, "classes_", None)
        self.classifier = classes is not None and hasattr(model, "predict_proba")
        self._label = outputs[0]
        self._proba = outputs[1] if self.classifier and len(outputs) > 1 else None
        self._extra = [FEATURES] if self._checks else []
        # ONNX labels (int64 or str) -> the scikit-learn model's own class values
        self._classes: dict[Any, Any] = {}
        for c in list(classes) if classes is not None else []:
            native = c.item() if hasattr(c, "item") else c
            self._classes[_key(native)] = native
        self._same_labels = bool(self._classes) and all(
            type(k) is int and type(v) is int for k, v in self._classes.items())

    def _feeds(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        if self._all_double:
            table = np.array([[r[c] for c in self._names] for r in records], dtype=np.float64)
            return {name: table[:, i:i + 1] for i, name in enumerate(self._names)}
        return {name: np.array([[r[name]] for r in records], dtype=kind)
                for name, kind in self._inputs}

    def _run(self, output: str, records: list[dict[str, Any]]) -> Any:
        """The output, or None when a row's features are not finite (see the class)."""
        got = self.session.run([output, *self._extra], self._feeds(records))
        if self._checks and not np.isfinite(got[1]).all():
            return None
        return got[0]

    def predict(self, records: list[dict[str, Any]]) -> list[Any]:
        labels = self._run(self._label, records)
        if labels is None:
            return self._fallback.predict(records)
        if not self.classifier:  # float32 outputs, within the export's checked tolerance
            out = np.asarray(labels, dtype=np.float64)
            return (out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out).tolist()  # type: ignore[no-any-return]
        values = np.asarray(labels).ravel().tolist()
        if self._same_labels:  # int classes: ONNX's int64 labels are the model's values
            return values  # type: ignore[no-any-return]
        lookup = self._classes
        return [lookup.get(_key(v), v) for v in values]

    def proba(self, records: list[dict[str, Any]]) -> Any:
        if self._proba is None:
            return self._fallback.proba(records)
        proba = self._run(self._proba, records)
        if proba is None:
            return self._fallback.proba(records)
        return np.asarray(proba, dtype=np.float64)


def _key(value: Any) -> Any:
    """A class value as ONNX gives it back: integers as int, anything else as str."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return str(value)


def checked_export(folder: Path) -> tuple[bytes, dict[str, Any]] | None:
    """The version's ONNX bytes and record when its check passed and the file has the
    recorded hash; None otherwise."""
    try:
        rec = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        with open(folder / FILE, "rb") as f:
            data = f.read(MAX_ONNX_BYTES + 1)
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or len(data) > MAX_ONNX_BYTES \
            or hashlib.sha256(data).hexdigest() != rec.get("sha256") \
            or not rec.get("rows_checked") or rec.get("classes_equal") is False:
        return None
    return data, rec


def onnx_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def check_choice(runtime: str) -> None:
    """Refuse an unknown runtime, and `onnx` without onnxruntime, before any loading."""
    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    if runtime == "onnx" and not onnx_installed():
        raise UsageError("--runtime onnx needs onnxruntime: pip install 'mlops_nb[onnx]'")


def make(runtime: str, ref: str, folder: Path, model: Any, schema: Any) -> Runtime:
    """The runtime serving version `ref` (registry folder `folder`) for the choice made."""
    check_choice(runtime)
    if runtime == "sklearn" or (runtime == "auto" and not onnx_installed()):
        return SklearnRuntime(model, schema)
    found = checked_export(folder)
    if found is None:
        if runtime == "onnx":
            raise RegistryError(f"{ref} has no checked ONNX export (or its model.onnx no"
                                " longer has the recorded hash): run `mlops-nb export onnx"
                                f" {ref}` first, or serve with --runtime sklearn")
        return SklearnRuntime(model, schema)
    try:
        return OnnxRuntime(found[0], model, schema)
    except RegistryError:
        if runtime == "onnx":
            raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors have no common base
        if runtime == "onnx":
            raise RegistryError(f"{ref}: onnxruntime cannot load its ONNX export"
                                f" ({str(exc).splitlines()[0][:300]})") from None
        log.warning("%s: onnxruntime cannot load its ONNX export (%s); serving it with"
                    " scikit-learn", ref, exc)
    return SklearnRuntime(model, schema)
