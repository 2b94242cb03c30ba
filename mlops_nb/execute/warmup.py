"""Warm-up of the processes that fork steps (the fast runner, the warm worker).

What they import before forking, every later step inherits. Three sources, imported a module
at a time while a step runs on the other core (`advance`), so the runner stops as soon as the
step ends: what saving and loading outputs needs (`serializer_warmup`), what steps of earlier
runs had to import themselves (`learned_modules`), and what the step just run reports
(`ModuleReport`, then `deepen`). Never the project's own code: a warm worker must not hold
code the user may edit next.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from mlops_nb.artifacts import atomic
from mlops_nb.errors import ArtifactError


@contextmanager
def forking_gc() -> Iterator[None]:
    """The garbage collector set as Python's documentation advises for a process that forks
    without exec (see gc.freeze): off in the warm parent, frozen before each fork
    (`before_fork`), on again in each child (`in_child`).

    The parent only imports: with the collector on, importing pandas and scikit-learn runs
    some 360 collections, full ones among them, for 0.1-0.17 s and frees nothing that
    matters (peak memory is the same). Frozen, the parent's ~250k objects are never walked
    by a child's collections, which would otherwise copy every page they sit on (a full
    collection in a child took 0.13 s; 0.015 s frozen). The previous state comes back on exit.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


def before_fork() -> None:
    """Just before a fork: the parent's objects out of every later collection's reach."""
    gc.freeze()


def in_child() -> None:
    """In a forked step: the collector on, as in any Python process."""
    gc.enable()


