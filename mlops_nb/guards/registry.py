"""The model registry: numbered versions of named models, each with a stage and its record.

Layout: `<registry>/<name>/v<N>/` holds `model/` (written by artifacts.save: skops for
scikit-learn, so loading runs no code) and `version.json` (stage, metrics, the data and code
hashes, params, git commit, run id, the gate's decision, the stage history); optionally
`schema.yaml` (the data schema of the model's input, which serving derives its request schema
from) and `reference/` (a sample of the training features, what monitoring compares served
data with). The registry of a
project is `.mlops_nb/registry/` (or $MLOPS_NB_REGISTRY). A version appears only complete
(built aside, then renamed); stage changes hold a per-model file lock, and promoting one
version to `production` archives the previous one, so at most one version is in production.

Rule: a model that skops cannot hold is stored as a pickle only with `allow_pickle=True`, and a
pickle is loaded only with `allow_pickle=True` and only when `register` wrote its bytes (its
digest is in the user's record of what their runs wrote, artifacts/trust.py, kept outside
every project in the user's cache folder: a version folder planted or copied in from another
user or machine is refused); skops loads trust only
scikit-learn, numpy and scipy types unless the caller names more, and the types skops does not
trust by default (the tree nodes of forests and trees) only in a file `register` wrote.

`register` also records each version it made (name, number and the model's digest) in the
registry's own record (`<registry>/.mlops_nb/written/`, which a registry copied whole
carries), so a version folder copied in with `stage: production` is not one of this
registry's versions (`is_registered`): the service serves only recorded versions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_nb import artifacts
from mlops_nb.artifacts import atomic, trust
from mlops_nb.errors import ArtifactError, RegistryError, UnsafeModelError

log = logging.getLogger(__name__)

STAGES = ("candidate", "staging", "production", "archived")
FOLLOWED = ("staging", "production")  # at most one version each; `NAME@STAGE` follows it
REFERENCE_ROWS = 5000  # training rows kept with a version for drift checks (a seeded sample)
SAFE_MODULES = ("sklearn.", "numpy.", "scipy.")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    stage: str
    created: str
    metrics: dict[str, Any]
    format: str
    path: Path
    info: dict[str, Any] = field(default_factory=dict)  # data, code, params, git, run, decision

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "stage": self.stage,
                "created": self.created, "metrics": self.metrics, "format": self.format,
                "path": str(self.path), **self.info}


def default_root(project: Path) -> Path:
    env = os.environ.get("MLOPS_NB_REGISTRY")
    if env:
        return Path(env).resolve()
    root = project / ".mlops_nb" / "registry"
    atomic.refuse_symlinks(root, root=project)  # a planted link would take every write
    return root


def parse_ref(ref: str) -> tuple[str, str | None]:
    """'iris:3' -> ('iris', '3'); 'iris@production' -> ('iris', 'production'); 'iris'."""
    for sep in (":", "@"):
        if sep in ref:
            name, _, which = ref.partition(sep)
            return name, which or None
    return ref, None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any], root: Path) -> None:
    atomic.write_text(path, json.dumps(data, indent=1, default=str) + "\n", root=root,
                      sync=True)


class Registry:
    """A folder of versioned models; every method re-reads the disk (no cached state)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # where the digests of what register() wrote are kept: outside every version folder
        self.trust_root = root

    def _model_dir(self, name: str) -> Path:
        if not _NAME.match(name):
            raise RegistryError(f"invalid model name {name!r}: use letters, digits, _ . -")
        return self.root / name

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        import fcntl

        fd = atomic.open_lock(self._model_dir(name) / ".lock", root=self.root)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _reading(self, name: str) -> Iterator[None]:
        """A shared hold of the model's lock while its version files are read: a stage change
        writes two of them (the promoted version's, then the archived one's), and a reader
        between the two would see two production versions, or none."""
        import fcntl

        folder = self._model_dir(name)
        fd = None
        if folder.is_dir():
            try:
                fd = atomic.open_lock(folder / ".lock", root=self.root)
            except PermissionError:  # a registry this user may only read: hold its lock all
                with contextlib.suppress(FileNotFoundError, PermissionError):  # the same
                    fd = os.open(folder / ".lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            if fd is not None:
                os.close(fd)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _NAME.match(p.name) and not p.name.startswith("."))

    def _read(self, name: str, folder: Path) -> ModelVersion:
        try:
            data = json.loads((folder / "version.json").read_text(encoding="utf-8"))
            core = {k: data.pop(k) for k in ("version", "stage", "created", "metrics",
                                             "format")}
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise RegistryError(f"{folder}/version.json is unreadable ({exc})") from exc
        data.pop("name", None)
        data.pop("path", None)
        try:
            number = int(core["version"])
        except (TypeError, ValueError, OverflowError):
            raise RegistryError(f"{folder.name}/version.json of '{name}': version"
                                f" {str(core['version'])[:40]!r} is not a number") from None
        return ModelVersion(name, number, core["stage"], core["created"],
                            core["metrics"], core["format"], folder, data)

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        out = []
        for n in [name] if name else self.names():
            with self._reading(n):
                out += self._scan(n)
        return out

    def _scan(self, name: str) -> list[ModelVersion]:
        """The versions of one model, read without the lock (its holder calls this)."""
        folder = self._model_dir(name)
        if not folder.is_dir():
            return []
        return [self._read(name, v) for v in sorted(folder.glob("v*"), key=lambda p: _vnum(p.name))
                if _vnum(v.name) > 0 and (v / "version.json").exists()]

    def get(self, name: str, which: str | int | None = None) -> ModelVersion:
        """A version by number, or 'production', 'staging', 'latest' (None: production)."""
        return self._pick(name, self.versions(name), which)

    def _pick(self, name: str, versions: list[ModelVersion],
              which: str | int | None) -> ModelVersion:
        if not versions:
            raise RegistryError(f"no model named '{name}' in {self.root}")
        if which is None or which in FOLLOWED:
            stage = which or "production"
            held = [v for v in versions if v.stage == stage]
            if not held:
                raise RegistryError(f"model '{name}' has no {stage} version")
            return held[-1]
        if which == "latest":
            return versions[-1]
        try:
            num = int(str(which).lstrip("v"))
        except ValueError:
            raise RegistryError(f"unknown version {which!r} of '{name}': use a number,"
                                " 'production', 'staging' or 'latest'") from None
        for v in versions:
            if v.version == num:
                return v
        raise RegistryError(f"model '{name}' has no version {num}; versions:"
                            f" {', '.join(str(v.version) for v in versions)}")

    def production(self, name: str) -> ModelVersion | None:
        return self.in_stage(name, "production")

    def in_stage(self, name: str, stage: str) -> ModelVersion | None:
        held = [v for v in self.versions(name) if v.stage == stage]
        return held[-1] if held else None

    def register(self, name: str, model: Any, metrics: dict[str, Any], *,
                 info: dict[str, Any] | None = None, allow_pickle: bool = False,
                 schema: Any = None, reference: Any = None) -> ModelVersion:
        """Store a new version in stage `candidate`; returns it.

        `schema` (a validation Schema) and `reference` (a DataFrame of training features, of
        which at most REFERENCE_ROWS rows are kept) are stored beside the model."""
        with self._lock(name):
            folder = self._model_dir(name)
            number = max((_vnum(p.name) for p in folder.glob("v*")), default=0) + 1
            # a fresh folder of a random name: a planted `.vN.tmp-PID` link is never followed
            tmp = folder / f".v{number}.tmp-{os.getpid()}-{secrets.token_hex(6)}"
            os.mkdir(tmp)
            try:
                meta = artifacts.save(model, tmp / "model", project=self.trust_root)
                if meta["format"] not in ("skops",) and not allow_pickle and \
                        meta["format"] in ("pickle", "cloudpickle"):
                    raise RegistryError(
                        f"a {type(model).__name__} cannot be stored with skops; storing it as"
                        " a pickle needs allow_pickle=True (pickles run code when loaded)")
                record = {"name": name, "version": number, "stage": "candidate",
                          "created": _now(), "metrics": dict(metrics), "format": meta["format"],
                          "sha256": meta["sha256"], **(info or {}),
                          "history": [{"stage": "candidate", "at": _now()}]}
                _write_json(tmp / "version.json", record, self.root)
                _write_extras(tmp, schema, reference, self.trust_root)
                # kept in the registry's own record (it travels with a registry copied whole):
                # the user's shared record would vouch for a plant in another registry
                trust.record(self.trust_root, registered_key(name, number, meta["sha256"]),
                             project_only=True)
                os.rename(tmp, folder / f"v{number}")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        log.info("registered %s:%d", name, number)
        return self.get(name, number)

    def set_stage(self, name: str, version: int, stage: str, reason: str = "", *,
                  expect: str | None = None) -> ModelVersion:
        """Move a version to a stage; `production` (`staging`) archives the version that held
        it; `expect`: refused unless the version is still in that stage. Which stage may follow
        which is the caller's rule (ci/deploy.py: production only from staging, unless forced;
        the gate promotes a candidate straight to production)."""
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        with self._lock(name):
            held = self._scan(name)
            target = self._pick(name, held, version)
            if expect is not None and target.stage != expect:
                raise RegistryError(f"{target.ref} moved to {target.stage} meanwhile (it was"
                                    f" {expect}); not moving it to {stage}")
            changes = [(target, stage)]
            if stage in FOLLOWED:
                changes += [(v, "archived") for v in held
                            if v.stage == stage and v.version != version]
            for mv, new in changes:
                path = mv.path / "version.json"
                data = json.loads(path.read_text(encoding="utf-8"))
                data["stage"] = new
                data.setdefault("history", []).append(
                    {"stage": new, "at": _now(), **({"reason": reason} if reason else {}),
                     **({"by": f"{name}:{version}"} if mv is not target else {})})
                _write_json(path, data, self.root)
        log.info("%s:%d -> %s", name, version, stage)
        return self.get(name, version)

    def is_registered(self, mv: ModelVersion) -> bool:
        """True when `register` made this version here: its name, number and model digest
        are in the registry's record, and the model's meta.json has that digest."""
        sha = mv.info.get("sha256")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            return False
        try:
            meta = artifacts.read_meta(mv.path / "model")
        except ArtifactError:
            return False
        if not isinstance(meta, dict) or meta.get("sha256") != sha:
            return False
        return trust.written(self.trust_root, registered_key(mv.name, mv.version, sha))

    def promote(self, name: str, version: int, reason: str = "") -> ModelVersion:
        return self.set_stage(name, version, "production", reason)

    def load_model(self, name: str, which: str | int | None = None, *,
                   allow_pickle: bool = False, trusted: list[str] | None = None) -> Any:
        mv = self.get(name, which)
        return load_model_file(mv.path / "model", allow_pickle=allow_pickle, trusted=trusted,
                               project=self.trust_root)


