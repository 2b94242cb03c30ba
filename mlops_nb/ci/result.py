"""The outcome of `mlops-nb ci run`: each check, and the figures the report shows."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlops_nb.ci import celltests

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class Check:
    name: str
    outcome: str = SKIPPED
    seconds: float = 0.0
    detail: str = ""  # one line: why skipped, the count of tests...
    output: str = ""  # the tail of a failed command's output


@dataclass
class CiResult:
    commit: str
    base: str | None  # the base commit, None when it does not exist
    base_ref: str
    dirty: bool
    checks: list[Check] = field(default_factory=list)
    cells: list[celltests.CellResult] = field(default_factory=list)
    metrics_md: str = ""
    params_md: str = ""
    metrics_diff: dict = field(default_factory=dict)
    models: list[dict] = field(default_factory=list)
    validation: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.outcome == FAILED]
