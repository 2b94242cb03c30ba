"""A fitted scikit-learn model as ONNX, computing what scikit-learn computes.

Rule: the graph takes one input per column of the version's training sample, with its type,
as the service takes records. Preprocessing runs in float64, as scikit-learn runs it; a tree
or forest gets its features cast to float32 and back, as scikit-learn's trees cast them (so a
value near a split goes the same way in both) and the estimator computes in float64 (its
thresholds and sums over trees), as scikit-learn does; a converter that knows only float32
gets float32. The estimator's input is the graph value FEATURES. FunctionTransformers of
the numpy functions that have an ONNX operator (log, log1p, exp, sqrt, abs, diff along the
columns, identity) convert; any other function is refused naming the step, never guessed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlops_nb.errors import ExportError

OPSET = {"": 17, "ai.onnx.ml": 3}
FEATURES = "features"  # the last estimator's input (the service checks it is finite)


def _step_name(model: Any, part: Any) -> str:
    for name, step in getattr(model, "steps", []) or []:
        if step is part:
            return name
    return type(part).__name__


def _register_function_transformer() -> None:
    """FunctionTransformer of known numpy functions (skl2onnx converts only the identity)."""
    from skl2onnx import update_registered_converter
    from skl2onnx.algebra.onnx_ops import (
        OnnxAbs,
        OnnxExp,
        OnnxIdentity,
        OnnxLog,
        OnnxSlice,
        OnnxSqrt,
        OnnxSub,
    )
    from sklearn.preprocessing import FunctionTransformer

    unary = {np.log: OnnxLog, np.exp: OnnxExp, np.sqrt: OnnxSqrt, np.abs: OnnxAbs}

    def shape(operator: Any) -> None:
        op, inp = operator.raw_operator, operator.inputs[0].type
        cols = inp.shape[1] if len(inp.shape) > 1 else None
        if op.func is np.diff and isinstance(cols, int):
            cols -= 1
        operator.outputs[0].type = inp.__class__([inp.shape[0], cols])

    def convert(scope: Any, operator: Any, container: Any) -> None:
        op, x, out = operator.raw_operator, operator.inputs[0], operator.outputs[0]
        opv = container.target_opset
        kw = dict(op.kw_args or {})
        if op.func is None and not kw:
            node = OnnxIdentity(x, op_version=opv, output_names=[out])
        elif op.func in unary and not kw:
            node = unary[op.func](x, op_version=opv, output_names=[out])
        elif op.func is np.log1p and not kw:
            one = np.array([1], dtype=np.float64 if "Double" in type(x.type).__name__
                           else np.float32)
            from skl2onnx.algebra.onnx_ops import OnnxAdd

            node = OnnxLog(OnnxAdd(x, one, op_version=opv), op_version=opv, output_names=[out])
        elif op.func is np.diff and kw in ({"axis": 1}, {"axis": -1}):
            cols = x.type.shape[1]
            if not isinstance(cols, int):
                raise ExportError(None, f"FunctionTransformer(np.diff): the number of columns must"
                                  f" be known, not {cols!r}")

            def part(start: int, end: int) -> Any:
                return OnnxSlice(x, np.array([start]), np.array([end]), np.array([1]),
                                 op_version=opv)

            node = OnnxSub(part(1, cols), part(0, cols - 1), op_version=opv,
                           output_names=[out])
        else:
            name = getattr(op.func, "__name__", repr(op.func))
            raise ExportError(None, f"FunctionTransformer(func={name}, kw_args={kw}) has no ONNX"
                              " equivalent: use np.log, np.log1p, np.exp, np.sqrt, np.abs or"
                              " np.diff(axis=1), or a scikit-learn transformer skl2onnx knows")
        node.add_to(scope, container)

    update_registered_converter(FunctionTransformer, "SklearnFunctionTransformer", shape,
                                convert)


def convert(model: Any, sample: Any) -> Any:
    """The ONNX model of `model` taking `sample`'s columns (a DataFrame) as named inputs."""
    import onnx
    from onnx import compose, helper
    from skl2onnx import to_onnx
    from skl2onnx.common.exceptions import MissingShapeCalculator

    _register_function_transformer()
    frame = sample.head(5)
    steps = getattr(model, "steps", None)
    head = model[:-1] if steps and len(steps) > 1 else None
    last = model[-1] if steps else model
    options = {id(last): {"zipmap": False}} if hasattr(last, "predict_proba") else None
    trees = _casts_to_float32(last)
    try:
        if head is None:
            features = frame.to_numpy(dtype=np.float64)
            pre = None
        else:
            pre = to_onnx(head, frame, target_opset=OPSET)
            features = np.asarray(head.transform(frame), dtype=np.float64)
        if trees:  # the float32 values scikit-learn's trees compare, held in float64
            features = features.astype(np.float32).astype(np.float64)
        try:  # in float64, as scikit-learn computes (sums over trees, linear models)
            est, double = to_onnx(last, features, options=options, target_opset=OPSET), True
        except (MissingShapeCalculator, RuntimeError, TypeError, ValueError,
                NotImplementedError):  # a converter that only knows float32
            est = to_onnx(last, features.astype(np.float32), options=options,
                          target_opset=OPSET)
            double = False
    except (ExportError, MissingShapeCalculator, RuntimeError, TypeError, ValueError,
            NotImplementedError) as exc:
        bad = _unconvertible(model, exc)
        raise ExportError(None, f"{bad} cannot be converted to ONNX by skl2onnx:"
                          f" {str(exc).splitlines()[0][:300]}") from None
    if pre is None:
        pre = _concat_inputs(frame)
    out = pre.graph.output[0]
    pre.graph.node.extend(_feature_nodes(out.name, trees=trees, double=double))
    shape = [d.dim_value or d.dim_param or None for d in out.type.tensor_type.shape.dim]
    pre.graph.output.pop()
    pre.graph.output.append(helper.make_tensor_value_info(
        FEATURES, onnx.TensorProto.DOUBLE if double else onnx.TensorProto.FLOAT, shape))
    est = compose.add_prefix(est, "est_")
    _same_opsets(pre, est)
    merged = compose.merge_models(pre, est, io_map=[(FEATURES, est.graph.input[0].name)])
    onnx.checker.check_model(merged)
    return merged


