#!/usr/bin/env bash
# Set up .venv and run the whole test suite (real kernels, dvc and ploomber in temp repos).
# Extra arguments go to pytest. "No tests collected" (pytest exit 5) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1
# lint and types first: cheap, and they fail for reasons a test would not show
.venv/bin/ruff check mlops_nb tests || exit 1
.venv/bin/mypy mlops_nb || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
