"""The warm worker against other users and hostile or idle requests (the README's threat model).

Each test talks to a real worker started by a real `dvc repro`, in a socket folder of the
test's own (TMPDIR), so that changing its mode never touches another test's workers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import alive, git_project, make_nb, sh, tool_env, worker_pids

pytestmark = pytest.mark.slow

WHO = ("import os, pathlib\n"
       "pathlib.Path(f'ran-{STEP}').write_text(open(f'/proc/{os.getppid()}/cmdline').read())")

# a client of the worker's protocol that needs only the standard library (a second user runs
# it too): connect, send one request with our stdin/stdout/stderr, print what came back
CLIENT = r"""
import json, os, socket, sys
path, request = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(path)
except OSError as exc:
    print(json.dumps({"connect_errno": exc.errno}), flush=True)
    sys.exit(0)
if request == "idle":  # say nothing; report when the worker hangs up
    print(json.dumps({"connected": True}), flush=True)
    print(json.dumps({"closed_by_worker": s.recv(1) == b""}), flush=True)
    sys.exit(0)
if request == "partial":
    socket.send_fds(s, [b'{"step": "a"'], [0, 1, 2])
    print(json.dumps({"connected": True}), flush=True)
    print(json.dumps({"closed_by_worker": s.recv(1) == b""}), flush=True)
    sys.exit(0)
req = json.loads(request)
req.setdefault("env", dict(os.environ))
try:
    socket.send_fds(s, [json.dumps(req).encode() + b"\n"], [0, 1, 2])
    reply = s.makefile("r").read()
except OSError as exc:
    reply = f"error {exc.errno}"
