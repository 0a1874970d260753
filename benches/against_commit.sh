#!/usr/bin/env bash
# Speed of this checkout against an earlier commit, both built and measured in the same run
# (the machine is shared and noisy: only ratios measured side by side hold).
#
#   benches/against_commit.sh model [COMMIT]   `bench model` of MUXNet-m, batch 32, 224²,
#                                              three alternating rounds each
#   benches/against_commit.sh demo [COMMIT]    the whole `make demo`, once each, from scratch
#   benches/against_commit.sh evaluate [COMMIT] `evaluate --predictions` on the published
#                                              DenseNet-121 test predictions (22,433 images,
#                                              1,000 patient resamples), five alternating runs
#                                              each, and whether the metrics are identical
#
# COMMIT defaults to d836bb5 (issue 16's baseline). Its source is unpacked with `git archive`
# into target/bench-base/COMMIT and built there with its own target folder (a cold release
# build: 15-20 minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?usage: benches/against_commit.sh model|demo|evaluate [COMMIT]}
base=${2:-d836bb5}
dir=target/bench-base/$base
here=$(pwd)

if [ ! -x "$dir/target/release/muxmed" ]; then
  echo "== building $base in $dir (a cold release build)"
  rm -rf "$dir"
  mkdir -p "$dir"
  git archive "$base" | tar -x -C "$dir"
  make -C "$dir" build >"$dir.build.log" 2>&1 || { tail -20 "$dir.build.log"; exit 1; }
fi
make build >/dev/null
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"

case "$what" in
model)
  args=(bench model --arch muxnet_m --batch 32 --resolution 224)
  : >"$dir.model.jsonl"
  : >target/bench-here.model.jsonl
  for round in 1 2 3; do
    echo "== round $round: $base"
    line=$(cd "$dir" && target/release/muxmed "${args[@]}")
    echo "$line" | head -1
    echo "$line" | tail -1 >>"$dir.model.jsonl"
    echo "== round $round: this checkout"
    line=$(target/release/muxmed "${args[@]}")
    echo "$line" | head -2
    echo "$line" | tail -1 >>target/bench-here.model.jsonl
  done
  python3 - "$dir.model.jsonl" target/bench-here.model.jsonl "$base" <<'PY'
import json, statistics, sys
old = [json.loads(l) for l in open(sys.argv[1])]
new = [json.loads(l) for l in open(sys.argv[2])]
for key, what in [("infer_images_per_s", "inference"), ("train_images_per_s", "training step")]:
    o = statistics.median(r[key] for r in old)
    n = statistics.median(r[key] for r in new)
    print(f"MUXNet-m batch 32 {what}: {n:.1f} img/s vs {o:.1f} at {sys.argv[3]} = {n / o:.2f}x")
PY
  ;;
demo)
  run_demo() {
    (cd "$1" && rm -rf data/synth data_manifests/chestxray-demo reports/demo reports/demo-small \
      reports/demo-compare && bash scripts/demo.sh) >"$2" 2>&1
    grep -E "demo finished|test mean AUROC" "$2"
  }
  echo "== demo at $base"
  run_demo "$dir" "$here/$dir.demo.log"
  echo "== demo at this checkout"
  run_demo "$here" "$here/target/bench-here.demo.log"
  ;;
evaluate)
  nih=$(cd ../shared/data/nih && pwd)
  args=(evaluate --predictions "$nih/reference_predictions/zech_densenet121/preds.csv"
    --labels "$nih/Data_Entry_2017_v2020.csv.gz")
  rm -rf "$dir.evaluate" target/bench-here.evaluate
  : >"$dir.evaluate.times"
  : >target/bench-here.evaluate.times
  seconds() { /usr/bin/time -f %e -a -o "$1" "${@:2}" >/dev/null; }
  for round in 1 2 3 4 5; do
    (cd "$dir" && seconds "$here/$dir.evaluate.times" target/release/muxmed "${args[@]}" --out "$here/$dir.evaluate")
    seconds target/bench-here.evaluate.times target/release/muxmed "${args[@]}" --out target/bench-here.evaluate
  done
  python3 - "$dir.evaluate" target/bench-here.evaluate "$base" <<'PY'
import json, statistics, sys
def load(d):
    m = json.load(open(f"{d}/metrics_test.json"))
    m.pop("constant_outputs", None)  # a field added after d836bb5
    return m, [float(t) for t in open(f"{d}.times")]
(old, to), (new, tn) = load(sys.argv[1]), load(sys.argv[2])
o, n = statistics.median(to), statistics.median(tn)
print(f"evaluate --predictions: {n:.2f} s ({min(tn):.2f}-{max(tn):.2f}) vs {o:.2f} s "
      f"({min(to):.2f}-{max(to):.2f}) at {sys.argv[3]} = {o / n:.2f}x (medians of {len(tn)})")
print("metrics identical to the last digit" if old == new else "METRICS DIFFER")
sys.exit(0 if old == new else 1)
PY
  ;;
*)
  echo "usage: benches/against_commit.sh model|demo|evaluate [COMMIT]" >&2
  exit 2
  ;;
esac
