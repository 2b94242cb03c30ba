#!/usr/bin/env bash
# The main job on the example project (the repository root): set up, compile the tagged
# notebook, run the pipeline, run two experiments with DVC and print the experiment table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
export DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1
[ -d .dvc ] || mlops-nb init .
echo "== mlops-nb compile"; mlops-nb compile
echo "== mlops-nb run"; mlops-nb run
echo "== mlops-nb status"; mlops-nb status
echo "== dvc repro"; dvc repro
echo "== dvc exp run (fewer, shallower trees)"
dvc exp run -S iris.N_ESTIMATORS=10 -S iris.MAX_DEPTH=2
echo "== dvc exp run (more, deeper trees)"
dvc exp run -S iris.N_ESTIMATORS=300 -S iris.MAX_DEPTH=8
echo "== dvc exp show"
# the parameter and metric columns (dependency hashes dropped for width)
dvc exp show --no-pager --md --drop '^(outputs|steps|notebooks)/'
