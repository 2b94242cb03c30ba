"""Generate the benchmark's projects: one tagged notebook, its plain-Python floors, and a big one.

`build(dest, variant)` writes, under `dest`:

- `project/`: an mlops_nb project (git + DVC) with one tagged notebook `notebooks/bench.ipynb`
  of four steps (load: 100k x 20 synthetic tabular rows made with numpy and a fixed seed, no
  download; prepare: split and scale; train: logistic regression, or a random forest in the
  `forest` variant; evaluate: metrics), its parameters and pipeline-metrics, compiled and
  committed, so `dvc exp run` has a baseline.
- `floor/script.py`: the same step code as one plain `python script.py` (the floor).
- `floor/steps/{load,prepare,train,evaluate}.py`: four plain processes passing files
  (Parquet for frames and series, joblib for the model) through `floor/data/`.
- `floor/train_evaluate.py`: the floor of the steps a training-parameter change reruns:
  train + evaluate in one plain process, reading what `floor/steps/prepare.py` wrote.

`build_many(dest, n_notebooks, n_cells)` writes a project of many generated notebooks for the
compile-time target. Every notebook, script and parameter is generated from the same code
strings below, so the floors run exactly the code the pipeline runs.

Usable alone: `python bench/make_project.py DEST [--variant logreg|forest]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

STEPS = ("load", "prepare", "train", "evaluate")
NOTEBOOK_STEM = "bench"  # params.yaml groups parameters by notebook stem

IMPORTS = """\
import json

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
"""

FUNCTIONS = """\
def feature_names(n):
    return [f"x{i:02d}" for i in range(n)]
