#!/usr/bin/env bash
# `make bench`: the CheXpert manifest build from the complete train.csv (223,414 rows), when
# `make test-real` has extracted it; skipped with a line saying so otherwise. valid.csv is
# not in the extracted set, so the split is random_patient (the reading is the same).
set -euo pipefail
bin="$1"; labels="$2"
if [ ! -f "$labels/chexpert_train.csv" ]; then
  echo "bench manifest (CheXpert): skipped, run make test-real first to extract the full train.csv"
  exit 0
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
ln -s "$labels/chexpert_train.csv" "$root/train.csv"
echo "bench manifest (CheXpert full train.csv, frontal views):"
"$bin" bench manifest --pipeline pipelines/chexpert.yaml --set data.root="$root" --set data.protocol=random_patient
