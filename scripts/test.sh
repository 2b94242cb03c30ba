#!/usr/bin/env bash
# Set up .venv and run the whole test suite (real kernels, dvc and ploomber in temp repos).
# Extra arguments go to pytest. "No tests collected" (pytest exit 5) is a failure.
# --fast (first argument): only the tests not marked slow (the unit tests and the quick
# fault tests; no kernels, dvc or ploomber runs), for the edit-test loop; CI runs everything.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
fast=()
if [ "${1:-}" = "--fast" ]; then
  shift
  fast=(-m "not slow")
fi
export DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1
# The JupyterLab end-to-end test drives Debian's chromium with Playwright (Playwright's own
# browser download is never used): install it where it is missing and apt can.
CHROMIUM=${MLOPS_NB_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing Debian's chromium for the JupyterLab end-to-end test"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
      >/dev/null || { echo "test.sh: apt-get install chromium failed" >&2; exit 1; }
  else
    echo "test.sh: WARNING: $CHROMIUM is missing and apt-get cannot run here (not root or no" \
         "apt): the JupyterLab end-to-end test WILL BE SKIPPED. Install chromium to run it." >&2
  fi
fi
# lint and types first: cheap, and they fail for reasons a test would not show
.venv/bin/ruff check mlops_nb tests || exit 1
.venv/bin/mypy mlops_nb || exit 1
# the tests run side by side, one per core (at most 4: each starts kernels, dvc and ploomber
# of its own); MLOPS_NB_TEST_JOBS=1 runs them one after another (extra arguments come last and
# win, so `-n 0` works too)
jobs=${MLOPS_NB_TEST_JOBS:-$(nproc 2>/dev/null || echo 2)}
[ "$jobs" -gt 4 ] && jobs=4
if [ "$jobs" -gt 1 ]; then
  .venv/bin/python -m pytest -n "$jobs" --dist worksteal "${fast[@]}" "$@"
else
  .venv/bin/python -m pytest "${fast[@]}" "$@"
fi
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
