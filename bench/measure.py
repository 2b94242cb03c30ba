"""Time one command as a whole process, and take its peak memory.

Wall time is `time.perf_counter()` around spawn-to-reap of the process, so interpreter start,
imports, kernel start and shutdown all count, as a user waiting at the prompt would see them.
Peak memory is `ru_maxrss` from `os.wait4` on that process: the largest resident set of the
process and every descendant it waited for (one process, not the sum of the tree), measured
through a tiny launcher (see LAUNCHER). Processes
the command leaves running (a resident worker, say) are not in that figure, so they are
listed, with their resident memory, as survivors.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Sample:
    seconds: float
    peak_mb: float
    returncode: int
    output: str
    cpu_seconds: float  # user + system time of the process and the children it waited for
    other_cpu: float = 0.0  # CPU seconds used meanwhile by processes outside this command
    survivors: tuple[str, ...] = field(default=())
    survivor_mb: float = 0.0


MARK = "MLOPS_NB_BENCH_RUN"  # set in every benchmarked command's environment; children inherit it


def _new_processes(before: set[int], since: float, token: str) -> list[psutil.Process]:
    """Still-running processes started after `since` whose environment carries our mark."""
    found = []
    for proc in psutil.process_iter(["pid", "create_time", "uids"]):
        info = proc.info
        if info["pid"] in before or info["create_time"] < since - 1:
            continue
        if info["uids"] is None or info["uids"].real != os.getuid():
            continue
        try:
            if proc.environ().get(MARK) == token:
                found.append(proc)
        except psutil.Error:
            continue
    return found


# A small launcher stands between the harness and the command: on Linux a child's ru_maxrss
# starts at the memory of the process it was forked from, so forking the command straight
# from this (larger) harness would add the harness's size to every small command's figure.
# The launcher imports next to nothing; it times fork-to-reap itself, so its own start is
# not counted, and writes "seconds maxrss_kb exit_code cpu_seconds" to the file argv[1].
LAUNCHER = """\
import os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(out, "w") as f:
    cpu = usage.ru_utime + usage.ru_stime
    f.write(f"{seconds!r} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)} {cpu!r}")
"""


def _busy_cpu_seconds() -> float:
    """CPU seconds this machine's processes have run since boot (all cores).

    Linux counts guest time inside user time, and steal is the hypervisor's, not ours.
    """
    t = psutil.cpu_times()
    return sum(t) - sum(getattr(t, f, 0.0) for f in
                        ("idle", "iowait", "guest", "guest_nice", "steal"))


def run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> Sample:
    """Run cmd once; its output is appended to log and returned for checks."""
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    env = {**env, MARK: token}
    result = log.with_name(f".sample-{token}")
    before = set(psutil.pids())
    wall_start = time.time()
    with open(log, "ab") as out:
        out.write(f"\n$ (cd {cwd} && {' '.join(cmd)})\n".encode())
        out.flush()
        offset = out.tell()
        busy = _busy_cpu_seconds()
        subprocess.run([sys.executable, "-I", "-S", "-c", LAUNCHER, str(result), *cmd],
                       cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                       stderr=subprocess.STDOUT, check=True)
        busy = _busy_cpu_seconds() - busy
    seconds_text, maxrss_kb, returncode, cpu_text = result.read_text().split()
    result.unlink()
    with open(log, "rb") as f:
        f.seek(offset)
        output = f.read().decode(errors="replace")
    survivors, survivor_mb = [], 0.0
    for p in _new_processes(before, wall_start, token):
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            survivor_mb += p.memory_info().rss / 2**20
            survivors.append(" ".join(p.cmdline())[:120])
        except psutil.Error:
            continue
    cpu = float(cpu_text)
    return Sample(float(seconds_text), int(maxrss_kb) / 1024, int(returncode), output,
                  cpu, max(0.0, busy - cpu), tuple(survivors), survivor_mb)


def run_quiet(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    """An untimed set-up command; raises when it fails."""
    with open(log, "ab") as out:
        out.write(f"\n$ (setup; cd {cwd} && {' '.join(cmd)})\n".encode())
        out.flush()
        res = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise RuntimeError(f"set-up `{' '.join(cmd)}` failed in {cwd}; see {log}")
