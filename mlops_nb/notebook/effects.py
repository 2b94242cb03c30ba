"""Which calls change what they touch: the analyser's knowledge of Python and its libraries.

The rule: precise where it can know, conservative where it cannot. A method call changes its
receiver unless the method is a well-known non-mutating one of builtins, pandas, numpy or
scikit-learn (reductions, accessors, `copy`, `to_*`, `items`, `predict`, `transform`...) and
is not called with `inplace=True`; an unknown method counts as a change. A function the user
defined changes an argument only if its body does (see `FuncInfo.changed_params`); a library
function changes its arguments only if it is known to (`np.random.shuffle`).
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field

BUILTINS = frozenset(dir(builtins)) | {"get_ipython", "display", "In", "Out", "exit", "quit"}
# Calls that never change their arguments, though they take them: common reads.
PURE_CALLS = frozenset(
    {"print", "len", "repr", "str", "int", "float", "bool", "type", "isinstance", "sorted",
     "list", "tuple", "set", "dict", "sum", "min", "max", "abs", "round", "range", "enumerate",
     "zip", "display", "hash", "id", "iter", "any", "all", "format", "vars", "dir", "hasattr",
     "getattr", "issubclass", "frozenset", "reversed", "map", "filter"}
)
# Library functions known to change an argument in place (np.random.shuffle, rng.shuffle...).
MUTATING_CALLS = frozenset({"shuffle", "fill_diagonal", "copyto", "put", "place", "putmask"})
WRITE_CALLS = re.compile(
    r"^(to_csv|to_parquet|to_json|to_pickle|to_excel|to_feather|to_hdf|to_html|to_latex|"
    r"to_markdown|savefig|save|savez|savez_compressed|savetxt|dump|write_text|write_bytes)$"
)
# Calls that read a folder given as a path: only a string passed to one of these makes a
# folder a step's data dependency (any other string counts only when it names a file).
FOLDER_READERS = frozenset({
    "listdir", "scandir", "walk", "iterdir", "glob", "iglob", "rglob", "copytree",
    "load_files", "ImageFolder", "DatasetFolder",
    "image_dataset_from_directory", "text_dataset_from_directory", "flow_from_directory",
    "load_from_disk", "load_dataset", "read_parquet", "ParquetDataset", "dataset",
})
# Methods that change their receiver although their name reads like a query, or that are
# in-place in one library and not in another (list.sort vs sorted): always a change.
MUTATING_METHODS = frozenset({
    "fit", "partial_fit", "fit_transform", "fit_predict", "fit_resample", "set_params",
    "append", "extend", "insert", "pop", "popitem", "remove", "clear", "sort", "reverse",
    "update", "add", "discard", "setdefault", "appendleft", "extendleft", "popleft",
    "fill", "resize", "itemset", "setflags", "partition", "put", "seed", "shuffle",
    "close", "send", "write", "writelines",
})
# Well-known methods that only read their receiver (when not called with inplace=True).
READ_METHODS = frozenset({
    # builtins: str, dict, list, set, tuple
    "items", "keys", "values", "get", "copy", "count", "index", "split", "rsplit", "strip",
    "lstrip", "rstrip", "lower", "upper", "title", "capitalize", "casefold", "startswith",
    "endswith", "find", "rfind", "join", "format", "format_map", "encode", "decode",
    "splitlines", "zfill", "center", "ljust", "rjust", "isdigit", "isalpha", "isalnum",
    "isnumeric", "isspace", "isupper", "islower", "union", "intersection", "difference",
    "symmetric_difference", "issubset", "issuperset", "isdisjoint",
    "removeprefix", "removesuffix", "translate", "expandtabs", "bit_length", "conjugate",
    "is_integer", "hex", "fromkeys",
    # numpy / pandas reductions and statistics
    "mean", "sum", "std", "var", "min", "max", "median", "mode", "prod", "cumsum", "cumprod",
    "argmin", "argmax", "argsort", "idxmin", "idxmax", "nunique", "unique", "value_counts",
    "quantile", "describe", "corr", "cov", "all", "any", "nlargest", "nsmallest", "round",
    "abs", "clip", "dot", "diff", "pct_change", "rank", "skew", "kurt", "sem", "nonzero",
    "isna", "isnull", "notna", "notnull", "duplicated", "isin", "between", "eq", "ne", "lt",
    "le", "gt", "ge", "equals", "memory_usage", "ptp", "trace", "searchsorted",
    # read-only accessors and new objects
    "head", "tail", "info", "sample", "astype", "reshape", "ravel", "flatten", "squeeze",
    "transpose", "swapaxes", "view", "tolist", "item", "to_numpy", "to_list", "to_dict",
    "to_frame", "to_string", "to_records", "to_series", "to_period", "to_timestamp",
    "to_csv", "to_parquet", "to_json", "to_pickle", "to_excel", "to_feather", "to_hdf",
    "to_html", "to_latex", "to_markdown", "to_sql", "tobytes", "savefig",
    "groupby", "agg", "aggregate", "apply", "applymap", "map",
    "rolling", "expanding", "ewm", "resample", "pivot", "pivot_table", "melt", "stack",
    "unstack", "explode", "merge", "concat", "crosstab", "filter", "select_dtypes",
    "query", "where", "mask", "assign", "get_dummies", "drop", "dropna", "fillna", "rename",
    "replace", "reset_index", "set_index", "sort_values", "sort_index", "reindex",
    "drop_duplicates", "ffill", "bfill", "interpolate", "shift", "cut", "qcut", "iterrows",
    "itertuples", "iteritems", "first", "last", "combine",
    "compare", "align", "asfreq", "tz_localize", "tz_convert", "add_prefix", "add_suffix",
    "set_axis", "truncate", "droplevel", "swaplevel", "infer_objects", "convert_dtypes",
    # scikit-learn: a fitted estimator is only read by these
    "predict", "predict_proba", "predict_log_proba", "decision_function", "score",
    "score_samples", "transform", "inverse_transform", "get_params", "get_feature_names_out",
    "staged_predict", "kneighbors", "get_n_splits",
})


@dataclass
class FuncInfo:
    """What a function (or class, or lambda) the notebook defines does when it is called.

    `reads`/`writes`/`mutates`: globals it reads, rebinds (`global x`) and changes in place.
    `params`: its positional parameter names; `changed_params` those its body changes in
    place (None: unknown, every argument counts as changed: classes, `*args`, recursion).
    `def_reads`: names evaluated when the def runs (defaults, decorators, annotations, a
    class body), which a later step that re-runs the def needs too.
    """

    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    mutates: set[str] = field(default_factory=set)
    params: tuple[str, ...] = ()
    changed_params: frozenset[str] | None = None
    def_reads: set[str] = field(default_factory=set)
    methods: set[str] = field(default_factory=set)  # a class's method names

    def changed_args(self, call: ast.Call) -> list[ast.expr]:
        """The argument expressions of `call` that this function may change in place."""
        args = list(call.args) + [k.value for k in call.keywords]
        if self.changed_params is None:
            return args
        if any(isinstance(a, ast.Starred) for a in call.args) or any(
                k.arg is None for k in call.keywords):
            return args if self.changed_params else []
        out = [a for p, a in zip(self.params, call.args, strict=False)
               if p in self.changed_params]
        if len(call.args) > len(self.params) and self.changed_params:
            out += call.args[len(self.params):]
        out += [k.value for k in call.keywords if k.arg in self.changed_params]
        return out


def call_name(func: ast.AST) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def changes_receiver(call: ast.Call) -> bool:
    """Whether a method call `obj.m(...)` may change `obj`."""
    assert isinstance(call.func, ast.Attribute)
    name = call.func.attr
    for k in call.keywords:
        if k.arg == "inplace" and not (isinstance(k.value, ast.Constant)
                                       and k.value.value is False):
            return True
    if name in MUTATING_METHODS:
        return True
    return name not in READ_METHODS


def base_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None
