"""The step's watch on its runner: a runner that exited counts as gone even before anyone
reaps it."""

from __future__ import annotations

import os

from mlops_nb.execute.watchdog import alive


def test_a_zombie_is_not_alive():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        # not reaped: it stays in the process table as a zombie until waitpid below
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        assert info is not None and info.si_pid == pid
        assert os.path.exists(f"/proc/{pid}")
        assert not alive(pid)
    finally:
        os.waitpid(pid, 0)
    assert not alive(pid)


def test_a_running_process_is_alive():
    assert alive(os.getpid())
    assert alive(1)
