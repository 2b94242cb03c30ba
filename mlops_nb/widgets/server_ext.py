"""Compile on save: a Jupyter Server extension that compiles a project when JupyterLab saves
one of its notebooks, so the pipeline files never lag behind the notebook.

Enabled by installing the package (a jupyter_server_config.d file turns it on). Only a
notebook under a project's `notebooks/` folder (a folder with `notebooks/` and
`params.yaml`) triggers a compile, never a hidden file or a generated step notebook. A
compile error (a misspelt tag) is logged with its notebook and cell, and recorded in
`.mlops_nb/save-error.json` (removed by the next save that compiles), which the `%mlops`
extension shows in the notebook the next time it runs a cell (save_error.py); the step
preview shows it too. The save itself never fails because of us.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from mlops_nb.project import NOTEBOOKS, PARAMS

log = logging.getLogger(__name__)
_lock = threading.Lock()  # one compile at a time: two saves must not interleave writes


def project_of(path: Path) -> Path | None:
    """The project whose notebooks/ holds `path`, or None (not a project notebook)."""
    path = path.resolve()
    if path.suffix != ".ipynb":
        return None
    for folder in path.parents:
        if folder.name == NOTEBOOKS:
            root = folder.parent
            rel = path.relative_to(folder)
            if any(part.startswith(".") for part in rel.parts):
                return None  # checkpoints, scratch copies
            return root if (root / PARAMS).is_file() else None
    return None


def compile_saved(path: Path, logger: logging.Logger | None = None) -> list[str] | None:
    """Compile the project of a saved notebook; the files written, or None when the
    notebook is not a project's. A compile error is logged (to `logger`: the server's own
    log when the server calls), never raised."""
    log_to = logger or log
    from mlops_nb.errors import MlopsNbError

    root = project_of(path)
    if root is None:
        return None
    from mlops_nb import compile as compile_mod

    with _lock:
        try:
            result = compile_mod.compile_project(root)
        except MlopsNbError as exc:
            log_to.warning("mlops_nb: compile on save of %s failed: %s", path, exc)
            _remember(root, path, str(exc), log_to)
            return []
        except Exception:  # noqa: BLE001 - a save must never fail because of us
            log_to.exception("mlops_nb: compile on save of %s failed", path)
            return []
        _remember(root, path, "", log_to)
    if result.written:
        log_to.info("mlops_nb: compiled %s after saving %s: wrote %s", root, path.name,
                    ", ".join(result.written))
    return list(result.written)


def _remember(root: Path, path: Path, error: str, log_to: logging.Logger) -> None:
    """Record (or clear, with no error) the failed compile for the notebook's kernel."""
    from mlops_nb.errors import MlopsNbError
    from mlops_nb.widgets import save_error

    try:
        save_error.record(root, path, error)
    except (OSError, MlopsNbError) as exc:  # a save must never fail because of us
        log_to.warning("mlops_nb: could not record the compile error: %s", exc)


def post_save(model: dict[str, Any], os_path: str, contents_manager: Any, **_: Any) -> None:
    """Jupyter Server's post-save hook."""
    if (model or {}).get("type") != "notebook":
        return
    compile_saved(Path(os_path), getattr(contents_manager, "log", None))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "mlops_nb.widgets.server_ext"}]


def _hook(manager: Any) -> None:
    if manager is not None and not getattr(manager, "_mlops_nb_hooked", False):
        manager.register_post_save_hook(post_save)
        manager._mlops_nb_hooked = True


def _load_jupyter_server_extension(serverapp: Any) -> None:
    _hook(serverapp.contents_manager)

    def again() -> None:
        # Extensions loaded after this one may replace the contents manager (Ploomber's
        # does): hook whatever manager serves requests once the server runs.
        _hook(serverapp.web_app.settings.get("contents_manager"))
        _hook(serverapp.contents_manager)

    io_loop = getattr(serverapp, "io_loop", None)
    if io_loop is not None:
        io_loop.add_callback(again)
    serverapp.log.info("mlops_nb: compile on save enabled")