def _casts_to_float32(estimator: Any) -> bool:
    """Whether scikit-learn casts the estimator's input to float32 (its trees and the
    ensembles of trees do; HistGradientBoosting bins float64 values itself)."""
    module = type(estimator).__module__
    return module.startswith(("sklearn.tree", "sklearn.ensemble._forest",
                              "sklearn.ensemble._gb", "sklearn.ensemble._iforest"))


def _feature_nodes(source: str, *, trees: bool, double: bool) -> list[Any]:
    """Nodes from the preprocessing's float64 output to the last estimator's input
    FEATURES: through float32 for trees (as scikit-learn casts), then in the estimator's
    type."""
    import onnx
    from onnx import helper

    dbl, flt = onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT
    if trees and double:
        return [helper.make_node("Cast", [source], ["features_f32"], to=flt, name="to_f32"),
                helper.make_node("Cast", ["features_f32"], [FEATURES], to=dbl, name="as_f64")]
    return [helper.make_node("Cast", [source], [FEATURES], to=dbl if double else flt,
                             name="to_estimator_type")]


def _same_opsets(*models: Any) -> None:
    """One opset per domain in every model (the highest any uses), as merging needs."""
    from onnx import helper

    best: dict[str, int] = {}
    for m in models:
        for o in m.opset_import:
            best[o.domain] = max(best.get(o.domain, 0), o.version)
    ir = max(m.ir_version for m in models)
    for m in models:
        del m.opset_import[:]
        m.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(best.items()))
        m.ir_version = ir


def _concat_inputs(frame: Any) -> Any:
    """A bare estimator's preprocessing: one input per column, concatenated in float64."""
    import onnx
    from onnx import helper

    inputs = [helper.make_tensor_value_info(str(c), onnx.TensorProto.DOUBLE, [None, 1])
              for c in frame.columns]
    nodes = [helper.make_node("Concat", [str(c) for c in frame.columns], ["features_f64"],
                              axis=1)]
    graph = helper.make_graph(nodes, "inputs", inputs, [helper.make_tensor_value_info(
        "features_f64", onnx.TensorProto.DOUBLE, [None, len(frame.columns)])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v)
                                                   for d, v in OPSET.items()])


def _unconvertible(model: Any, exc: Exception) -> str:
    """Which step of the pipeline the converter failed on, as well as it can be told."""
    text = str(exc)
    for name, step in getattr(model, "steps", []) or []:
        for part in _parts(step):
            if type(part).__name__ in text:
                return f"step '{name}' ({type(part).__name__})"
    return f"the model ({type(model).__name__})"


def _parts(step: Any) -> list[Any]:
    """A step and the transformers and steps nested in it."""
    found = [step]
    for _, sub, *_ in getattr(step, "transformers", []) or []:
        found += _parts(sub)
    for _, sub in getattr(step, "steps", []) or []:
        found += _parts(sub)
    return found
