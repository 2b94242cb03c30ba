"""The other servers of the serving benchmark, each in a virtualenv of its own.

MLflow, BentoML and MLServer are not dependencies of mlops_nb: each goes into its own venv
under ~/.cache/mlops_nb/bench-envs/NAME ($MLOPS_NB_BENCH_ENVS), made with uv from PyPI on
first use and reused while its pins are the same (a `.pins` stamp, written last, so a
half-made venv is made again). Each gets the scikit-learn of .venv (and its numpy, pandas,
scipy and skops when the server's own requirements allow them; otherwise scikit-learn alone is
pinned, and the versions it got are reported), so all load the same fitted model.

    python bench/serve_envs.py [NAME...]     # make (or check) the venvs, print their versions
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from pathlib import Path

SAME = ("scikit-learn", "numpy", "pandas", "scipy", "skops")
SERVERS = {"mlflow": ["mlflow"], "bentoml": ["bentoml"],
           "mlserver": ["mlserver", "mlserver-sklearn"]}
ENVS = Path(os.environ.get("MLOPS_NB_BENCH_ENVS",
                           Path.home() / ".cache/mlops_nb/bench-envs"))


def uv() -> str:
    """uv: on PATH, or the copy setup.sh keeps under ~/.cache/mlops_nb."""
    found = shutil.which("uv")
    if found:
        return found
    cached = sorted((Path.home() / ".cache/mlops_nb").glob("uv-*/bin/uv"))
    if cached:
        return str(cached[-1])
    raise RuntimeError("uv not found (pip install uv, or run scripts/setup.sh once)")


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL).returncode
    if code:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {code}; see {log}")


def python_of(name: str, log: Path) -> tuple[Path | None, str]:
    """The venv python of server `name` (made on first use), or None and why not."""
    venv = ENVS / name
    py = venv / "bin/python"
    pins = [f"{p}=={md.version(p)}" for p in SAME]
    want = " ".join([*SERVERS[name], *pins])
    stamp = venv / ".pins"
    if py.exists() and stamp.exists() and stamp.read_text() == want:
        return py, ""
    shutil.rmtree(venv, ignore_errors=True)  # a venv cannot be moved: built in place
    ENVS.mkdir(parents=True, exist_ok=True)
    why = ""
    try:
        _run([uv(), "venv", "-q", "--python", sys.executable, str(venv)], log)
        for attempt in (pins, pins[:1]):  # all pins, else scikit-learn's alone
            try:
                _run([uv(), "pip", "install", "-q", "--python", str(py), *SERVERS[name],
                      *attempt], log)
                break
            except RuntimeError as exc:
                why = str(exc)
        else:
            raise RuntimeError(why)
    except RuntimeError as exc:
        shutil.rmtree(venv, ignore_errors=True)
        return None, f"{name} could not be installed ({exc})"
    stamp.write_text(want)
    return py, ""


def versions(py: Path, packages: list[str]) -> dict[str, str]:
    code = ("import importlib.metadata as md, json, sys\n"
            "print(json.dumps({p: md.version(p) for p in sys.argv[1:]}))")
    out = subprocess.run([str(py), "-c", code, *packages], capture_output=True, text=True)
    import json

    return json.loads(out.stdout) if out.returncode == 0 else {}


def main() -> int:
    names = sys.argv[1:] or list(SERVERS)
    log = ENVS / "make.log"
    ENVS.mkdir(parents=True, exist_ok=True)
    for name in names:
        py, why = python_of(name, log)
        print(name, py, why or versions(py, [*SERVERS[name], *SAME]) if py else why,
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