"""

LOAD = """\
rng = np.random.default_rng(DATA_SEED)
features = rng.normal(size=(N_ROWS, N_FEATURES))
weights = rng.normal(size=N_FEATURES)
signal = features @ weights + 0.5 * features[:, 0] * features[:, 1] + rng.normal(size=N_ROWS)
df = pd.DataFrame(features, columns=feature_names(N_FEATURES))
df["target"] = (signal > 0).astype("int64")
df.shape
"""

PREPARE = """\
X = df.drop(columns="target")
y = df["target"]
X_raw_train, X_raw_test, y_train, y_test = train_test_split(
    X, y, test_size=TEST_SIZE, random_state=DATA_SEED, stratify=y
)
scaler = StandardScaler().fit(X_raw_train)
X_train = pd.DataFrame(scaler.transform(X_raw_train), columns=X.columns, index=X_raw_train.index)
X_test = pd.DataFrame(scaler.transform(X_raw_test), columns=X.columns, index=X_raw_test.index)
X_train.shape, X_test.shape
"""

EVALUATE = """\
proba = model.predict_proba(X_test)[:, 1]
pred = (proba >= 0.5).astype("int64")
accuracy = float(accuracy_score(y_test, pred))
f1 = float(f1_score(y_test, pred))
roc_auc = float(roc_auc_score(y_test, proba))
print(json.dumps({"accuracy": accuracy, "f1": f1, "roc_auc": roc_auc}, indent=2))
"""

METRICS = "print(accuracy)\nprint(f1)\nprint(roc_auc)\n"


@dataclass(frozen=True)
class Variant:
    """One model: its training code, parameters, and the parameter an experiment changes."""

    name: str
    train: str
    params: dict[str, object]
    exp_param: str  # changed by `dvc exp run -S`; reruns train + evaluate only
    exp_values: tuple[object, ...]  # distinct values, so DVC's run cache never answers


BASE_PARAMS: dict[str, object] = {"N_ROWS": 100_000, "N_FEATURES": 20, "DATA_SEED": 0,
                                  "TEST_SIZE": 0.2}

VARIANTS = {
    "logreg": Variant(
        "logreg",
        "model = LogisticRegression(C=C, max_iter=MAX_ITER)\nmodel.fit(X_train, y_train)\n",
        {**BASE_PARAMS, "C": 1.0, "MAX_ITER": 200},
        "C", tuple(round(0.5 + 0.01 * i, 2) for i in range(1, 100)),
    ),
    "logreg1m": Variant(  # the data size users have: 1M rows, outputs of ~0.4 GB
        "logreg1m",
        "model = LogisticRegression(C=C, max_iter=MAX_ITER)\nmodel.fit(X_train, y_train)\n",
        {**BASE_PARAMS, "N_ROWS": 1_000_000, "C": 1.0, "MAX_ITER": 200},
        "C", tuple(round(0.5 + 0.01 * i, 2) for i in range(1, 100)),
    ),
    "logreg10m": Variant(  # 10M rows x 20 float64: a 1.6 GB frame, outputs of ~4 GB
        "logreg10m",
        "model = LogisticRegression(C=C, max_iter=MAX_ITER)\nmodel.fit(X_train, y_train)\n",
        {**BASE_PARAMS, "N_ROWS": 10_000_000, "C": 1.0, "MAX_ITER": 200},
        "C", tuple(round(0.5 + 0.01 * i, 2) for i in range(1, 100)),
    ),
    "forest": Variant(
        "forest",
        "model = RandomForestClassifier(\n    n_estimators=N_ESTIMATORS, max_depth=MAX_DEPTH,"
        " random_state=MODEL_SEED, n_jobs=1\n)\nmodel.fit(X_train, y_train)\n",
        {**BASE_PARAMS, "N_ESTIMATORS": 16, "MAX_DEPTH": 8, "MODEL_SEED": 0},
        "MODEL_SEED", tuple(range(1, 100)),
    ),
}

# Which names each plain per-step process reads and writes (what the compiler infers too).
STEP_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "load": ((), ("df",)),
    "prepare": (("df",), ("X_train", "X_test", "y_train", "y_test")),
    "train": (("X_train", "y_train"), ("model",)),
    "evaluate": (("model", "X_test", "y_test"), ()),
}

FILE_IO = '''\
from pathlib import Path as _Path

import joblib as _joblib

_DATA = _Path(__file__).resolve().parents[{up}] / "data"


def _save(name, value):
    _DATA.mkdir(exist_ok=True)
    if isinstance(value, pd.Series):
        value.to_frame().to_parquet(_DATA / f"{name}.parquet")
    elif isinstance(value, pd.DataFrame):
        value.to_parquet(_DATA / f"{name}.parquet")
    else:
        _joblib.dump(value, _DATA / f"{name}.joblib")


def _load(name):
    path = _DATA / f"{name}.parquet"
    if path.exists():
        frame = pd.read_parquet(path)
        return frame.iloc[:, 0] if name.startswith("y_") else frame
    return _joblib.load(_DATA / f"{name}.joblib")
'''  # {up}: how many folders above the script's own folder floor/data sits


def _file_io(up: int) -> str:
    return FILE_IO.replace("{up}", str(up))


def step_code(variant: Variant) -> dict[str, str]:
    return {"load": LOAD, "prepare": PREPARE, "train": variant.train, "evaluate": EVALUATE}


def params_code(variant: Variant) -> str:
    return "".join(f"{k} = {v!r}\n" for k, v in variant.params.items())


def _notebook(cells: list[tuple[list[str], str]], title: str) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells.append(new_markdown_cell(title))
    for tags, src in cells:
        cell = new_code_cell(src.rstrip("\n"))
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    return nb


def bench_notebook(variant: Variant) -> nbformat.NotebookNode:
    code = step_code(variant)
    cells: list[tuple[list[str], str]] = [
        (["imports"], IMPORTS),
        (["pipeline-parameters"], params_code(variant)),
        (["functions"], FUNCTIONS),
        (["step:load"], code["load"]),
        (["skip"], "df.describe()"),
        (["step:prepare"], code["prepare"]),
        (["step:train"], code["train"]),
        (["step:evaluate"], code["evaluate"]),
        (["pipeline-metrics"], METRICS),
    ]
    return _notebook(cells, f"# Benchmark pipeline ({variant.name})")


def floor_script(variant: Variant) -> str:
    code = step_code(variant)
    body = "\n".join(f"# step: {s}\n{code[s]}" for s in STEPS)
    return f'"""Floor: the pipeline\'s step code as one plain script."""\n\n{IMPORTS}\n' \
           f"{params_code(variant)}\n\n{FUNCTIONS}\n\n{body}"


def step_script(variant: Variant, step: str, body: str | None = None) -> str:
    reads, writes = STEP_IO[step]
    load = "".join(f"{n} = _load({n!r})\n" for n in reads)
    save = "".join(f"_save({n!r}, {n})\n" for n in writes)
    return (f'"""Plain process for step `{step}`: read inputs, run the step, write outputs."""\n\n'
            f"{IMPORTS}\n{_file_io(1)}\n{params_code(variant)}\n\n{FUNCTIONS}\n\n{load}"
            f"{body if body is not None else step_code(variant)[step]}{save}")


