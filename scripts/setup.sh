#!/usr/bin/env bash
# Create .venv and install mlops_nb with the exact versions pinned in requirements.lock (every
# extra, so the dev tools scripts/test.sh uses too; each file's hash is checked). Needs only
# Python 3.11 and git: uv itself, pinned below, comes from the package index into a folder of the
# user's cache. Idempotent: it syncs again only when pyproject.toml or the lock changed.
#
# The lock is plain requirements (name==version and hashes, no index addresses), resolved for
# every platform. Its first line records a digest of pyproject.toml's dependency tables. After
# adding or changing a dependency, `bash scripts/setup.sh --lock` resolves again (keeping every
# other pin) and installs; commit pyproject.toml and requirements.lock together. In CI (CI=true)
# a lock that disagrees with pyproject.toml is an error; elsewhere it is refreshed with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
LOCK=requirements.lock
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
# the lock is made against the default index alone: no machine-local index or config may shape it
export UV_PYTHON_DOWNLOADS=never UV_NO_CONFIG=1
unset UV_EXTRA_INDEX_URL UV_FIND_LINKS UV_INDEX UV_INDEX_URL UV_DEFAULT_INDEX 2>/dev/null || true

# 1. uv, once per machine and version, installed aside and renamed into place (setups may race)
tools=${XDG_CACHE_HOME:-$HOME/.cache}/mlops_nb/uv-$UV_VERSION
UV=$tools/bin/uv
if [ ! -x "$UV" ]; then
  echo "setup: installing uv $UV_VERSION"
  mkdir -p "$(dirname "$tools")"
  tmp=$(mktemp -d "$tools.XXXXXX")
  "$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$tmp" "uv==$UV_VERSION"
  mv -T "$tmp" "$tools" 2>/dev/null || rm -rf "$tmp"
fi

# 2. nothing to do when .venv was synced from these very files
# (the last word names how .venv is made: a change to it re-syncs existing ones once)
digest() {
  { cat pyproject.toml "$LOCK" 2>/dev/null; echo compile-bytecode; } \
    | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}
stamp=.venv/.mlops_nb-installed
if [ "${1:-}" != "--lock" ] && [ -f "$stamp" ] && [ -x .venv/bin/python ] \
   && [ "$(cat "$stamp")" = "$(digest)" ]; then
  exit 0
fi
# a .venv that is a link belongs to another checkout: syncing it from here would point its
# editable mlops_nb (and its scripts) at this folder
if [ -L .venv ]; then
  echo "setup: .venv is a link to $(readlink .venv) and is not in sync with this checkout:" \
       "run scripts/setup.sh where it lives" >&2
  exit 1
fi

# 3. the lock agrees with pyproject.toml's dependency tables
want="# pyproject-dependencies: $("$PY" -c '
import hashlib, json, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
tables = [p.get("requires-python"), p.get("dependencies", []), p.get("optional-dependencies", {})]
print(hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()[:32])')"
relock() {
  local tmp="$LOCK.tmp"
  # the old lock is the starting point: uv keeps every pin that still satisfies pyproject.toml
  if [ -f "$LOCK" ]; then tail -n +2 "$LOCK" > "$tmp"; else : > "$tmp"; fi
  "$UV" pip compile -q pyproject.toml --all-extras --universal --python-version 3.11 \
    --generate-hashes --no-header --no-annotate -o "$tmp"
  { echo "$want"; cat "$tmp"; } > "$LOCK.new" && mv "$LOCK.new" "$LOCK" && rm -f "$tmp"
}
if [ "${1:-}" = "--lock" ]; then
  relock
  echo "setup: $LOCK refreshed; commit pyproject.toml and $LOCK together"
elif [ "$(head -n 1 "$LOCK" 2>/dev/null)" != "$want" ]; then
  if [ "${CI:-}" = "true" ] || [ ! -f "$LOCK" ]; then
    echo "setup: $LOCK does not match pyproject.toml: run 'bash scripts/setup.sh --lock'" \
         "and commit both files" >&2
    [ -f "$LOCK" ] && exit 1
  fi
  echo "setup: pyproject.toml's dependencies changed since $LOCK was made: refreshing it" \
       "(other pins kept); commit $LOCK with pyproject.toml"
  relock
fi

# 4. .venv holds exactly what the lock says, plus mlops_nb itself (editable), with every
# module compiled to bytecode once here: where PYTHONDONTWRITEBYTECODE=1 is set (containers,
# CI images) no process writes .pyc files, so without this each one compiles all it imports
# (a no-op `ploomber build`: 12.4 s without, 5.8 s with, on this shared machine; README)
echo "setup: installing the locked versions into .venv"
[ -x .venv/bin/python ] || "$UV" venv -q --python "$PY" .venv
"$UV" pip sync -q --python .venv/bin/python --require-hashes --compile-bytecode "$LOCK"
"$UV" pip install -q --python .venv/bin/python --no-deps -e .
# 5. Jupyter: a regular install puts the config that enables our server extension (compile on
# save) into .venv/etc/jupyter (pyproject's data-files); an editable install does not: copy it.
conf=.venv/etc/jupyter/jupyter_server_config.d
mkdir -p "$conf"
cp jupyter-config/jupyter_server_config.d/*.json "$conf/"
# Ploomber's own Jupyter Server extension swaps in a contents manager that fails on JupyterLab 4's
# async one (every folder listing: 500, "'coroutine' object is not subscriptable"), so JupyterLab
# cannot open a notebook: ploomber_off_by_mlops_nb.json, read after Ploomber's ploomber.json,
# keeps it off (the wheel installs the same file). `ploomber build` is unaffected.
digest > "$stamp"
