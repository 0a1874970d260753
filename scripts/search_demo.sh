#!/usr/bin/env bash
# `make search-demo`: a small NSGA-II architecture search on the built-in synthetic dataset
# (the `search:` section of pipelines/chestxray-demo.yaml), then the trade-off choice.
# An interrupted search (Ctrl-C) is resumed by running it again.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/muxmed
pipeline=chestxray-demo
dir=reports/search-$pipeline
images=${DEMO_IMAGES:-5000}
start=$(date +%s)
step() { echo; echo "== $*"; }

steps=5
source scripts/demo_data.sh

step "4/5 search (proxy training of every candidate; about 8 minutes on 2 cores)"
# An archive that is not finished (interrupted or killed) is continued, a finished one redone.
if [ -f "$dir/archive.json" ] && ! grep -qs '"status": "finished"' "$dir/archive.json"; then
  "$bin" search run --pipeline "$pipeline" --resume
else
  "$bin" search run --pipeline "$pipeline" --overwrite
fi

step "5/5 choose: high trade-off points and the most accurate"
"$bin" search select "$dir" -n 2

echo
echo "search demo finished in $(( $(date +%s) - start )) s"
echo "front: $dir/front.png, $dir/front.md; hypervolume: $dir/hypervolume.png"
echo "chosen architectures: $dir/selected/"
