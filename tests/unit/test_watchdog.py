"""The step's watch on its runner: a runner that exited counts as gone even before anyone
reaps it; a runner's wait for a killed step's processes ends once none runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from mlops_nb.execute.stopping import group_members, wait_group_gone
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


def test_wait_group_gone_returns_once_the_group_has_no_live_process():
    # a group whose member lives until the test closes its stdin, and one that never ends
    member = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE, process_group=0)
    try:
        assert group_members(member.pid) == [member.pid]
        assert wait_group_gone(member.pid, seconds=0.2) == [member.pid]  # bounded
        done = threading.Event()
        left: list[int] = [-1]

        def wait() -> None:
            left[0:] = wait_group_gone(member.pid, seconds=60)
            done.set()

        waiter = threading.Thread(target=wait)
        waiter.start()
        assert not done.is_set()  # it cannot return while the member runs
        assert member.stdin is not None
        member.stdin.close()  # the member exits (a zombie until reaped below: gone)
        waiter.join(60)
        assert done.is_set() and left == []
    finally:
        member.kill()
        member.wait()
    assert group_members(member.pid) == []  # reaped: no process at all, no /proc scan
