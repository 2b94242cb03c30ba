"""The fast runner's wait for a step: warm-up imports stop short of the step's expected end."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from mlops_nb.execute.fastrun import WarmRunner
from mlops_nb.execute.warmup import ModuleReport


def _step_taking(seconds: float, report: ModuleReport) -> int:
    pid = os.fork()
    if pid == 0:  # a step doing its work, then reporting its end
        report.child_started()
        time.sleep(seconds)
        report.child_ending(0)
        os._exit(0)
    report.parent_forked()
    return pid


def _imports_done(tmp_path, expected: float | None) -> int:
    runner = WarmRunner(tmp_path)
    done = []

    def endless() -> Iterator[None]:
        while True:
            done.append(1)
            yield

    runner._warmup = endless()
    report = ModuleReport()
    pid = _step_taking(0.2, report)
    assert runner._wait(pid, report, expected) == (0, 0)
    runner.close()
    return len(done)


def test_warm_up_runs_while_a_step_runs_but_not_near_its_expected_end(tmp_path):
    assert _imports_done(tmp_path, None) > 0  # no history: warm up all along
    assert _imports_done(tmp_path, 10.0) > 0  # far from its end
    assert _imports_done(tmp_path, 0.05) == 0  # it ran 0.05 s last time: start nothing
