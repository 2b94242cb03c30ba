"""The package's one root exception and its subclasses.

Every error the library raises on purpose derives from `MlopsNbError`; the CLI maps each
class to an exit code (the list is in cli/__init__.py and the README). Messages say what is
wrong, where (file, cell, step) and what to do next.
"""

from __future__ import annotations


class MlopsNbError(Exception):
    """Root of every error mlops_nb raises on purpose."""

    exit_code = 1


class UsageError(MlopsNbError):
    """The command was called wrongly (unknown step, missing project...)."""

    exit_code = 2


class NotebookError(MlopsNbError):
    """A notebook cannot be compiled: bad JSON, bad tag, bad parameters cell..."""

    exit_code = 3

    def __init__(self, path: str, message: str, cell: int | None = None) -> None:
        self.path = path
        self.cell = cell
        where = path if cell is None else f"{path} cell {cell}"
        super().__init__(f"{where}: {message}")


class NoStepsError(NotebookError):
    """A notebook has no `step:` tag at all (an exploration notebook, not yet tagged)."""


class PipelineError(MlopsNbError):
    """The steps do not form a valid pipeline (cycle, unknown or duplicate step)."""

    exit_code = 3


class StaleError(MlopsNbError):
    """Generated files do not match the notebooks (`compile --check`)."""

    exit_code = 4


class StepFailed(MlopsNbError):
    """A step raised, died or was interrupted while running."""

    exit_code = 5

    def __init__(self, step: str, message: str, executed: str | None = None) -> None:
        self.step = step
        self.executed = executed
        self.cell_traceback = ""  # the failing cell's own traceback, when a cell raised
        tail = f"; open {executed} to see what ran" if executed else ""
        super().__init__(f"step '{step}' failed: {message}{tail}")


class ArtifactError(MlopsNbError):
    """A step output is missing, corrupted or cannot be written."""

    exit_code = 6


class ConfigError(MlopsNbError):
    """params.yaml or another config file cannot be read."""

    exit_code = 3

    def __init__(self, path: str, message: str, line: int | None = None,
                 column: int | None = None) -> None:
        self.path = path
        self.line = line
        where = path if line is None else f"{path}:{line}" + (f":{column}" if column else "")
        super().__init__(f"{where}: {message}")


class DataValidationError(MlopsNbError):
    """Data broke its schema or drifted past a threshold (a blocking data check)."""

    exit_code = 7

    def __init__(self, name: str, problems: list[str], report: str | None = None) -> None:
        self.name = name
        self.problems = problems
        self.report = report
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        tail = f"; see {report}" if report else ""
        super().__init__(f"data '{name}' failed validation: {shown}{tail}")


class ModelBlockedError(MlopsNbError):
    """A candidate model did not pass the gate and the pipeline was told to fail on it."""

    exit_code = 8

    def __init__(self, model: str, reasons: list[str]) -> None:
        self.model = model
        self.reasons = reasons
        super().__init__(f"model '{model}' blocked by the gate: {'; '.join(reasons)}")


class RegistryError(MlopsNbError):
    """A model or version is unknown, unreadable, or cannot be stored."""

    exit_code = 9


class UnsafeModelError(RegistryError):
    """A stored model would run code on load (a pickle) and loading it was not allowed."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self.format = fmt
        super().__init__(
            f"{path} is a {fmt} file, which can run arbitrary code when loaded; refusing to"
            " load it. Pass allow_pickle=True only if you trust its origin"
        )


class LineageError(MlopsNbError):
    """The lineage store cannot be read or written, or has no such record."""

    exit_code = 10


def exit_code_of(error_name: str) -> int | None:
    """The exit code of an mlops_nb error from its class name, as papermill reports a cell's
    exception (`PapermillExecutionError.ename`), so a step failed by a guard can exit 7 or 8."""
    pending: list[type[MlopsNbError]] = [MlopsNbError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == error_name:
            return cls.exit_code
        pending += cls.__subclasses__()
    return None


class LockError(MlopsNbError):
    """Another run holds the project's run lock, or the lock file is unusable."""

    exit_code = 11


class RetrainRunning(LockError):
    """`monitor --retrain`: another retraining of the project is running (its lock is held)."""

    exit_code = 15


class StepTimedOut(StepFailed):
    """A step ran longer than its timeout; its executed notebook is kept."""

    exit_code = 12


class StepCrashed(StepFailed):
    """A step's process died (killed, out of memory, os._exit); its notebook is kept."""

    exit_code = 13


class Interrupted(MlopsNbError):
    """The run was stopped by Ctrl-C or SIGTERM; nothing was recorded as done."""

    exit_code = 130


class DriftDetected(MlopsNbError):
    """Served data drifted from the model's training data past the threshold (monitor)."""

    exit_code = 14

    def __init__(self, model: str, columns: list[str], report: str) -> None:
        self.model = model
        self.columns = columns
        self.report = report
        super().__init__(f"served data of {model} drifted ({', '.join(columns)}); see {report}")


class ExportError(PipelineError):
    """The pipeline cannot be exported to another engine as it is (a step would not run on a
    cluster: it hands on a file handle, or writes files outside its outputs)."""

    def __init__(self, step: str | None, message: str) -> None:
        self.step = step
        super().__init__(f"step '{step}': {message}" if step else message)


class NotebookTestsFailed(MlopsNbError):
    """A `test` cell failed or could not run (`mlops-nb test`, `mlops-nb ci run`)."""

    exit_code = 20


class CiFailed(MlopsNbError):
    """A check of `mlops-nb ci run` failed (its report says which and why)."""

    exit_code = 21


class RetrainFailed(MlopsNbError):
    """The retraining a trigger started failed (its log names the step)."""

    exit_code = 22


class DeployRefused(MlopsNbError):
    """`deploy` stopped at a failed check (fresh environment, limits, smoke or load test);
    the version's stage did not move."""

    exit_code = 23
