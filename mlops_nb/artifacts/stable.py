"""Byte-reproducible skops archives: the same model always gives the same bytes.

Rule: what differs between two saves of one model (ids, zip times, the unused padding bytes of
structured arrays) is normalised; what a load reads is never changed. So a model loaded and
saved again (`best = rf if ... else lr` in a promote step) keeps its digest: the step that
saves it is not taken for changed, and DVC's cache does not grow by a copy per run.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any


def zero_padding(data: bytes) -> bytes:
    """An .npy file with the bytes between the fields of its structured dtype set to zero.

    scikit-learn's tree node records (left_child, ..., missing_go_to_left) are 57 bytes of
    fields in a 64-byte item; the tree fills the fields and never the rest, so a tree built
    by a fit or a load carries whatever memory it was given there, and saving it twice gives
    two files. Other .npy files come back as they were."""
    import numpy as np

    buf = io.BytesIO(data)
    try:
        fmt = np.lib.format
        version = fmt.read_magic(buf)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        _, _, dtype = read(buf)
    except Exception:  # noqa: BLE001 - not an .npy skops wrote: leave it to the load
        return data
    fields = dtype.fields
    if fields is None or dtype.hasobject:
        return data
    used = np.zeros(dtype.itemsize, dtype=bool)
    for name in dtype.names or ():
        field, offset = fields[name][:2]
        used[offset:offset + field.itemsize] = True
    if used.all():
        return data
    array = np.load(io.BytesIO(data), allow_pickle=False)
    fortran = array.flags.f_contiguous and not array.flags.c_contiguous
    flat = np.ascontiguousarray(array.T if fortran else array)
    flat.view(np.uint8).reshape(-1, dtype.itemsize)[:, ~used] = 0
    out = io.BytesIO()
    np.save(out, flat.T if fortran else flat, allow_pickle=False)
    return out.getvalue()


def stable_skops(payload: bytes) -> bytes:
    """The same skops archive, byte-reproducible: skops names each array file by the object's
    id() and stamps every zip entry with the time; ids are renumbered in the order the schema
    lists them and entries get the zip epoch, so the same model always gives the same bytes.
    The padding between the fields of structured arrays (scikit-learn's tree nodes) is zeroed
    (zero_padding)."""

    src = zipfile.ZipFile(io.BytesIO(payload))
    schema = json.loads(src.read("schema.json"))
    ids: dict[Any, int] = {}

    def number(node: Any) -> None:
        if isinstance(node, dict):
            if "__id__" in node:
                ids.setdefault(node["__id__"], len(ids) + 1)
            for v in node.values():
                number(v)
        elif isinstance(node, list):
            for v in node:
                number(v)

    def renamed(name: str) -> str:
        stem, dot, ext = name.partition(".")
        return f"{ids[int(stem)]}{dot}{ext}" if stem.isdigit() and int(stem) in ids else name

    def rewrite(node: Any) -> None:
        if isinstance(node, dict):
            if "__id__" in node:
                node["__id__"] = ids[node["__id__"]]
            if isinstance(node.get("file"), str):
                node["file"] = renamed(node["file"])
            for v in node.values():
                rewrite(v)
        elif isinstance(node, list):
            for v in node:
                rewrite(v)

    number(schema)
    rewrite(schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in sorted(src.infolist(), key=lambda i: renamed(i.filename)):
            if info.filename == "schema.json":
                data = json.dumps(schema, indent=2).encode()
            elif info.filename.endswith(".npy"):
                data = zero_padding(src.read(info))
            else:
                data = src.read(info)
            entry = zipfile.ZipInfo(renamed(info.filename), date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type, entry.external_attr = info.compress_type, info.external_attr
            dst.writestr(entry, data)
    return out.getvalue()