def train_evaluate_script(variant: Variant) -> str:
    """The floor of the steps `dvc exp run -S <train param>` reruns, as one plain process."""
    reads = ("X_train", "y_train", "X_test", "y_test")
    load = "".join(f"{n} = _load({n!r})\n" for n in reads)
    code = step_code(variant)
    return ('"""Floor of train + evaluate: one plain process reading the prepared data."""\n\n'
            f"{IMPORTS}\n{_file_io(0)}\n{params_code(variant)}\n\n{FUNCTIONS}\n\n{load}"
            f"{code['train']}{code['evaluate']}")


SESSION = "MLOPS_NB_BENCH_SESSION"  # marks every process the benchmark starts (measure.py)


def bench_env(session: str = "") -> dict[str, str]:
    """The environment every benchmarked command runs in: venv first on PATH, no analytics.

    `session` marks the processes, so those that outlive their command can be found.
    """
    env = dict(os.environ)
    env[SESSION] = session or f"make_project-{os.getpid()}"
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env.update(DVC_NO_ANALYTICS="1", DO_NOT_TRACK="1", PYTHONHASHSEED="0")
    env.pop("MLOPS_NB_ROOT", None)  # each command must find its project from its cwd
    # Measure what a user's install does: Python caches bytecode (sandboxes often turn it off).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed in {cwd} (exit {res.returncode}):\n"
                           f"{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return res.stdout


GIT = ["git", "-c", "user.name=mlops-nb bench", "-c", "user.email=bench@localhost",
       "-c", "commit.gpgsign=false"]


@dataclass(frozen=True)
class BenchProject:
    variant: Variant
    project: Path
    floor: Path


def build(dest: Path, variant_name: str, env: dict[str, str] | None = None) -> BenchProject:
    """Write the project and its floors under dest; compile, run once, commit the baseline."""
    env = env or bench_env()
    variant = VARIANTS[variant_name]
    dest.mkdir(parents=True, exist_ok=True)
    project, floor = dest / "project", dest / "floor"
    bindir = Path(sys.executable).parent
    _run([str(bindir / "mlops-nb"), "init", str(project)], dest, env)
    nbformat.write(bench_notebook(variant), str(project / "notebooks" / f"{NOTEBOOK_STEM}.ipynb"))
    _run([str(bindir / "mlops-nb"), "compile"], project, env)
    (floor / "steps").mkdir(parents=True, exist_ok=True)
    (floor / "script.py").write_text(floor_script(variant))
    for step in STEPS:
        (floor / "steps" / f"{step}.py").write_text(step_script(variant, step))
    (floor / "train_evaluate.py").write_text(train_evaluate_script(variant))
    # One real run of each path makes the data train_evaluate.py reads and dvc.lock for the
    # baseline commit; it also warms the page cache before anything is timed.
    if not variant.name.endswith("1m"):  # a big variant has no case that reads floor/data
        for step in STEPS:
            _run([sys.executable, str(floor / "steps" / f"{step}.py")], floor, env)
    _run([sys.executable, "-m", "dvc", "repro", "-q"], project, env)
    _run(GIT + ["add", "-A"], project, env)
    _run(GIT + ["commit", "-q", "-m", "benchmark baseline"], project, env)
    return BenchProject(variant, project, floor)


FANOUT_STEPS = ("load", "prepare", "forest_a", "forest_b")
FANOUT_TRAIN = """\
model_{k} = RandomForestClassifier(
    n_estimators=N_ESTIMATORS, max_depth=MAX_DEPTH, random_state=SEED_{K}, n_jobs=1
)
model_{k}.fit(X_train, y_train)
accuracy_{k} = float(accuracy_score(y_test, model_{k}.predict(X_test)))
accuracy_{k}
"""
FANOUT_PARAMS = {**BASE_PARAMS, "N_ESTIMATORS": 24, "MAX_DEPTH": 10, "SEED_A": 1, "SEED_B": 2}


def _fanout_code() -> dict[str, str]:
    return {"load": LOAD, "prepare": PREPARE,
            **{f"forest_{k}": FANOUT_TRAIN.replace("{k}", k).replace("{K}", k.upper())
               for k in "ab"}}


