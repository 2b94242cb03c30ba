#!/usr/bin/env bash
# The main job on the example project (the repository root): set up, compile the tagged
# notebook, run the pipeline and its test cells, run two experiments with DVC and print the
# experiment table, then what CI runs on a pull request (`mlops-nb ci run`) and its report.
# It leaves the working tree as it found it: `dvc exp run` writes the experiment's values into
# params.yaml and DVC writes dvc.lock, so both are put back on the way out (the experiments
# stay in DVC's refs, `dvc exp show` lists them) and the outputs are checked out again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
export DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1
[ -d .dvc ] || mlops-nb init .
kept=$(mktemp -d)
cp params.yaml "$kept/params.yaml"
[ -f dvc.lock ] && cp dvc.lock "$kept/dvc.lock"
put_back() {
  cp "$kept/params.yaml" params.yaml
  if [ -f "$kept/dvc.lock" ]; then cp "$kept/dvc.lock" dvc.lock; else rm -f dvc.lock; fi
  rm -rf "$kept"
}
trap put_back EXIT
echo "== mlops-nb compile"; mlops-nb compile
echo "== mlops-nb run"; mlops-nb run
echo "== mlops-nb status"; mlops-nb status
echo "== mlops-nb test (the notebook's test cells, against this run)"; mlops-nb test
echo "== dvc repro"; dvc repro
cp dvc.lock "$kept/baseline.lock"
# outputs DVC does not cache (the executed notebook of a step with effects, never replayed)
# cannot come back with `dvc checkout`: keep the baseline's copies aside
uncached=$(python -c 'import sys, yaml
for stage in (yaml.safe_load(open("dvc.yaml")).get("stages") or {}).values():
    for out in stage.get("outs") or []:
        if isinstance(out, dict) and not next(iter(out.values())).get("cache", True):
            print(next(iter(out)))')
for f in $uncached; do
  if [ -f "$f" ]; then mkdir -p "$kept/uncached/$(dirname "$f")"; cp -p "$f" "$kept/uncached/$f"; fi
done
echo "== dvc exp run (fewer, shallower trees)"
dvc exp run -S iris.N_ESTIMATORS=10 -S iris.MAX_DEPTH=2
echo "== dvc exp run (more, deeper trees)"
dvc exp run -S iris.N_ESTIMATORS=300 -S iris.MAX_DEPTH=8
echo "== dvc exp show"
# the parameter and metric columns (dependency hashes dropped for width)
dvc exp show --no-pager --md --drop '^(outputs|steps|notebooks)/'
# back to the baseline's values and outputs (from DVC's cache, nothing reruns)
cp "$kept/params.yaml" params.yaml
cp "$kept/baseline.lock" dvc.lock
dvc checkout -q
for f in $uncached; do
  if [ -f "$kept/uncached/$f" ]; then cp -p "$kept/uncached/$f" "$f"; fi
done
echo "== mlops-nb ci run (what CI runs on a pull request, here; the report is ci-report/)"
mlops-nb ci run --base HEAD~1 --tests ''
sed -n '1,/^## Notebook tests/p' ci-report/report.md
