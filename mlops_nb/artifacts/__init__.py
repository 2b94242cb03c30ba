"""Typed, atomic save and load of step outputs (DESIGN section 3).

Each output is a folder `<name>/` holding `data.<ext>` and `meta.json` (format, python type,
sha256 of the data). Formats by type: pandas -> an uncompressed Arrow IPC file (frames.py;
Parquet outputs of older versions still load), numpy -> .npy, exact JSON values -> JSON,
scikit-learn estimators -> skops (no code runs on load), xgboost and LightGBM models and
xgboost's DMatrix, PyTorch tensors and state_dicts -> the library's own format or an npz
(models.py), anything else -> pickle
(cloudpickle for lambdas and closures). A folder appears under its final name only once it is
complete (written aside, then renamed), and a load checks the bytes against the recorded hash,
so a partial or tampered output is never taken for a finished one. The hash in meta.json
proves only that the folder is whole; what may run code on load (a pickle, a skops file with
types skops does not trust by default) is loaded only when the user's runs recorded writing
those bytes (see trust.py), or when the caller says it trusts the file (`allow_pickle`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import frames, trust
from mlops_nb.artifacts.digest import HashingWriter, mapped
from mlops_nb.artifacts.stable import stable_skops
from mlops_nb.errors import ArtifactError

META = "meta.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def skops_io() -> Any:
    """skops.io, imported up to 3x faster than a plain import in a process that has loaded
    pandas, scikit-learn and IPython.

    At import, skops names the module of each of scipy's ~800 ufuncs by scanning sys.modules
    in order until one holds it (skops.io._utils.whichmodule); with a thousand modules loaded
    that is 0.4-0.6 s of getattr calls. Moving numpy and scipy.special to the front of
    sys.modules (a dict: order is insertion order) makes each scan end at once. Only the
    order changes: every module stays loaded and the same object.
    """
    if "skops.io" not in sys.modules:
        try:
            import scipy.special  # noqa: F401 - what skops will scan for
        except ImportError:
            pass
        front = ("numpy", "scipy.special", "scipy.special._ufuncs")
        for name in [n for n in list(sys.modules) if n not in front]:
            module = sys.modules.get(name)
            if module is not None:
                sys.modules[name] = sys.modules.pop(name)  # to the end, so `front` leads
    import skops.io

    return skops.io


def _is_json_exact(obj: Any, depth: int = 0) -> bool:
    """True when json round-trips obj to an equal value of the same types."""
    if depth > 50:
        return False
    if obj is None or type(obj) in (bool, int, str):
        return True
    if type(obj) is float:
        return obj == obj and obj not in (float("inf"), float("-inf"))
    if type(obj) is list:
        return all(_is_json_exact(x, depth + 1) for x in obj)
    if type(obj) is dict:
        return all(type(k) is str and _is_json_exact(v, depth + 1) for k, v in obj.items())
    return False


def _type_name(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _unless_no_space(exc: BaseException) -> None:
    """A full disk is no reason to fall back to pickle: re-raise it (save reports exit 6)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def models_torch(obj: Any) -> bool:
    """A PyTorch tensor or state_dict (never imports torch: a step that made one did)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    if isinstance(obj, torch.Tensor):
        return True
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _write_data(obj: Any, folder: Path) -> dict[str, Any]:
    mod = type(obj).__module__
    if mod.split(".", 1)[0] in ("xgboost", "lightgbm") or models_torch(obj):
        from mlops_nb.artifacts import models

        try:
            known = models.encode(obj, folder)
        except Exception as exc:  # noqa: BLE001 - what the library cannot write is pickled
            _unless_no_space(exc)
            known = None
        if known is not None:
            fmt, name, payload, extra = known
            return {**_write_bytes(folder, fmt, name, payload), **extra}
    if mod.startswith("pandas"):
        import pandas as pd

        if isinstance(obj, (pd.DataFrame, pd.Series)):
            try:
                frame = obj.to_frame(name="__series__") if isinstance(obj, pd.Series) else obj
                with HashingWriter(folder / "data.arrow") as out:
                    frames.write(frame, out)
                meta: dict[str, Any] = {"format": "arrow", "file": "data.arrow",
                                        "sha256": out.hexdigest()}
                if isinstance(obj, pd.Series):
                    meta["series_name"] = _json_name(obj.name)
                if frames.exact(frame):
                    return meta
                check = frames.read(mapped(folder / "data.arrow"), meta)
                if check.equals(obj) and list(map(str, check.dtypes)) == list(
                        map(str, obj.dtypes if isinstance(obj, pd.DataFrame) else [obj.dtype])):
                    return meta
            except Exception as exc:  # noqa: BLE001 - what Arrow cannot hold is pickled
                _unless_no_space(exc)
            (folder / "data.arrow").unlink(missing_ok=True)
    if mod == "numpy":
        import numpy as np

        if isinstance(obj, np.ndarray) and obj.dtype != object:
            with HashingWriter(folder / "data.npy") as out:
                np.save(out, obj, allow_pickle=False)
            return {"format": "npy", "file": "data.npy", "sha256": out.hexdigest()}
    if _is_json_exact(obj):
        return _write_bytes(folder, "json", "data.json",
                            json.dumps(obj, sort_keys=False).encode("utf-8"))
    if mod.startswith("sklearn"):
        try:
            sio = skops_io()
            payload = stable_skops(sio.dumps(obj))
            untrusted = sio.get_untrusted_types(data=payload)
            if any(t.split(".", 1)[0] not in TRUSTED_MODULES for t in untrusted):
                raise TypeError("holds types of its own (the load would refuse them)")
            meta = _write_bytes(folder, "skops", "data.skops", payload)
            return {**meta, "trusted": sorted(untrusted)}
        except Exception as exc:  # noqa: BLE001 - types skops cannot hold go to pickle
            _unless_no_space(exc)
            (folder / "data.skops").unlink(missing_ok=True)
    import pickle

    try:
        payload = pickle.dumps(obj, protocol=5)
        fmt = "pickle"
    except Exception:  # noqa: BLE001 - lambdas, closures, classes of a step
        import cloudpickle

        payload = cloudpickle.dumps(obj, protocol=5)
        fmt = "cloudpickle"
    return _write_bytes(folder, fmt, "data.pkl", payload)


def _write_bytes(folder: Path, fmt: str, name: str, payload: bytes) -> dict[str, Any]:
    with HashingWriter(folder / name) as out:
        out.write(payload)
    return {"format": fmt, "file": name, "sha256": out.hexdigest()}


def _json_name(name: Any) -> Any:
    return name if _is_json_exact(name) else str(name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def record_key(meta: dict[str, Any]) -> str:
    """The name under which the project's record of written files (trust.py) keeps an
    output's data file."""
    return f"sha256-{meta['sha256']}"