def build_fanout(dest: Path, env: dict[str, str] | None = None) -> BenchProject:
    """Two heavy steps that do not depend on each other (two random forests trained on the
    same prepared data): what `mlops-nb run -j 2` can run side by side. The floor is the same
    code as one plain script, which runs them one after the other."""
    env = env or bench_env()
    variant = Variant("fanout", "", FANOUT_PARAMS, "SEED_A", tuple(range(10, 100)))
    code = _fanout_code()
    params = "".join(f"{k} = {v!r}\n" for k, v in FANOUT_PARAMS.items())
    cells: list[tuple[list[str], str]] = [
        (["imports"], IMPORTS), (["pipeline-parameters"], params), (["functions"], FUNCTIONS),
        *[([f"step:{s}"], code[s]) for s in FANOUT_STEPS],
        (["pipeline-metrics"], "print(accuracy_a)\nprint(accuracy_b)\n"),
    ]
    dest.mkdir(parents=True, exist_ok=True)
    project, floor = dest / "project", dest / "floor"
    bindir = Path(sys.executable).parent
    _run([str(bindir / "mlops-nb"), "init", str(project)], dest, env)
    nbformat.write(_notebook(cells, "# Fan-out benchmark"),
                   str(project / "notebooks" / f"{NOTEBOOK_STEM}.ipynb"))
    _run([str(bindir / "mlops-nb"), "compile"], project, env)
    floor.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"# step: {s}\n{code[s]}" for s in FANOUT_STEPS)
    (floor / "script.py").write_text(f'"""Floor: the fan-out pipeline as one plain script."""'
                                     f"\n\n{IMPORTS}\n{params}\n\n{FUNCTIONS}\n\n{body}")
    _run([sys.executable, str(floor / "script.py")], floor, env)
    _run([str(bindir / "mlops-nb"), "run"], project, env)
    _run(GIT + ["add", "-A"], project, env)
    _run(GIT + ["commit", "-q", "-m", "benchmark baseline"], project, env)
    return BenchProject(variant, project, floor)


def many_notebook(index: int, n_cells: int) -> nbformat.NotebookNode:
    """A notebook of n_cells cells: imports, parameters, functions, then 4 steps of code."""
    k = f"{index:03d}"
    cells: list[tuple[list[str], str]] = [
        (["imports"], "import math\nimport json\n\nimport numpy as np\nimport pandas as pd"),
        (["pipeline-parameters"], f"SCALE_{k} = {index}\nSEED_{k} = 0\nNAME_{k} = 'nb{k}'"),
        (["functions"], f"def helper_{k}(x):\n    return x * SCALE_{k} + 1"),
    ]
    body = n_cells - len(cells)
    steps = ["load", "clean", "features", "report"]
    per_step = max(1, body // len(steps))
    for i in range(body):
        s = min(i // per_step, len(steps) - 1)
        starts = i % per_step == 0 and i // per_step < len(steps)
        tags = [f"step:{steps[s]}_{k}"] if starts else []
        if i == 0:
            src = f"rng = np.random.default_rng(SEED_{k})\ndata_{k} = rng.normal(size=100)"
        elif tags and s == 1:
            src = f"clean_{k} = data_{k}[np.isfinite(data_{k})]\nv{i} = len(clean_{k})"
        elif tags and s == 2:
            src = f"feat_{k} = pd.Series(helper_{k}(clean_{k}))\nv{i} = feat_{k}.mean()"
        elif tags and s == 3:
            src = f"summary_{k} = {{'mean': float(feat_{k}.mean()), 'name': NAME_{k}}}\n" \
                  f"print(json.dumps(summary_{k}))"
        else:
            src = f"v{i} = math.sqrt({i}) + {i}\n# a cell of exploration-sized code\nv{i}"
        cells.append((tags, src))
    return _notebook(cells, f"# Generated notebook {k}")


def build_many(dest: Path, n_notebooks: int = 100, n_cells: int = 30,
               env: dict[str, str] | None = None) -> Path:
    """A project of n_notebooks generated notebooks (not compiled: the benchmark times that)."""
    env = env or bench_env()
    project = dest / "many"
    bindir = Path(sys.executable).parent
    _run([str(bindir / "mlops-nb"), "init", str(project)], dest, env)
    for i in range(n_notebooks):
        nbformat.write(many_notebook(i, n_cells), str(project / "notebooks" / f"nb{i:03d}.ipynb"))
    return project


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dest", type=Path)
    p.add_argument("--variant", choices=sorted(VARIANTS), default="logreg")
    p.add_argument("--many", action="store_true", help="also write the 100-notebook project")
    args = p.parse_args()
    bp = build(args.dest.resolve() / args.variant, args.variant)
    print(f"project: {bp.project}\nfloor:   {bp.floor}")
    if args.many:
        print(f"many:    {build_many(args.dest.resolve())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
