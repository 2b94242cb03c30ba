"""The fresh environment a deploy loads the model in: a venv made by uv from the project's lock.

Rule: the environment holds exactly what the project's lock pins (`requirements.lock`, else
`requirements.txt`, at the project's root; hashes are required when the lock has them) plus
mlops_nb itself, installed without its dependencies, so a package the model needs and the lock
lacks fails here, not in production. One environment per digest of (lock, Python, mlops_nb's
source) lives in the user's cache, `<cache>/mlops_nb/deploy-envs/<digest>` (the cache as
artifacts/trust.py finds it): the folders are the user's own (mode 0700; a link, or a folder of
another user or writable by others, is refused), an environment is built in a fresh temporary
folder beside and renamed into place only when complete, and reused afterwards. No bytecode
is compiled when it is built (the lock holds far more than a deploy imports): the processes
deploy starts in it write the bytecode of what they import (process_env), so only the first
deploy from an environment compiles pandas and scikit-learn (on a machine that sets
PYTHONDONTWRITEBYTECODE, every process would: 5 s instead of 2 s of CPU each).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from mlops_nb.artifacts import trust
from mlops_nb.errors import DeployRefused, UsageError

log = logging.getLogger(__name__)

UV_VERSION = "0.13.9"  # the one scripts/setup.sh pins
LOCK_NAMES = ("requirements.lock", "requirements.txt")
_DONE = ".mlops_nb-complete"


def find_lock(root: Path) -> Path:
    """The project's lock: the first of LOCK_NAMES at its root that is a regular file."""
    for name in LOCK_NAMES:
        path = root / name
        if path.is_symlink():
            raise UsageError(f"{path} is a symlink; deploy reads the project's own lock only")
        if path.is_file():
            return path
    raise UsageError(f"{root} has no {' or '.join(LOCK_NAMES)}: deploy builds a fresh"
                     " environment from the project's pinned packages; write one (e.g. `uv pip"
                     " compile pyproject.toml --generate-hashes -o requirements.lock`)")


def find_uv() -> Path:
    """uv: the one scripts/setup.sh installs (${XDG_CACHE_HOME:-~/.cache}/mlops_nb/
    uv-VERSION), else one on PATH."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    home = Path(xdg) if xdg and os.path.isabs(xdg) else Path(os.path.expanduser("~/.cache"))
    pinned = home / "mlops_nb" / f"uv-{UV_VERSION}" / "bin" / "uv"
    if pinned.is_absolute() and pinned.is_file() and os.access(pinned, os.X_OK):
        return pinned
    found = shutil.which("uv")
    if found:
        return Path(found)
    raise UsageError("deploy needs uv to build its fresh environment: run scripts/setup.sh"
                     f" (it installs uv {UV_VERSION} in the user's cache) or install uv")


def _source() -> tuple[Path, bool]:
    """mlops_nb's source: (folder, True) for a checkout (pyproject.toml beside the package),
    (the package folder, False) for an installed copy."""
    package = Path(__file__).resolve().parent.parent  # mlops_nb/ (this is mlops_nb/ci/)
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout, True
    return package, False


def digest(lock: Path) -> str:
    source, checkout = _source()
    h = hashlib.sha256()
    for part in (lock.read_bytes(), sys.version.encode(), str(source).encode(), b"no-bytecode"):
        h.update(hashlib.sha256(part).digest())
    if not checkout:  # a copy goes into the environment: a new mlops_nb needs a new one
        for path in sorted(source.rglob("*.py")):
            st = path.stat()
            h.update(f"{path.relative_to(source)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def _own_folder(path: Path) -> None:
    """Make `path` (mode 0700) or check that it is this user's own, not a link, not writable
    by others."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise DeployRefused(f"{path} is a symlink or not a folder: remove it (deploy keeps its"
                            " environments there)")
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise DeployRefused(f"{path} belongs to another user or is writable by others:"
                            " refusing to run an environment from it; remove it")


def envs_home() -> Path:
    home = trust.cache_home()
    if home is None:
        raise UsageError("no home folder: deploy keeps its environments in the user's cache"
                         " (set XDG_CACHE_HOME)")
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    _own_folder(home)
    envs = home / "deploy-envs"
    _own_folder(envs)
    return envs


def _run(cmd: list[str], what: str) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(UV_PYTHON_DOWNLOADS="never", UV_NO_CONFIG="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise DeployRefused(f"the fresh environment could not be made ({what}):\n{tail}")


def process_env(*drop: str) -> dict[str, str]:
    """The environment for a process deploy starts in the fresh environment: this one without
    PYTHONPATH (nothing from outside the lock), PYTHONDONTWRITEBYTECODE (its imports are
    compiled once, into the environment, which is this user's own) or the names in `drop`."""
    gone = {"PYTHONPATH", "PYTHONDONTWRITEBYTECODE", *drop}
    return {k: v for k, v in os.environ.items() if k not in gone}


def python_of(lock: Path) -> Path:
    """The Python of the environment made from `lock`, built once (see the module's rule)."""
    envs = envs_home()
    target = envs / digest(lock)
    if (target / _DONE).is_file():
        _own_folder(target)
        return target / "bin" / "python"
    uv = str(find_uv())
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=envs))
    try:
        venv = tmp / "env"
        _run([uv, "venv", "-q", "--python", sys.executable, str(venv)], "uv venv")
        py = str(venv / "bin" / "python")
        text = lock.read_text(encoding="utf-8", errors="replace")
        sync = [uv, "pip", "sync", "-q", "--python", py, str(lock)]
        if "--hash=" in text:
            sync.insert(4, "--require-hashes")
        log.info("deploy: building a fresh environment from %s in %s", lock, target)
        _run(sync, f"uv pip sync {lock.name}")
        source, checkout = _source()
        if checkout:
            _run([uv, "pip", "install", "-q", "--python", py, "--no-deps", "-e", str(source)],
                 "installing mlops_nb")
        else:
            site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                   "['purelib'])"], capture_output=True, text=True, check=True)
            shutil.copytree(source, Path(site.stdout.strip()) / "mlops_nb",
                            ignore=shutil.ignore_patterns("__pycache__"))
        (venv / _DONE).touch()
        try:
            os.rename(venv, target)  # another deploy may have made it meanwhile: keep theirs
        except OSError as exc:
            if not (target / _DONE).is_file():
                raise DeployRefused(f"{target} exists and is no complete environment ({exc}):"
                                    " remove it") from None
        _own_folder(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target / "bin" / "python"