def save(obj: Any, folder: Path, *, project: Path | None = None) -> dict[str, Any]:
    """Write obj as a complete output folder, atomically replacing an older one, and record
    its data file's digest as written by `project` (by default the project the folder is in,
    see trust.project_of)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        meta = _write_data(obj, tmp)  # hashed while written (digest.py), not fsynced
        meta["type"] = _type_name(obj)
        with open(tmp / META, "x") as f:  # O_EXCL: in the fresh folder, never a link
            f.write(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        trust.record(project or trust.project_of(folder.parent), record_key(meta))
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.rename(folder, old)
            os.rename(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
        return meta
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        where = (f" (the disk holding {folder.parent})"
                 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "")
        raise ArtifactError(f"cannot write output {folder}: {exc.strerror or exc}{where}"
                            ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / META).read_text())
    except FileNotFoundError:
        raise ArtifactError(
            f"output {folder} is missing or incomplete; run its step again"
        ) from None
    except (json.JSONDecodeError, OSError) as exc:
        raise ArtifactError(f"output {folder}/meta.json is unreadable ({exc}); rerun its step"
                            ) from exc
    return meta


TRUSTED_MODULES = ("sklearn", "numpy", "scipy")


def _untrusted_message(path: Path, what: str) -> str:
    folder = path.parent
    step = folder.parent.name if folder.parent.parent.name == "outputs" else ""
    redo = (f"run step '{step}' again (`mlops-nb run {step} -f`)" if step
            else "write it again with this project's code")
    return (f"{path} {what} and was not written by your own runs (its digest is not in your"
            f" record of written files, {trust.user_record()}; meta.json beside it proves"
            f" nothing): refusing to load it. {redo.capitalize()}, or load it with"
            " allow_pickle if you trust it")


def read_checked(folder: Path, meta: dict[str, Any]) -> bytes:
    """The data file's bytes, checked against the recorded hash; what is loaded is exactly
    what was hashed (no second read that could differ)."""
    path = folder / meta["file"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"output {path} is missing; run its step again") from None
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise ArtifactError(
            f"output {path} changed after its step wrote it (hash mismatch); refusing to use"
            " it: run its step again"
        )
    return data


def _load_skops(path: Path, data: bytes, trusted_file: bool) -> Any:
    """Load a skops file trusting what the code decides (scikit-learn, numpy and scipy
    types), never a list read from the output's own folder, which whoever wrote the folder
    could widen. Anything else in the file is refused by skops. Types that skops itself does
    not trust by default (scikit-learn's tree nodes: their indices are used without bounds
    checks) are trusted only in a file this project wrote (`trusted_file`)."""
    sio = skops_io()
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
        raise ArtifactError(f"{path} is not a readable skops file ({exc}); rerun its step"
                            ) from exc
    trusted = [t for t in untrusted if t.split(".", 1)[0] in TRUSTED_MODULES]
    refused = sorted(set(untrusted) - set(trusted))
    if refused:
        raise ArtifactError(f"{path} holds types mlops_nb does not trust ({', '.join(refused)});"
                            " refusing to load it: rerun the step that writes it")
    if trusted and not trusted_file:
        raise ArtifactError(_untrusted_message(
            path, f"needs types skops does not trust by default ({', '.join(sorted(trusted))})"))
    return sio.loads(data, trusted=trusted)


def verify(folder: Path) -> dict[str, Any]:
    """Check an output's bytes against the hash recorded when it was written."""
    return _checked(folder)[0]


