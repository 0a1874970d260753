#!/usr/bin/env bash
# Extracts the complete CheXpert, VinBigData and RSNA label files from a torchxrayvision git
# snapshot ($1) into $2, for `make test-real`. Nothing is written into the repository.
set -euo pipefail
snap="$1"; out="$2"
mkdir -p "$out"
get() { git --git-dir="$snap/.git" cat-file -p "HEAD:torchxrayvision/data/$1" 2>/dev/null || git --git-dir="$snap" cat-file -p "HEAD:torchxrayvision/data/$1"; }
[ -s "$out/chexpert_train.csv" ] || get chexpert_train.csv.gz | gzip -dc > "$out/chexpert_train.csv"
[ -s "$out/vinbigdata-train.csv" ] || get vinbigdata-train.csv.gz | gzip -dc > "$out/vinbigdata-train.csv"
if [ ! -s "$out/stage_2_train_labels.csv" ]; then
  get kaggle_stage_2_train_labels.csv.zip > "$out/rsna.zip"
  python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extract('stage_2_train_labels.csv', sys.argv[2])" "$out/rsna.zip" "$out"
  rm "$out/rsna.zip"
fi
wc -l "$out"/*.csv
