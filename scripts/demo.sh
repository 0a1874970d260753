#!/usr/bin/env bash
# `make demo`: the whole main job on the built-in synthetic ChestX-Ray14:
# synth -> manifest -> prepare -> train -> evaluate on test -> report, then a second, smaller
# model on the same data and `compare` of the two.
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

steps=10
source scripts/demo_data.sh

step "4/10 train"
if [ -f "$run/last.safetensors" ]; then
  # Continues an interrupted run; a finished one says so and trains nothing.
  "$bin" train --resume "$run"
else
  "$bin" train --pipeline "$pipeline" --run-name demo --overwrite
fi

step "5/10 evaluate on the test split"
"$bin" evaluate --run "$run" --split test

step "6/10 where the model looks: the box benchmark on the test split"
located=$("$bin" localize --run "$run" --split test)
echo "$located"
loc=$(echo "$located" | grep -m1 '^localization:' || true)
# Heatmap pictures of two test images with an Effusion box (their two most probable findings).
boxed=$(awk -F, '$2 == "Effusion" {print $1}' data/synth/BBox_List_2017.csv | head -2)
"$bin" explain --checkpoint "$run/best.safetensors" --top 2 --out "$run/explain" \
  $(for id in $boxed; do find data/synth -name "$id"; done) | tail -1

step "7/10 report"
"$bin" report --run "$run" --split test

step "8/10 a second model: 10x fewer multiply-adds, 6 epochs, same data"
small=reports/demo-small
if [ -f "$small/last.safetensors" ]; then
  "$bin" train --resume "$small"
else
  "$bin" train --pipeline "$pipeline" --run-name demo-small --overwrite \
    --set model.arch=pipelines/archs/muxnet_demo_small.json --set train.epochs=6
fi
"$bin" evaluate --run "$small" --split test > /dev/null

step "9/10 compare the two on the test split"
compared=$("$bin" compare "$run" "$small" --names muxnet_demo,muxnet_demo_small --out reports/demo-compare)
echo "$compared"
line=$(echo "$compared" | grep -m1 ' vs ' || true)

step "10/10 external validation: the demo model on a CheXpert-format set from another scanner"
if grep -qs "CheXpert's file format" data/synth-chexpert/SYNTHETIC.txt; then
  echo "reusing data/synth-chexpert"
else
  rm -rf data/synth-chexpert
  "$bin" synth --format chexpert --out data/synth-chexpert --images 1500 --size 112 --seed 1
fi
"$bin" manifest --pipeline chexpert-demo > /dev/null
external=$("$bin" evaluate --run "$run" --on chexpert-demo)
echo "$external"
ext_line=$(echo "$external" | grep -m1 '^mean AUROC over' || true)

mean=$(grep -m1 '"mean_auroc"' "$run/metrics_test.json" | sed 's/[^0-9.]//g')
echo
echo "demo finished in $(( $(date +%s) - start )) s"
echo "test mean AUROC (synthetic data, trained from scratch): $mean"
echo "comparison: $line"
echo "external: $ext_line"
echo "$loc"
echo "report: $run/report/report.html"
echo "comparison report: reports/demo-compare/compare.html"