def _checked(folder: Path) -> tuple[dict[str, Any], Any]:
    """The output's meta and its data file's bytes (mapped), once they matched the hash."""
    meta = read_meta(folder)
    data = folder / meta["file"]
    try:
        content = mapped(data)
    except FileNotFoundError:
        raise ArtifactError(f"output {data} is missing; run its step again") from None
    except OSError as exc:
        raise ArtifactError(f"output {data} is unreadable ({exc}); run its step again"
                            ) from exc
    if hashlib.sha256(content).hexdigest() != meta["sha256"]:
        raise ArtifactError(
            f"output {data} changed after its step wrote it (hash mismatch); refusing to use"
            " it: run its step again"
        )
    return meta, content


def load(folder: Path, *, project: Path | None = None, allow_pickle: bool = False) -> Any:
    """Load an output written by `save`, after verifying its hash. A pickle, or a skops file
    needing types skops does not trust by default, loads only when `project` (by default the
    project the folder is in) recorded writing it, or with `allow_pickle` (the caller trusts
    the file)."""
    meta = read_meta(folder)
    path = folder / meta["file"]
    fmt = meta["format"]
    if fmt in ("skops", "pickle", "cloudpickle"):
        data = read_checked(folder, meta)
        trusted_file = allow_pickle or trust.written(
            project or trust.project_of(folder.parent), record_key(meta))
        if fmt == "skops":
            return _load_skops(path, data, trusted_file)
        if not trusted_file:
            raise ArtifactError(_untrusted_message(path, f"is a {fmt} (loading it runs code)"))
        import pickle

        if fmt == "cloudpickle":
            import cloudpickle  # noqa: F401 - registers reducers used by the payload
        return pickle.loads(data)  # noqa: S301 - written by this project, or trusted by the caller
    if fmt == "arrow":  # parsed from the very bytes just checked: one read of the file
        meta, content = _checked(folder)
        return frames.read(content, meta)
    if fmt == "parquet":  # written by an older version
        import pyarrow as pa

        meta, content = _checked(folder)
        return frames.read_parquet(pa.BufferReader(pa.py_buffer(content)), meta)
    if fmt.startswith(("xgboost-", "lightgbm-", "torch-")):  # in the library's own format
        from mlops_nb.artifacts import models

        data = read_checked(folder, meta)
        try:
            return models.decode(fmt, data, meta)
        except ImportError as exc:
            raise ArtifactError(f"output {folder} is a {fmt} model: install {exc.name} to load"
                                " it") from exc
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
            raise ArtifactError(f"output {path} is not a readable {fmt} file ({exc}); rerun"
                                " its step") from exc
    meta = verify(folder)
    if fmt == "npy":
        import numpy as np

        return np.load(path, allow_pickle=False)
    if fmt == "json":
        return json.loads(path.read_text(encoding="utf-8"))
    raise ArtifactError(f"output {folder} has unknown format {fmt!r}; rerun its step")