def registered_key(name: str, version: int, sha256: str) -> str:
    """The registry's record entry of one version it made (see trust.py)."""
    import hashlib

    text = json.dumps(["mlops-nb registered", name, version, sha256])
    return "registered-" + hashlib.sha256(text.encode()).hexdigest()


def _write_extras(folder: Path, schema: Any, reference: Any, owner: Path) -> None:
    if schema is not None:
        from mlops_nb.guards.validation import schema as schema_mod

        schema_mod.save(schema, folder / "schema.yaml")
    if reference is not None:
        if len(reference) > REFERENCE_ROWS:
            reference = reference.sample(REFERENCE_ROWS, random_state=0)
        artifacts.save(reference, folder / "reference", project=owner)


def schema_of(mv: ModelVersion) -> Any:
    """The data schema stored with a version (a validation Schema), or None."""
    from mlops_nb.guards.validation import schema as schema_mod

    path = mv.path / "schema.yaml"
    return schema_mod.load(path) if path.is_file() else None


def reference_of(mv: ModelVersion) -> Any:
    """The training-feature sample stored with a version (a DataFrame), or None."""
    folder = mv.path / "reference"
    if not folder.is_dir():
        return None
    try:
        return artifacts.load(folder, project=mv.path.parent.parent)
    except ArtifactError as exc:
        raise RegistryError(f"{mv.ref}: its training reference is unreadable ({exc})") from exc