print(json.dumps({"reply": reply}), flush=True)
"""


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A TMPDIR of the test's own, that a second user can traverse (pytest's is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="mnb-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _project(root: Path) -> None:
    make_nb(root / "notebooks/nb.ipynb", [
        (["step:a"], f"STEP = 'a'\n{WHO}\nx = 1"),
        (["step:b"], f"STEP = 'b'\n{WHO}\ny = x + 1"),
        (["step:c"], f"STEP = 'c'\n{WHO}\nz = y + 1\nseen_hash = hash('abc')"),
        (["pipeline-metrics"], "print(z)\nprint(seen_hash)"),
    ])
    git_project(root)
    sh(["mlops-nb", "compile"], root)


def _env(sockets: Path, **extra: str) -> dict[str, str]:
    return tool_env(TMPDIR=str(sockets), **extra)


def _repro(root: Path, sockets: Path, *args: str, **extra: str
           ) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["dvc", "repro", *args], cwd=root, env=_env(sockets, **extra),
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    return res


def _socket(root: Path, sockets: Path) -> Path:
    code = ("from pathlib import Path; from mlops_nb.execute.worker_socket import socket_path;"
            " print(socket_path(Path('.').resolve()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=_env(sockets),
                         capture_output=True, text=True, check=True).stdout.strip()
    path = Path(out)
    assert path.is_socket(), f"no worker socket at {path}"
    return path


def _client(root: Path, sockets: Path, path: Path, request: str, *,
            user: str | None = None) -> dict[str, object]:
    python = sys.executable if user is None else SYSTEM_PYTHON
    res = subprocess.run([python, "-I", "-c", CLIENT, str(path), request],
                         cwd="/", env=_env(sockets), capture_output=True, text=True,
                         timeout=120, user=user, group=user)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout.splitlines()[-1]))


def _ran_in_worker(root: Path, step: str) -> bool:
    return "mlops_nb.execute.worker" in (root / f"notebooks/ran-{step}").read_text()


SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's may sit under root's home, closed to others


@pytest.fixture
def second_user() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create a second local user")
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"the second user needs {SYSTEM_PYTHON}")
    name = f"mnbt{os.getpid() % 100000}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


def test_a_second_local_user_is_refused_by_folder_and_by_peer_check(project, sockets,
                                                                     second_user):
    _project(project)
    _repro(project, sockets)
    path = _socket(project, sockets)
    for ran in project.glob("notebooks/ran-*"):
        ran.unlink()
    attack = json.dumps({"step": "a", "root": str(project), "env": {}})
    # the socket's folder is 0700: the other user cannot even reach the socket
    assert _client(project, sockets, path, attack, user=second_user) == {"connect_errno": 13}
    # opened up by mistake: the worker still checks who connects (SO_PEERCRED) and hangs up
    path.parent.chmod(0o711)
    path.chmod(0o666)
    try:
        reply = _client(project, sockets, path, attack, user=second_user)
    finally:
        path.parent.chmod(0o700)
    assert reply == {"reply": ""} or str(reply.get("reply", "")).startswith("error")
    assert not list(project.glob("notebooks/ran-*"))  # nothing ran for them
    uid = int(subprocess.run(["id", "-u", second_user], capture_output=True, text=True,
                             check=True).stdout)
    assert f"refused a connection from uid {uid}" in (project / ".mlops_nb/worker.log"
                                                      ).read_text()


def test_step_names_are_the_projects_own_and_the_root_is_never_taken(project, tmp_path,
                                                                     sockets):
    _project(project)
    _repro(project, sockets)
    path = _socket(project, sockets)
    evil = tmp_path / "evil"
    make_nb(evil / "notebooks/evil.ipynb", [
        (["step:a"], "import pathlib\npathlib.Path('pwned').write_text('1')\nq = 1"),
        (["step:evil"], "import pathlib\npathlib.Path('pwned').write_text('1')\nw = q"),
    ])
    git_project(evil)
    sh(["mlops-nb", "compile"], evil)
    for step in ("../../evil/steps/evil", "evil", "a/../a", "A", "a\n"):
        reply = _client(project, sockets, path, json.dumps({"step": step, "root": str(evil)}))
        assert '"refused"' in str(reply["reply"]), (step, reply)
    # a step of the worker's own project, with a foreign root: the worker's root is used
    reply = _client(project, sockets, path, json.dumps({"step": "a", "root": str(evil),
                                                         "cwd": str(evil)}))
    assert '"code": 0' in str(reply["reply"]), reply
    assert _ran_in_worker(project, "a")
    assert not (evil / "notebooks/pwned").exists() and not (evil / "pwned").exists()


def test_an_idle_connection_never_blocks_the_next_dvc_repro(project, sockets):
    _project(project)
    _repro(project, sockets)
    path = _socket(project, sockets)
    holders = [subprocess.Popen([sys.executable, "-I", "-c", CLIENT, str(path), kind],
                                env=_env(sockets), stdout=subprocess.PIPE, text=True)
               for kind in ("idle", "partial")]
    try:
        for h in holders:
            assert h.stdout is not None
            assert json.loads(h.stdout.readline()) == {"connected": True}
        for ran in project.glob("notebooks/ran-*"):
            ran.unlink()
        _repro(project, sockets, "--force")  # before the fix, this hung for good
        assert _ran_in_worker(project, "c")
        # and the worker hangs up on them after its receive timeout
        for h in holders:
            out, _ = h.communicate(timeout=60)
            assert json.loads(out.splitlines()[-1]) == {"closed_by_worker": True}
    finally:
        for h in holders:
            h.kill()
            h.wait()


def test_the_worker_exits_when_its_project_folder_is_gone(project, sockets):
    _project(project)
    _repro(project, sockets)
    pids = worker_pids(project)
    assert pids
    shutil.rmtree(project)
    deadline = time.monotonic() + 15  # its idle limit in tests is 30 s
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, "the worker outlived its project"
        time.sleep(0.1)


def test_start_up_variables_pick_the_worker(project, sockets):
    _project(project)
    seeds = {}
    for seed in ("1", "2"):
        _repro(project, sockets, "--force", PYTHONHASHSEED=seed, OMP_NUM_THREADS=seed)
        assert _ran_in_worker(project, "c")
        seeds[seed] = json.loads((project / "outputs/c/metrics.json").read_text())["seen_hash"]
        fresh = subprocess.run([sys.executable, "-c", "print(hash('abc'))"], text=True,
                               env=_env(sockets, PYTHONHASHSEED=seed), capture_output=True,
                               check=True).stdout
        assert seeds[seed] == int(fresh)  # what a process started with that seed computes
    assert seeds["1"] != seeds["2"]


def test_an_unsafe_socket_folder_means_no_worker_and_nothing_written_there(project,
                                                                           sockets):
    _project(project)
    elsewhere = sockets / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (sockets / f"mlops-nb-{os.getuid()}").symlink_to(elsewhere)
    _repro(project, sockets)
    assert json.loads((project / "outputs/c/metrics.json").read_text())["z"] == 3
    assert not _ran_in_worker(project, "c")
    assert not list(elsewhere.iterdir())
    assert not worker_pids(project)


def test_the_worker_never_warms_up_a_hand_edited_step_notebook(project, sockets):
    """What a worker runs before any request is checked is the imports cell of a step
    notebook as compile wrote it: an edited one is not imported at start-up."""
    make_nb(project / "notebooks/nb.ipynb", [(["imports"], "import os"), (["step:a"], "x = 1")])
    git_project(project)
    sh(["mlops-nb", "compile"], project)
    marker = project / "warmed-an-edit"
    step = project / "steps/a.ipynb"
    doc = json.loads(step.read_text())
    edited = [c for c in doc["cells"] if c["metadata"].get("mlops_nb", {}).get("role")
              == "imports"]
    assert edited, "the step notebook has no imports cell"
    edited[0]["source"] = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('1')\n"
    step.write_text(json.dumps(doc))
    res = subprocess.run(["dvc", "repro"], cwd=project, env=_env(sockets, MLOPS_NB_WORKER_IDLE="2"),
                         capture_output=True, text=True, timeout=240)
    assert res.returncode != 0 and "steps/a.ipynb" in res.stderr, res.stderr
    deadline = time.monotonic() + 60  # the worker warms up, idles 2 s, then exits
    while worker_pids(project):
        assert time.monotonic() < deadline, "the worker never exited"
        time.sleep(0.1)
    assert not marker.exists()


def test_requests_that_arrive_together_are_not_queued_behind_each_other(project, sockets):
    """Two requests complete at once (here: while the worker still imports a slow imports
    cell): one runs, the other is answered busy at once, so its stage runs the step itself
    (Ploomber's parallel executor hands steps over side by side), never held until the first
    step ends."""
    make_nb(project / "notebooks/nb.ipynb", [
        (["imports"], "import time\ntime.sleep(3)"),
        (["step:a"], "import pathlib\nfor _ in range(600):\n"
                     "    if pathlib.Path('release').exists():\n        break\n"
                     "    time.sleep(0.1)\nx = 1"),
    ])
    git_project(project)
    sh(["mlops-nb", "compile"], project)
    start = ("from pathlib import Path; from mlops_nb.execute import worker;"
             " worker.start(Path.cwd())")
    subprocess.run([sys.executable, "-c", start], cwd=project, env=_env(sockets), check=True)
    deadline = time.monotonic() + 60
    while True:  # it listens at once, then imports the imports cell (3 s) before it reads
        try:
            path = _socket(project, sockets)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the worker never listened"
            time.sleep(0.05)
    request = json.dumps({"step": "a"})
    clients = [subprocess.Popen([sys.executable, "-I", "-c", CLIENT, str(path), request],
                                env=_env(sockets), stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while all(c.poll() is None for c in clients):
            assert time.monotonic() < deadline, "both requests wait for one step to end"
            time.sleep(0.05)
        first = next(c for c in clients if c.poll() is not None)
        assert first.stdout is not None
        assert '"busy": true' in json.loads(first.stdout.read().splitlines()[-1])["reply"]
        (project / "notebooks/release").write_text("1")
        other = next(c for c in clients if c is not first)
        out, _ = other.communicate(timeout=60)
        assert '"code": 0' in json.loads(out.splitlines()[-1])["reply"]
    finally:
        for c in clients:
            c.kill()
            c.wait()
