"""What a generated step notebook calls while it runs: set-up, load inputs, save outputs.

It is imported inside the kernel, so it imports nothing heavy itself. The working directory
becomes the source notebook's folder (relative paths in user code work as they did
interactively); outputs go under the project root, found from MLOPS_NB_ROOT or by walking up
to the folder that holds `steps/<step>.ipynb`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from mlops_nb import artifacts
from mlops_nb.artifacts import atomic
from mlops_nb.errors import ArtifactError, UsageError
from mlops_nb.project import Layout

log = logging.getLogger(__name__)

RUNNER_PID = "MLOPS_NB_RUNNER_PID"  # stopping.RUNNER_PID, read here without importing it

_metrics: dict[str, float] = {}
_context: dict[str, Any] = {}
_ran_with: dict[str, Any] = {}  # the injected parameter values, set by execute_step
_warned: list[bool] = []  # log_metric outside a step has warned once


def ran_with(parameters: dict[str, Any]) -> None:
    """Record the parameter values injected into this step (for its done marker)."""
    _ran_with.clear()
    _ran_with.update(parameters)


def _root(step: str) -> Path:
    env = os.environ.get("MLOPS_NB_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "steps" / f"{step}.ipynb").exists():
            return folder
    raise RuntimeError(
        f"cannot find the project of step '{step}' from {here}: run it from the project"
        " folder or set MLOPS_NB_ROOT"
    )


def begin(step: str, notebook_dir: str) -> None:
    """Enter the source notebook's folder and remember the step (it returns nothing: the set-up
    cell of an executed notebook shows no output)."""
    if os.environ.get(RUNNER_PID):
        from mlops_nb.execute.stopping import guard_kernel_group

        guard_kernel_group()  # a papermill kernel dies with its runner, background included
    root = _root(step)
    _context.clear()
    _context.update(step=step, root=root)
    _metrics.clear()
    _inside(Layout(root).step_outputs(step))
    clear_outputs(Layout(root), step)
    folder = root / notebook_dir if notebook_dir else root
    os.chdir(folder)
    # as in Jupyter, modules beside the notebook are importable (`import helpers`)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def clear_outputs(layout: Layout, step: str) -> None:
    """Remove a step's previous outputs (and Ploomber's records of them) before it runs.

    Whatever runs the step (mlops-nb, DVC, Ploomber), a step that then fails leaves no old or
    partial output behind that a later build could take for finished. The executed notebook,
    which the runner is writing, stays.
    """
    folder = layout.step_outputs(step)
    if not folder.is_dir():
        return
    keep = layout.executed(step).name
    for entry in folder.iterdir():
        if entry.name == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def prepare_outputs(layout: Layout, step: str) -> None:
    """What every runner does before it writes anything of a step (its executed notebook
    comes first): refuse an outputs folder that resolves outside the project (a symlinked
    `outputs/`), then remove all the step's previous outputs, executed notebook and done
    marker included, so a step killed or failing before its first cell ran (a kernel that
    never started) is never taken for done with its old outputs."""
    folder = layout.step_outputs(step)
    outputs = (layout.root / "outputs").resolve()
    for path in (layout.root / "outputs", folder):
        resolved = path.resolve()
        if not resolved.is_relative_to(layout.root.resolve()) or (
                path == folder and not resolved.is_relative_to(outputs)):
            raise ArtifactError(
                f"{path} resolves to {resolved}, outside {layout.root}; remove the symlink"
                " (outputs must stay inside the project); nothing was written")
    clear_outputs(layout, step)
    layout.executed(step).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)


def _step_root(call: str) -> Path:
    """The running step's project root; outside a step, an error saying what to do instead."""
    if "root" not in _context:
        raise UsageError(
            f"mlops_nb.runtime.{call}() works only inside a running pipeline step (a compiled"
            " step notebook calls it); in an interactive notebook use `%load_ext mlops_nb`"
            " then `%mlops load STEP` to get a step's inputs"
        )
    return Path(_context["root"])


def _layout(call: str = "load") -> Layout:
    return Layout(_step_root(call))


def _inside(path: Path) -> Path:
    """Refuse an output path that resolves outside the project (`..`, a symlink out)."""
    root = _step_root("save").resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(root / "outputs"):
        raise ArtifactError(
            f"output {path} resolves to {resolved}, outside {root / 'outputs'}; remove the"
            " symlink (outputs must stay inside the project)"
        )
    return path


def load(producer: str, name: str) -> Any:
    """An output of an earlier step. One whose bytes are not those its step recorded (bit
    rot, an edit) is removed with that step's done marker, so the next run of any runner
    reruns the producer (state.corrupt_input), and the error says so."""
    layout = _layout("load")
    folder = _inside(layout.output(producer, name))
    try:
        return artifacts.load(folder, project=layout.root)
    except ArtifactError as exc:
        from mlops_nb.execute.state import corrupt_input

        if not corrupt_input(layout, producer, name):
            raise
        raise ArtifactError(
            f"{exc}. It was removed, with the done marker of step '{producer}': the next"
            f" `mlops-nb run`, `dvc repro` or `ploomber build` reruns '{producer}' first"
        ) from None


