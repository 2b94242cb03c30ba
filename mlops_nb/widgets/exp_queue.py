"""What DVC's queue did: each experiment's state and, for a failure, why (`dvc queue logs`).

`dvc exp run --run-all` exits 0 even when every task failed, so its exit code says nothing
about the experiments: the outcome is read back from `dvc exp show` (each experiment's
executor state) and a failed one's reason from its log. Pure apart from `log` and `outcome`,
which run DVC's own commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops_nb.widgets import background
from mlops_nb.widgets import experiments as exp

UNKNOWN = "unknown"  # started, but `dvc exp show` no longer lists it


@dataclass(frozen=True)
class Ran:
    name: str
    state: str  # exp.QUEUED, RUNNING, SUCCESS, FAILED or UNKNOWN
    reason: str = ""  # a failure's cause, from its log


def log(root: Path, name: str) -> str:
    """`dvc queue logs NAME`: the output of a queued experiment's run."""
    res = background.run_sync(background.dvc_command("queue", "logs", name), root)
    if res.returncode != 0:
        raise exp.ExperimentsError(f"dvc queue logs {name} failed: "
                                   f"{background.last_line(res.stderr) or res.returncode}"
                                   " (only queued experiments keep a log)")
    return res.stdout


def reason(text: str) -> str:
    """The line of a log that says why the run failed: mlops-nb's own message (it names the
    step, the cell and the executed notebook), else DVC's last error, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("mlops-nb: "):
            return ln
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    return errors[-1] if errors else (lines[-1] if lines else "")


def states(rows: Sequence[exp.ExpRow], names: Sequence[str]) -> list[Ran]:
    """The state of each named experiment (in the given order)."""
    by = {r.name: r for r in rows if r.kind == "experiment"}
    return [Ran(n, by[n].state if n in by else UNKNOWN) for n in names]


def summary(ran: Sequence[Ran]) -> str:
    """One line: `2 of 3 failed: a (why), b (why)`, or `3 of 3 succeeded`."""
    total = len(ran)
    failed = [r for r in ran if r.state == exp.FAILED]
    if failed:
        why = ", ".join(f"{r.name} ({r.reason})" if r.reason else r.name for r in failed)
        return f"{len(failed)} of {total} failed: {why}; `dvc queue logs NAME` shows a log"
    good = sum(r.state == exp.SUCCESS for r in ran)
    rest = [f"{r.name} {r.state}" for r in ran if r.state != exp.SUCCESS]
    return f"{good} of {total} succeeded" + (f" ({', '.join(rest)})" if rest else "")


def outcome(root: Path, names: Sequence[str]) -> list[Ran]:
    """The states of the experiments a queue run started, with each failure's reason."""
    out = []
    for r in states(exp.load(root), names):
        if r.state == exp.FAILED:
            try:
                r = Ran(r.name, r.state, reason(log(root, r.name)))
            except exp.ExperimentsError:
                pass
        out.append(r)
    return out
