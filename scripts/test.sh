#!/usr/bin/env bash
# Set up .venv and run the whole test suite (real kernels, dvc and ploomber in temp repos).
# Extra arguments go to pytest. "No tests collected" (pytest exit 5) is a failure.
# --cov: also measure line and branch coverage of mlops_nb (pyproject's [tool.coverage.*]),
# in every process the tests start (coverage's own .pth file starts it in each Python process
# that inherits the variables it sets; nothing is measured without --cov); the figures are
# printed at the end, the data left in .coverage (`.venv/bin/coverage html` for the lines).
# --fast: only the tests not marked slow (the unit tests and the quick
# fault tests; no kernels, dvc or ploomber runs), for the edit-test loop; CI runs everything.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
fast=()
cov=()
while [ $# -gt 0 ]; do
  case "$1" in
    --fast) fast=(-m "not slow"); shift ;;
    --cov) cov=(--cov=mlops_nb --cov-branch --cov-report=); shift ;;
    *) break ;;
  esac
done
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
if [ ${#cov[@]} -gt 0 ]; then
  rm -f .coverage .coverage.*
  # one absolute data file name for every process (they run in temporary projects)
  export COVERAGE_FILE="$PWD/.coverage"
fi
if [ "$jobs" -gt 1 ]; then
  .venv/bin/python -m pytest -n "$jobs" --dist worksteal "${fast[@]}" "${cov[@]}" "$@"
else
  .venv/bin/python -m pytest "${fast[@]}" "${cov[@]}" "$@"
fi
rc=$?
if [ ${#cov[@]} -gt 0 ]; then
  # warm workers of the tests' projects leave once idle (MLOPS_NB_WORKER_IDLE in the tests'
  # environment): their data is written as they exit, so wait for them (a minute at most)
  for _ in $(seq 120); do
    pgrep -f "$PWD/.venv/bin/python.* -m mlops_nb.execute.worker" >/dev/null || break
    sleep 0.5  # polling a condition (the workers are gone), as a user waiting would
  done
  unset COVERAGE_PROCESS_START COVERAGE_PROCESS_CONFIG
  .venv/bin/coverage combine -q --append >/dev/null 2>&1  # none left: pytest-cov combined all
  .venv/bin/coverage json -q -o coverage.json && .venv/bin/python -c '
import json
t = json.load(open("coverage.json"))["totals"]
print("coverage: lines %d/%d (%.1f%%), branches %d/%d (%.1f%%)" % (
    t["covered_lines"], t["num_statements"], 100 * t["covered_lines"] / t["num_statements"],
    t["covered_branches"], t["num_branches"], 100 * t["covered_branches"] / t["num_branches"]))'
fi
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
