"""The package's one root exception and its subclasses.

Every error the library raises on purpose derives from `MlopsNbError`; the CLI maps each
class to an exit code (see `EXIT_CODES` in cli.py and the README). Messages say what is
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