def _vnum(name: str) -> int:
    return int(name[1:]) if re.fullmatch(r"v\d+", name) else 0


def load_model_file(folder: Path, *, allow_pickle: bool = False,
                    trusted: list[str] | None = None, project: Path | None = None) -> Any:
    """Load a stored model after its hash check, refusing pickles unless allowed, and
    pickles and trees that the registry did not write (`project`: where the registry records
    what it wrote; by default the registry `<registry>/<name>/v<N>/model` is in)."""
    owner = project or folder.absolute().parent.parent.parent
    try:
        meta = artifacts.read_meta(folder)
        fmt = meta.get("format")
        data = artifacts.read_checked(folder, meta) if fmt == "skops" else None
        if data is None:
            artifacts.verify(folder)
    except ArtifactError as exc:
        raise RegistryError(str(exc)) from exc
    if fmt in ("pickle", "cloudpickle") and not allow_pickle:
        raise UnsafeModelError(str(folder / meta["file"]), fmt)
    if fmt == "skops":
        from mlops_nb.artifacts import skops_io

        sio = skops_io()
        path = folder / meta["file"]
        try:
            needed = sio.get_untrusted_types(data=data)
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
            raise RegistryError(f"{path} is not a readable skops file ({exc})") from exc
        allowed = set(trusted or [])
        unsafe = [t for t in needed if not t.startswith(SAFE_MODULES) and t not in allowed]
        if unsafe:
            raise RegistryError(f"{path} needs types outside scikit-learn, numpy and scipy:"
                                f" {', '.join(unsafe)}; pass trusted=[...] if you trust them")
        unchecked = sorted(set(needed) - allowed)
        if unchecked and not trust.written(owner, artifacts.record_key(meta)):
            raise RegistryError(_not_ours(path, f"needs types skops does not trust by default"
                                                f" ({', '.join(unchecked)})",
                                          "or pass trusted=[...] naming them if you trust it"))
        try:
            return sio.loads(data, trusted=list(needed))
        except Exception as exc:  # noqa: BLE001 - a damaged file
            raise RegistryError(f"{path} cannot be loaded ({exc})") from exc
    if fmt in ("pickle", "cloudpickle") and not trust.written(owner, artifacts.record_key(meta)):
        raise RegistryError(_not_ours(folder / meta["file"], f"is a {fmt} (loading it runs code)",
                                      "allow_pickle does not vouch for a file the registry"
                                      " did not write"))
    try:
        return artifacts.load(folder, project=owner, allow_pickle=True)
    except ArtifactError as exc:
        raise RegistryError(str(exc)) from exc


def _not_ours(path: Path, what: str, then: str) -> str:
    return (f"{path} {what} and was not stored by register() in your own runs (its digest is"
            f" not in your record of written files, {trust.user_record()}; version.json and"
            f" meta.json beside it prove nothing): refusing to load it. Register the model"
            f" again, {then}")
