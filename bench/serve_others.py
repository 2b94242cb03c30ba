"""The other servers of the serving benchmark: MLflow, BentoML, MLServer, on the same model.

Each runs from its own venv (serve_envs.py) with one worker on loopback, serving the same
fitted scikit-learn Pipeline: the registry's skops file, loaded in that venv (same
scikit-learn) and saved in the server's own format. For each: the command, the health path,
the predict path, the request body for a list of records and where its answer keeps the
predictions.

- MLflow: `mlflow models serve --env-manager local --workers 1`, the model saved with
  mlflow.sklearn; body {"dataframe_records": [...]}, answer {"predictions": [...]}.
- BentoML: a service of one API taking {"records": [...]} (pydantic-validated
  list[dict[str, float]]), predicting a DataFrame, `bentoml serve` with workers=1;
  BENTOML_DO_NOT_TRACK set.
- MLServer: mlserver-sklearn's SKLearnModel on a joblib file, `parallel_workers: 0` (one
  process), the V2 inference protocol with the pandas codec (one input per column), answer
  outputs[0].data.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOAD = """
import sys, skops.io as sio
path = sys.argv[1]
model = sio.load(path, trusted=sio.get_untrusted_types(file=path))
"""

MLFLOW_SAVE = LOAD + """
import mlflow.sklearn
mlflow.sklearn.save_model(model, sys.argv[2], serialization_format="cloudpickle")
"""

JOBLIB_SAVE = LOAD + """
import joblib
joblib.dump(model, sys.argv[2])
"""

BENTO_SERVICE = '''
import bentoml
import joblib
import pandas as pd

COLUMNS = {columns!r}
MODEL = {model!r}


@bentoml.service(workers=1)
class Iris:
    def __init__(self) -> None:
        self.model = joblib.load(MODEL)

    @bentoml.api
    def predict(self, records: list[dict[str, float]]) -> dict:
        frame = pd.DataFrame.from_records(records, columns=COLUMNS)
        return {{"predictions": self.model.predict(frame).tolist()}}
'''


@dataclass
class Spec:
    name: str
    cmd: list[str]
    cwd: Path
    health: str
    predict: str
    kind: str  # how bodies are written and answers read: mlops, mlflow, bentoml, mlserver
    env: dict[str, str]

    def body(self, records: list[dict[str, Any]]) -> bytes:
        if self.kind == "mlflow":
            return json.dumps({"dataframe_records": records}).encode()
        if self.kind == "mlserver":
            columns = list(records[0])
            return json.dumps({"parameters": {"content_type": "pd"}, "inputs": [
                {"name": c, "shape": [len(records)], "datatype": "FP64",
                 "data": [r[c] for r in records]} for c in columns]}).encode()
        return json.dumps({"records": records}).encode()

    def predictions(self, answer: Any) -> list[Any]:
        if self.kind == "mlserver":
            return list(answer["outputs"][0]["data"])
        return list(answer["predictions"])


def _save(py: Path, code: str, skops_file: Path, out: Path, work: Path) -> None:
    res = subprocess.run([str(py), "-c", code, str(skops_file), str(out)], cwd=work,
                         capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{py}: saving the model failed: {res.stderr[-2000:]}")


def mlflow(py: Path, skops_file: Path, work: Path, port: int, env: dict[str, str]) -> Spec:
    model = work / "mlflow-model"
    _save(py, MLFLOW_SAVE, skops_file, model, work)
    # MLflow starts its scoring server as `uvicorn` found on PATH
    env = {**env, "PATH": f"{py.parent}:{env.get('PATH', '')}"}
    return Spec("mlflow models serve", [
        str(py), "-m", "mlflow", "models", "serve", "-m", str(model), "-h", "127.0.0.1", "-p",
        str(port), "--env-manager", "local", "--workers", "1"], work, "/ping", "/invocations",
        "mlflow", env)


def bentoml(py: Path, skops_file: Path, work: Path, port: int, env: dict[str, str],
            columns: list[str]) -> Spec:
    folder = work / "bentoml"
    folder.mkdir()
    model = folder / "model.joblib"
    _save(py, JOBLIB_SAVE, skops_file, model, work)
    (folder / "service.py").write_text(BENTO_SERVICE.format(columns=columns,
                                                             model=str(model)))
    env = {**env, "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(work / "bentoml-home"),
           "PATH": f"{py.parent}:{env.get('PATH', '')}"}
    return Spec("BentoML", [str(py), "-m", "bentoml", "serve", "service:Iris", "--host",
                            "127.0.0.1", "--port", str(port)], folder, "/readyz", "/predict",
                "bentoml", env)


def mlserver(py: Path, skops_file: Path, work: Path, port: int, env: dict[str, str],
             grpc_port: int, metrics_port: int) -> Spec:
    folder = work / "mlserver"
    (folder / "iris").mkdir(parents=True)
    _save(py, JOBLIB_SAVE, skops_file, folder / "iris/model.joblib", work)
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "host": "127.0.0.1", "parallel_workers": 0, "debug": False}))
    (folder / "iris/model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"}}))
    env = {**env, "PATH": f"{py.parent}:{env.get('PATH', '')}"}
    return Spec("MLServer", [str(py.parent / "mlserver"), "start", str(folder)], folder,
                "/v2/models/iris/ready", "/v2/models/iris/infer", "mlserver", env)
