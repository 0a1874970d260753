#!/usr/bin/env bash
# `make demo`: the whole main job on the built-in synthetic ChestX-Ray14:
# synth -> manifest -> prepare -> train -> evaluate on test -> report.
# Reruns reuse what is already there (dataset, cache, a finished run); an interrupted run
# is resumed. Any failing step stops the demo with that step's error.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/muxmed
pipeline=chestxray-demo
run=reports/demo
images=${DEMO_IMAGES:-5000}
start=$(date +%s)
step() { echo; echo "== $*"; }

step "1/6 synthetic dataset (data/synth, $images images)"
if [ -f data/synth/SYNTHETIC.txt ] && [ -f data/synth/Data_Entry_2017_v2020.csv ]; then
  echo "reusing data/synth"
else
  rm -rf data/synth
  "$bin" synth --out data/synth --images "$images" --size 112 --seed 0
fi

step "2/6 manifest"
"$bin" manifest --pipeline "$pipeline"

step "3/6 prepare (decode once into the cache)"
"$bin" prepare --pipeline "$pipeline"

step "4/6 train"
if [ -f "$run/last.safetensors" ]; then
  # Continues an interrupted run; a finished one says so and trains nothing.
  "$bin" train --resume "$run"
else
  "$bin" train --pipeline "$pipeline" --run-name demo --overwrite
fi

step "5/6 evaluate on the test split"
"$bin" evaluate --run "$run" --split test

step "6/6 report"
"$bin" report --run "$run" --split test

mean=$(grep -m1 '"mean_auroc"' "$run/metrics_test.json" | sed 's/[^0-9.]//g')
echo
echo "demo finished in $(( $(date +%s) - start )) s"
echo "test mean AUROC (synthetic data, trained from scratch): $mean"
echo "report: $run/report/report.html"
