"""Time one command as a whole process, and take its CPU time and peak memory.

Wall time is spawn-to-reap of the process, so interpreter start, imports, kernel start and
shutdown all count, as a user waiting at the prompt would see them. CPU time and peak memory
come from `os.wait4` on that process: user+system time of it and every descendant it waited
for, and the largest resident set among them (one process, not the sum of the tree). Both are
taken through a tiny launcher (see LAUNCHER).

A command may hand its work to a resident process (a warm worker started by an earlier
command, which outlives it). Every command runs with the benchmark session's mark in its
environment, which such a process inherits; so each sample also adds the CPU time that
marked resident processes spent during it, and counts their peak memory (VmHWM, a lifetime
high-water mark) when they did work during it. Marked processes still running at the end of
a sample are named, and `stop_residents` ends them (by pid) when the benchmark is done.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SESSION = "MLOPS_NB_BENCH_SESSION"  # in every benchmarked command's environment
BUSY = 0.05  # CPU seconds a resident process must use in a sample to count as working in it


@dataclass(frozen=True)
class Sample:
    seconds: float
    peak_mb: float  # largest process: the command's tree, or a resident that worked for it
    returncode: int
    output: str
    cpu_seconds: float  # the command's tree plus resident processes' work during it
    other_cpu: float = 0.0  # CPU seconds used meanwhile by processes not of this benchmark
    started: tuple[str, ...] = field(default=())  # resident processes this command left
    used: tuple[str, ...] = field(default=())  # earlier residents that worked during it


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def residents(session: str) -> dict[int, psutil.Process]:
    """Live processes carrying this benchmark session's mark (the harness itself excluded)."""
    found = {}
    for proc in psutil.process_iter(["pid", "uids"]):
        if proc.info["pid"] == os.getpid():
            continue
        uids = proc.info["uids"]
        if uids is None or uids.real != os.getuid():
            continue
        try:
            if proc.environ().get(SESSION) == session and proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = proc
        except psutil.Error:
            continue
    return found


def _cpu_of(procs: dict[int, psutil.Process]) -> dict[int, float]:
    out = {}
    for pid, proc in procs.items():
        try:
            out[pid] = _cpu(proc)
        except psutil.Error:
            continue
    return out


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:120]
    except psutil.Error:
        return "?"


def _inside(proc: psutil.Process, folder: Path) -> bool:
    """The process works for `folder`: its cwd or one of its arguments lies inside it."""
    base = str(folder.resolve())
    try:
        places = [proc.cwd(), *proc.cmdline()]
    except psutil.Error:
        return False
    return any(p == base or p.startswith(base + os.sep) for p in places)


def stop_residents(session: str, under: Path | None = None, grace: float = 5.0) -> list[str]:
    """End the resident processes this benchmark's commands left behind (those working for
    the project `under`, or all), by pid."""
    procs = {pid: p for pid, p in residents(session).items()
             if under is None or _inside(p, under)}
    for proc in procs.values():
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(list(procs.values()), timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            continue
    return [f"{p.pid}" for p in procs.values()]


def _busy_cpu_seconds() -> float:
    """CPU seconds this machine's processes have run since boot (all cores).

    Linux counts guest time inside user time, and steal is the hypervisor's, not ours.
    """
    t = psutil.cpu_times()
    return sum(t) - sum(getattr(t, f, 0.0) for f in
                        ("idle", "iowait", "guest", "guest_nice", "steal"))


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
cpu = usage.ru_utime + usage.ru_stime
with open(out, "w") as f:
    f.write(f"{seconds!r} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)} {cpu!r}")
"""


def run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> Sample:
    """Run cmd once (env must carry SESSION); output is appended to log and returned."""
    session = env[SESSION]
    result = log.with_name(f".sample-{os.getpid()}-{time.monotonic_ns()}")
    before = residents(session)
    cpu_before = _cpu_of(before)
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
    after = residents(session)
    cpu_after = _cpu_of(after)
    started, used, resident_cpu, peak = [], [], 0.0, int(maxrss_kb) / 1024
    for pid, proc in after.items():
        spent = cpu_after.get(pid, 0.0) - cpu_before.get(pid, 0.0)
        if pid not in before:
            started.append(_cmdline(proc))
        elif spent >= BUSY:
            used.append(_cmdline(proc))
        if spent >= BUSY:
            resident_cpu += spent
            peak = max(peak, _hwm_mb(pid))
    own_cpu = float(cpu_text)
    total_cpu = own_cpu + resident_cpu
    return Sample(float(seconds_text), peak, int(returncode), output, total_cpu,
                  max(0.0, busy - total_cpu), tuple(started), tuple(used))


def run_quiet(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    """An untimed set-up command; raises when it fails."""
    with open(log, "ab") as out:
        out.write(f"\n$ (setup; cd {cwd} && {' '.join(cmd)})\n".encode())
        out.flush()
        res = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise RuntimeError(f"set-up `{' '.join(cmd)}` failed in {cwd}; see {log}")
