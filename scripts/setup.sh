#!/usr/bin/env bash
# Create .venv and install mlops_nb with the exact versions of uv.lock (all extras, so the dev
# tools scripts/test.sh uses too). Needs only Python 3.11 and git: uv itself comes from PyPI, pinned
# below, into a folder of the user's cache. Idempotent: it syncs again only when pyproject.toml or
# uv.lock changed since the last sync.
#
# pyproject.toml and uv.lock must agree. After adding or changing a dependency in pyproject.toml,
# refresh the lock with `bash scripts/setup.sh --lock` (it keeps every other pin) and commit both
# files. In CI (CI=true) a lock that disagrees is an error; elsewhere it is refreshed with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
# the lock is made against PyPI alone: no machine-local index or constraint may shape it
export UV_PYTHON_DOWNLOADS=never UV_DEFAULT_INDEX=https://pypi.org/simple
unset UV_EXTRA_INDEX_URL UV_FIND_LINKS UV_INDEX UV_INDEX_URL 2>/dev/null || true

# 1. uv, once per machine and version, installed aside and renamed into place (setups may race)
tools=${XDG_CACHE_HOME:-$HOME/.cache}/mlops_nb/uv-$UV_VERSION
UV=$tools/bin/uv
if [ ! -x "$UV" ]; then
  echo "setup: installing uv $UV_VERSION from PyPI"
  mkdir -p "$(dirname "$tools")"
  tmp=$(mktemp -d "$tools.XXXXXX")
  "$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$tmp" \
    --index-url https://pypi.org/simple "uv==$UV_VERSION"
  mv -T "$tmp" "$tools" 2>/dev/null || rm -rf "$tmp"
fi

# 2. nothing to do when .venv was synced from these very files (their agreement was checked then)
digest() {
  cat pyproject.toml uv.lock 2>/dev/null \
    | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}
stamp=.venv/.mlops_nb-installed
if [ "${1:-}" != "--lock" ] && [ -f "$stamp" ] && [ -x .venv/bin/python ] \
   && [ "$(cat "$stamp")" = "$(digest)" ]; then
  exit 0
fi

# 3. the lock agrees with pyproject.toml
if [ "${1:-}" = "--lock" ]; then
  "$UV" lock --python "$PY"
  echo "setup: uv.lock refreshed; commit pyproject.toml and uv.lock together"
elif ! out=$("$UV" lock --check --python "$PY" 2>&1); then
  if ! grep -q "needs to be updated" <<<"$out" && [ -f uv.lock ]; then
    echo "$out" >&2
    echo "setup: could not check uv.lock against pyproject.toml (above)" >&2
    exit 1
  fi
  if [ "${CI:-}" = "true" ] || [ ! -f uv.lock ]; then
    echo "setup: uv.lock does not match pyproject.toml: run 'bash scripts/setup.sh --lock'" \
         "and commit both files" >&2
    exit 1
  fi
  echo "setup: pyproject.toml changed since uv.lock was made: refreshing the lock" \
       "(other pins kept); commit uv.lock with pyproject.toml"
  "$UV" lock --python "$PY"
fi

# 4. .venv holds exactly what the lock says (-q: uv still prints errors)
echo "setup: installing the locked versions into .venv"
"$UV" sync -q --locked --all-extras --python "$PY"
digest > "$stamp"
