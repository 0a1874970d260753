#!/usr/bin/env bash
# `make bench` (models): muxmed's DenseNet-121 and MUXNet-m beside PyTorch eager, in the same
# run, on the same machine, with the same libtorch version (2.13): torchvision's DenseNet-121
# in NCHW and channels-last, and muxmed's MUXNet-m exported to TorchScript and run by PyTorch.
# The machine is shared and noisy, so the whole set runs BENCH_ROUNDS times (default 3), muxmed
# and PyTorch alternating, and every figure is the median over rounds (with its range).
#
# muxmed sets glibc's malloc to keep freed memory (model::device::tune_malloc); PyTorch runs
# with glibc's defaults, as a user gets it, and once more (channels-last only) with the same
# settings given as environment variables, so the allocator's share of the gap is visible.
#
# Installs torch 2.13.0 and torchvision 0.28.0 (the matching release) from PyPI into the
# benchmark venv the first time (a ~5 GB download with its CUDA dependencies, ~3 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${XDG_CACHE_HOME:-$HOME/.cache}/muxmed/bench-venv"
iters=${BENCH_ITERS:-5}
rounds=${BENCH_ROUNDS:-3}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "== installing torch 2.13.0 and torchvision 0.28.0 into $venv (first time only)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "torch==2.13.0" "torchvision==0.28.0"
fi
out=target/bench-model
mkdir -p "$out"
ours="$out/muxmed.jsonl"
py="$out/pytorch.jsonl"
: >"$ours"
: >"$py"
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds: muxmed"
  for arch in densenet121 muxnet_m; do
    for batch in 32 1; do
      extra=()
      if [ "$arch" = muxnet_m ] && [ "$batch" = 32 ]; then extra=(--export "$out/muxnet_m.pt"); fi
      line=$(target/release/muxmed bench model --arch "$arch" --batch "$batch" --iters "$iters" "${extra[@]}")
      echo "$line" | head -1
      echo "$line" | tail -1 >>"$ours"
    done
  done
  echo "== round $round of $rounds: PyTorch eager (torchvision DenseNet-121; muxmed's MUXNet-m TorchScript export)"
  "$venv/bin/python" benches/pytorch_baseline.py --batches 32,1 --iters "$iters" \
    --scripted "$out/muxnet_m.pt" --scripted-name "muxmed MUXNet-m TorchScript" | tee -a "$py"
  echo "== round $round of $rounds: PyTorch, channels-last, with muxmed's malloc settings"
  MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 "$venv/bin/python" benches/pytorch_baseline.py \
    --batches 32,1 --iters "$iters" --formats channels_last --tag "as muxmed sets it" \
    --scripted "$out/muxnet_m.pt" --scripted-name "muxmed MUXNet-m TorchScript" | tee -a "$py"
done
python3 - "$ours" "$py" <<'PY'
import json, statistics, sys
ours = [json.loads(l) for l in open(sys.argv[1])]
rows = [json.loads(l) for l in open(sys.argv[2])]
machine = next(r for r in rows if "machine" in r)
py = [r for r in rows if "model" in r]
print(f"machine: {machine['machine']}, {machine['threads']} threads, torch {machine['torch']}")
def stat(rs, key):
    v = [r[key] for r in rs]
    return statistics.median(v), min(v), max(v)
def pick(rs, **kw):
    return [r for r in rs if all(r.get(k) == v for k, v in kw.items())]
def fmt(m):
    return f"{m[0]:.2f} ({m[1]:.2f}-{m[2]:.2f})"
print(f"medians over {len(pick(ours, arch='muxnet_m', batch=1))} rounds, img/s (range)")
for batch in (32, 1):
    m = pick(ours, arch="densenet121", batch=batch)
    mi, mt = stat(m, "infer_images_per_s"), stat(m, "train_images_per_s")
    print(f"DenseNet-121 batch {batch:>2}: muxmed inference {fmt(mi)}, training {fmt(mt)}")
    for form, tag in (("channels_last", "default"), ("nchw", "default"), ("channels_last", "as muxmed sets it")):
        tv = pick(py, model="torchvision densenet121", format=form, batch=batch, tag=tag)
        ti, tt = stat(tv, "infer_images_per_s"), stat(tv, "train_images_per_s")
        print(f"  vs torchvision {form}, malloc {tag}: inference {fmt(ti)} -> muxmed {mi[0] / ti[0]:.2f}x; "
              f"training {fmt(tt)} -> muxmed {mt[0] / tt[0]:.2f}x")
for batch in (32, 1):
    m = pick(ours, arch="muxnet_m", batch=batch)
    mi, mt = stat(m, "infer_images_per_s"), stat(m, "train_images_per_s")
    print(f"MUXNet-m batch {batch:>2}: muxmed inference {fmt(mi)}, training {fmt(mt)}")
    for tag in ("default", "as muxmed sets it"):
        ts = pick(py, model="muxmed MUXNet-m TorchScript", batch=batch, tag=tag)
        ti = stat(ts, "infer_images_per_s")
        print(f"  its TorchScript export in PyTorch, malloc {tag}: inference {fmt(ti)} -> muxmed {mi[0] / ti[0]:.2f}x")
PY