def run_imports(source: str, folder: Path) -> None:
    """Execute a notebook's `imports` cell here, as its steps will see it (in the notebook's
    folder, with that folder importable); a failure is left for the step to report."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    here = os.getcwd()
    try:
        os.chdir(folder)
        from mlops_nb.notebook.magics import strip_magics

        exec(compile(strip_magics(source), "<imports>", "exec"), {})  # noqa: S102
    except BaseException:  # noqa: BLE001 - the step reports its own import errors
        pass
    finally:
        os.chdir(here)


def serializer_warmup() -> Iterator[None]:
    """Import what saving and loading outputs will need, one module per step of the iterator.

    skops costs 0.2-0.3 s to import even through artifacts.skops_io (it lists every
    scikit-learn estimator, importing all of scikit-learn's public modules). A runner
    advances this while a step runs on the other core and stops as soon as the step ends, so
    the import barely delays the next step; what is imported before a fork is inherited by
    every later step.
    """
    # what every step's own machinery imports: running cells, reading params.yaml, writing
    # and reading outputs (frames are Arrow IPC files: pyarrow.ipc and the pandas conversion;
    # Parquet's read path is imported by a step that needs it, and then reported), recording
    # it done
    for name in ("pyarrow.ipc", "IPython.utils.capture", "IPython.core.logger",
                 "pyarrow.pandas_compat", "ruamel.yaml",
                 "mlops_nb.execute.runtime", "mlops_nb.execute.state"):
        _quiet_import(name)
        yield
    if "sklearn" not in sys.modules:
        return
    # the largest single import first (~0.09 s: skops' estimator listing imports it, and
    # pytest with it), while the first step is surely still running: a step that ends in the
    # middle of an import waits for it, and the walk's imports are smaller
    _quiet_import("sklearn.utils._testing")
    yield
    import pkgutil

    import sklearn

    # the walk also imports the packages it passes (test data among them), as skops' own
    # walk would: one at a time here, so skops' import is left with little to do
    skip = {"tests", "externals", "setup", "conftest", "experimental", "estimator_checks"}
    for info in pkgutil.walk_packages(sklearn.__path__, prefix="sklearn."):
        if "._" not in info.name and not skip & set(info.name.split(".")):
            _quiet_import(info.name)
        yield
    try:
        from mlops_nb.artifacts import skops_io

        skops_io()
    except Exception:  # noqa: BLE001 - a step that saves a model reports the error itself
        pass
    yield


def deepen(names: list[str], root: Path) -> Iterator[None]:
    """Import, one per step of the iterator, the named modules that lie inside packages this
    process has already loaded (never a new top-level package: what the imports cell did
    not import stays out of the warm parent), except the project's own code under `root`
    (a warm worker must never hold code the user may edit next)."""
    for name in names:
        top = sys.modules.get(name.partition(".")[0])
        if name in sys.modules or top is None or project_file(top, root):
            continue
        _quiet_import(name)
        yield


def project_file(module: Any, root: Path) -> str | None:
    """The module's file when it is the project's own code (under root, not in a venv)."""
    f = getattr(module, "__file__", None) or ""
    inside = f.startswith(os.path.join(str(root), ""))
    return f if inside and f"{os.sep}.venv{os.sep}" not in f else None


LEARNED = "warm-modules.json"


def learned_modules(state: Path) -> list[str]:
    """The modules earlier runs' steps had to import themselves (see ModuleReport)."""
    try:
        names = json.loads((state / LEARNED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def remember_modules(state: Path, known: list[str], new: list[str]) -> list[str]:
    """Add `new` to what is remembered for the next run; returns the updated list."""
    added = [n for n in new if n not in set(known)]
    if not added:
        return known
    names = (known + added)[-3000:]
    try:
        atomic.write_text(state / LEARNED, json.dumps(names), root=state.parent)
    except (OSError, ArtifactError):
        pass
    return names


class ModuleReport:
    """A forked step's last word to its warm parent, through a pipe: its exit code and the
    modules it had to import itself.

    With the code in hand the parent goes on at once instead of waiting out the exit of a
    process of some 300 MB (about 0.01 s of unmapping); it reaps the process later. The
    parent imports the reported modules (`deepen`) while later steps run, so they inherit
    them: pyarrow's Parquet path, scikit-learn's lazily loaded parts, whatever steps pull in.
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        self._before: frozenset[str] = frozenset()
        self._data = b""
        self._message: dict[str, Any] | None = None
        self.at_eof = False  # the child ended (or closed its end) without more to say

    def child_started(self) -> None:
        os.close(self._r)
        self._before = frozenset(sys.modules)

    def child_ending(self, code: int) -> None:
        """Report, as the step's very last act before os._exit(code)."""
        try:
            new = sorted(set(sys.modules) - self._before)[:2000]  # fits the pipe's buffer
            os.set_blocking(self._w, False)
            os.write(self._w, json.dumps({"code": code, "modules": new}).encode() + b"\n")
        except (OSError, TypeError, ValueError):
            pass
        finally:
            os.close(self._w)

    def exit(self, code: int) -> NoReturn:
        """End the forked step: flush its output, report `code`, leave without cleanup."""
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            self.child_ending(code)
        finally:
            os._exit(code)

    def parent_forked(self) -> None:
        os.close(self._w)
        os.set_blocking(self._r, False)

    def fileno(self) -> int:
        """Readable once the child reported (or ended): for select()."""
        return self._r

    def code(self) -> int | None:
        """The exit code the child reported, None while it has not (or died first).

        Never waits: a process the step forked may still hold the pipe open."""
        if self._message is None and self._r >= 0:
            try:
                while chunk := os.read(self._r, 65536):
                    self._data += chunk
                self.at_eof = True
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._data, self.at_eof = b"", True
            if self._data.endswith(b"\n"):
                try:
                    message = json.loads(self._data)
                except ValueError:
                    message = {}
                self._message = message if isinstance(message, dict) else {}
        code = (self._message or {}).get("code")
        return code if type(code) is int else None

    def received(self) -> list[str]:
        """The modules the child reported ([] if it died before reporting); closes the pipe."""
        self.code()
        self.close()
        names = (self._message or {}).get("modules")
        return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []

    def close(self) -> None:
        if self._r >= 0:
            try:
                os.close(self._r)
            except OSError:
                pass
            self._r = -1


def warm_serializers() -> None:
    """All of serializer_warmup at once."""
    for _ in serializer_warmup():
        pass


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_DONE = object()


def advance(warmup: Iterator[None]) -> bool:
    """Do one import of `warmup`; False once nothing is left. Ctrl-C and SIGTERM are held
    back during it and delivered after, so an interrupt never leaves a half-imported module
    in a process that forks later steps."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        return next(warmup, _DONE) is not _DONE
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _quiet_import(name: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - a step that needs it reports the error itself
            pass