def adopt(value: Any, namespace: dict[str, Any], _depth: int = 0) -> Any:
    """Give the functions a loaded value holds (a lambda in a dict, a closure in a list or an
    attribute) the step's globals, so they read globals when called, as in one kernel:
    unpickled, they carry copies of the globals of the step that made them. Containers are
    changed in place; returns the value (a new function or tuple when it was one)."""
    import types

    if _depth > 4:
        return value
    if isinstance(value, types.FunctionType) and value.__globals__ is not namespace \
            and value.__module__ in ("__main__", None):
        fn = types.FunctionType(value.__code__, namespace, value.__name__,
                                value.__defaults__, value.__closure__)
        fn.__kwdefaults__ = value.__kwdefaults__
        fn.__dict__.update(value.__dict__)
        fn.__qualname__ = value.__qualname__
        return fn
    if isinstance(value, dict):
        for k, v in value.items():
            value[k] = adopt(v, namespace, _depth + 1)
    elif isinstance(value, list):
        value[:] = [adopt(v, namespace, _depth + 1) for v in value]
    elif isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(adopt(v, namespace, _depth + 1) for v in value)
    elif hasattr(value, "__dict__") and not isinstance(value, type) and (
            type(value).__module__ == "__main__" or type(value).__name__ == "FunctionTransformer"):
        for k, v in vars(value).items():
            if callable(v) or isinstance(v, (dict, list, tuple)):
                setattr(value, k, adopt(v, namespace, _depth + 1))
    return value


def save(step: str, values: dict[str, Any]) -> None:
    layout = _layout("save")
    for name, value in values.items():
        try:
            artifacts.save(value, _inside(layout.output(step, name)), project=layout.root)
        except ArtifactError:
            raise
        except Exception as exc:  # noqa: BLE001 - unpicklable objects and the like
            raise ArtifactError(
                f"step '{step}' cannot hand '{name}' ({type(value).__name__}) to later steps:"
                f" {type(exc).__name__}: {exc}; make it a file the step writes, or rebuild it"
                " in the step that uses it"
            ) from exc


def random_state() -> dict[str, Any]:
    """The global random generators' state as plain JSON values: Python's `random`, numpy's
    legacy global RandomState and torch's default generator, each when its module is loaded
    (pipeline.randomchain hands it to the next step of a notebook that seeds one)."""
    import random

    state: dict[str, Any] = {"random": _plain(random.getstate())}
    if "numpy" in sys.modules:
        state["numpy"] = _plain(sys.modules["numpy"].random.get_state())
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_rng_state"):
        state["torch"] = torch.get_rng_state().tolist()
    return state


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    return value


def restore_random(state: Any) -> None:
    """Set the global random generators to a state `random_state()` took in the step
    before this one, so this step draws what a top-to-bottom run draws here."""
    import importlib
    import random

    if not isinstance(state, dict):
        raise ArtifactError(f"the random state handed to this step is a {type(state).__name__},"
                            " not the mapping mlops_nb writes; rerun the step before it")
    try:
        if "random" in state:
            version, internal, gauss = state["random"]
            random.setstate((version, tuple(internal), gauss))
        if "numpy" in state:
            import numpy as np

            kind, keys, pos, has_gauss, cached = state["numpy"]
            if len(keys) != 624:  # MT19937's state, which set_state would cut or refuse
                raise ValueError(f"{len(keys)} numbers in numpy's state, not 624")
            np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss,
                                 cached))
        if "torch" in state:
            torch = importlib.import_module("torch")  # the step before had it loaded
            torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    except ImportError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign state file
        raise ArtifactError(f"the random state handed to this step is not one mlops_nb wrote"
                            f" ({type(exc).__name__}: {exc}); rerun the step before it"
                            ) from None


def end(step: str) -> None:
    """Mark the step done, whichever tool ran it (mlops-nb, DVC, Ploomber)."""
    from mlops_nb.execute.state import record_done

    record_done(_step_root("end"), step, dict(_ran_with) or None)


def log_metric(name: str, value: Any) -> None:
    """Record a metric of the running step (also callable as mlops_nb.log_metric).

    Outside a step the value is kept (in this module's metrics) and a warning, once per
    session, says it reaches the metrics file only when the pipeline runs.
    """
    if "root" not in _context and not _warned:
        _warned.append(True)
        log.warning("log_metric(%r, ...) outside a pipeline step: the value is kept in this"
                    " session (mlops_nb.runtime.metrics()) and recorded in the step's"
                    " metrics file only when the pipeline runs", name)
    _metrics[name] = value


def metrics() -> dict[str, Any]:
    """The metrics logged so far in this process (a step's, or an interactive session's)."""
    return dict(_metrics)


def save_metrics(step: str, values: dict[str, Any]) -> None:
    merged = {**values, **_metrics}
    out: dict[str, Any] = {}
    for k, v in merged.items():
        try:
            out[k] = float(v) if not isinstance(v, (bool, int)) else v
        except (TypeError, ValueError):
            out[k] = str(v)
    path = _inside(_layout("save_metrics").metrics(step))
    atomic.write_text(path, json.dumps(out, indent=2, sort_keys=True) + "\n")
