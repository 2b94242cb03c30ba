"""Objects of model libraries, saved in each library's own format (issue 25, item 5).

The rule: what a library can write as data is written so, and loads without running code,
so it needs no record of this project's writes (trust.py): xgboost's `Booster` and its
scikit-learn models (XGBClassifier...) as xgboost's JSON model, a `DMatrix` as its data (a
CSR matrix, labels, weights, feature names) in an .npz read without pickle, LightGBM's
`Booster` as its text model, and its scikit-learn models (LGBMClassifier...) as JSON: the
constructor's parameters, the booster's text model, the classes and the feature count, from
which the model is rebuilt around the booster (LightGBM has no public format for the
scikit-learn side: the rebuilt attributes are the ones its predict reads, and the round trip
is tested on every LightGBM model kind). The libraries stay optional: nothing here imports one
unless an object of it is being saved or a file of its format loaded. Anything else (a
LightGBM model with a callable objective or a class-weight mapping, which JSON cannot hold
faithfully) goes on to pickle, with the trust rule of every pickle.

PyTorch tensors and state_dicts (a dict of names to tensors, as `module.state_dict()` gives)
go to an .npz read without pickle: each tensor's bytes as a numpy array (bfloat16 as its
16-bit pattern), with an index of names, dtypes and `requires_grad`, and the state_dict's
`_metadata` (the modules' versions `load_state_dict` reads) when it is plain JSON. PyTorch's
own `torch.save` is a pickle, which `torch.load(weights_only=True)` restricts but still runs:
this format runs nothing. Sparse, quantized or other tensor kinds go to pickle.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

FORMATS = ("xgboost-json", "xgboost-dmatrix", "lightgbm-text", "lightgbm-sklearn",
           "torch-npz")
# torch dtypes numpy holds as they are (bfloat16 is kept as its int16 bit pattern)
TORCH_DTYPES = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8",
                "bool", "complex64", "complex128")
# the xgboost scikit-learn classes a file may name (never an import path read from disk)
XGB_SKLEARN = ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier",
               "XGBRFRegressor")
LGB_SKLEARN = ("LGBMClassifier", "LGBMRegressor", "LGBMRanker")


def encode(obj: Any, folder: Path) -> tuple[str, str, bytes, dict[str, Any]] | None:
    """(format, file name, bytes, extra meta) for an object of a known library; None for
    anything else. `folder`: the output's folder being written (a library that writes only
    to a path writes there)."""
    top = type(obj).__module__.split(".", 1)[0]
    name = type(obj).__name__
    if top == "xgboost":
        import xgboost as xgb

        if isinstance(obj, xgb.Booster):
            return "xgboost-json", "data.json", bytes(obj.save_raw(raw_format="json")), {}
        if isinstance(obj, xgb.XGBModel) and name in XGB_SKLEARN \
                and getattr(xgb, name) is type(obj):
            path = folder / ".xgboost-model.json"  # only save_model writes the scikit-learn
            obj.save_model(str(path))  # side too, and only to a file: read back, removed
            try:
                return "xgboost-json", "data.json", path.read_bytes(), {"class": name}
            finally:
                path.unlink(missing_ok=True)
        if isinstance(obj, xgb.DMatrix):
            return "xgboost-dmatrix", "data.npz", _dmatrix_bytes(obj), {}
    if top == "torch" or isinstance(obj, dict):
        data = _torch_bytes(obj)
        return None if data is None else ("torch-npz", "data.npz", data, {})
    if top == "lightgbm":
        import lightgbm as lgb

        if type(obj) is lgb.Booster:
            return "lightgbm-text", "data.txt", obj.model_to_string().encode("utf-8"), {}
        if name in LGB_SKLEARN and getattr(lgb, name) is type(obj):
            data = _lgb_sklearn_bytes(obj)
            if data is not None:
                return "lightgbm-sklearn", "data.json", data, {"class": name}
    return None


def _torch_bytes(obj: Any) -> bytes | None:
    """A tensor or a dict of names to tensors as .npz bytes; None for what it cannot hold."""
    import json
    from collections import OrderedDict

    import numpy as np
    import torch

    tensor = isinstance(obj, torch.Tensor)
    items = [("", obj)] if tensor else list(obj.items())
    index: list[dict[str, Any]] = []
    arrays: dict[str, Any] = {}
    for i, (key, value) in enumerate(items):
        if type(value) not in (torch.Tensor, torch.nn.Parameter) or value.layout != \
                torch.strided or value.is_quantized:
            return None
        dtype = str(value.dtype).removeprefix("torch.")
        t = value.detach().cpu().contiguous()
        if dtype == "bfloat16":
            t = t.view(torch.int16)
        elif dtype not in TORCH_DTYPES:
            return None
        arrays[f"t{i}"] = t.numpy()
        index.append({"key": key, "dtype": dtype, "requires_grad": bool(value.requires_grad),
                      "parameter": type(value) is torch.nn.Parameter})
    doc: dict[str, Any] = {"kind": "tensor" if tensor else "state_dict", "tensors": index,
                           "ordered": isinstance(obj, OrderedDict)}
    metadata = getattr(obj, "_metadata", None)
    if metadata is not None:
        try:
            doc["metadata"] = json.loads(json.dumps(metadata, allow_nan=False))
        except (TypeError, ValueError):
            return None
    arrays["index"] = np.frombuffer(json.dumps(doc).encode("utf-8"), dtype=np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def _torch_object(data: bytes) -> Any:
    import json
    from collections import OrderedDict

    import numpy as np
    import torch

    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        doc = json.loads(bytes(npz["index"]).decode("utf-8"))
        tensors = []
        for i, entry in enumerate(doc["tensors"]):
            dtype = entry["dtype"]
            if dtype != "bfloat16" and dtype not in TORCH_DTYPES:
                raise ValueError(f"unknown tensor dtype {dtype!r}")
            t = torch.from_numpy(np.array(npz[f"t{i}"]))
            if dtype == "bfloat16":
                t = t.view(torch.bfloat16)
            if entry["parameter"]:
                t = torch.nn.Parameter(t, requires_grad=bool(entry["requires_grad"]))
            else:
                t.requires_grad_(bool(entry["requires_grad"]))
            tensors.append((str(entry["key"]), t))
    if doc["kind"] == "tensor":
        return tensors[0][1]
    out: dict[str, Any] = OrderedDict(tensors) if doc["ordered"] else dict(tensors)
    if "metadata" in doc and isinstance(out, OrderedDict):
        out._metadata = OrderedDict(doc["metadata"])  # type: ignore[attr-defined]
    return out


def _lgb_sklearn_bytes(model: Any) -> bytes | None:
    """A fitted LightGBM scikit-learn model as JSON; None when JSON cannot hold it (not
    fitted, a callable parameter, a class-weight mapping, classes of no plain dtype)."""
    import json

    import numpy as np

    if not getattr(model, "fitted_", False):
        return None
    params = model.get_params()
    if isinstance(params.get("class_weight"), dict):
        return None
    doc: dict[str, Any] = {
        "params": params, "booster": model.booster_.model_to_string(),
        "n_features": int(model.n_features_in_), "objective": model._objective,
        "with_feature_names": bool(getattr(model, "_fitted_with_feature_names", False)),
        "best_iteration": int(model.best_iteration_ or 0)}
    if hasattr(model, "classes_"):
        classes = np.asarray(model.classes_)
        if classes.dtype.kind not in "biufU":
            return None
        doc["classes"] = classes.tolist()
        doc["classes_dtype"] = classes.dtype.str
    try:
        return json.dumps(doc, sort_keys=True, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):  # a callable objective or metric, a NaN parameter
        return None


def _lgb_sklearn_model(data: bytes, cls: str) -> Any:
    import json
    from collections import defaultdict

    import lightgbm as lgb
    import numpy as np
    from sklearn.preprocessing import LabelEncoder

    doc = json.loads(data)
    model = getattr(lgb, cls)(**doc["params"])
    model._Booster = lgb.Booster(model_str=doc["booster"])
    model._n_features = model._n_features_in = int(doc["n_features"])
    model._objective = doc["objective"]
    model._fitted_with_feature_names = bool(doc["with_feature_names"])
    model._best_iteration = int(doc["best_iteration"])
    model._best_score = defaultdict(dict)
    model._evals_result = {}
    if "classes" in doc:
        classes = np.asarray(doc["classes"], dtype=np.dtype(doc["classes_dtype"]))
        model._classes = classes
        model._n_classes = len(classes)
        model._le = LabelEncoder().fit(classes)
        model._class_map = dict(zip(model._le.classes_, model._le.transform(classes),
                                    strict=True))
    model.fitted_ = True
    return model


def _dmatrix_bytes(dm: Any) -> bytes:
    import numpy as np

    csr = dm.get_data()
    arrays = {"indptr": csr.indptr, "indices": csr.indices, "data": csr.data,
              "shape": np.asarray(csr.shape, dtype=np.int64),
              "label": dm.get_label(), "weight": dm.get_weight(),
              "base_margin": dm.get_base_margin(),
              "feature_names": np.asarray(dm.feature_names or [], dtype=str),
              "feature_types": np.asarray(dm.feature_types or [], dtype=str)}
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def decode(fmt: str, data: bytes, meta: dict[str, Any]) -> Any:
    """The object back from the bytes `encode` wrote (already checked against the hash)."""
    if fmt == "xgboost-json":
        import xgboost as xgb

        cls = meta.get("class")
        if cls is None:
            bst = xgb.Booster()
            bst.load_model(bytearray(data))
            return bst
        if cls not in XGB_SKLEARN:
            raise ValueError(f"unknown xgboost model class {cls!r}")
        model = getattr(xgb, cls)()
        model.load_model(bytearray(data))
        return model
    if fmt == "xgboost-dmatrix":
        import numpy as np
        import scipy.sparse as sp
        import xgboost as xgb

        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            a = {k: npz[k] for k in npz.files}
        csr = sp.csr_matrix((a["data"], a["indices"], a["indptr"]),
                            shape=tuple(int(n) for n in a["shape"]))
        kwargs: dict[str, Any] = {}
        for key in ("label", "weight", "base_margin"):
            if a[key].size:
                kwargs[key] = a[key]
        if a["feature_names"].size:
            kwargs["feature_names"] = a["feature_names"].tolist()
        if a["feature_types"].size:
            kwargs["feature_types"] = a["feature_types"].tolist()
        return xgb.DMatrix(csr, **kwargs)
    if fmt == "lightgbm-text":
        import lightgbm as lgb

        return lgb.Booster(model_str=data.decode("utf-8"))
    if fmt == "torch-npz":
        return _torch_object(data)
    if fmt == "lightgbm-sklearn":
        cls = meta.get("class")
        if cls not in LGB_SKLEARN:
            raise ValueError(f"unknown LightGBM model class {cls!r}")
        return _lgb_sklearn_model(data, cls)
    raise ValueError(f"unknown format {fmt!r}")
