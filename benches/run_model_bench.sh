#!/usr/bin/env bash
# `make bench` (models): muxmed's DenseNet-121 and MUXNet-m beside PyTorch eager, in the same
# run, on the same machine, with the same libtorch version (2.13): torchvision's DenseNet-121
# in NCHW and channels-last, and muxmed's MUXNet-m exported to TorchScript and run by PyTorch.
# Installs torch 2.13.0 and torchvision 0.28.0 (the matching release) from PyPI into the
# benchmark venv the first time (a ~5 GB download with its CUDA dependencies, ~3 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${XDG_CACHE_HOME:-$HOME/.cache}/muxmed/bench-venv"
iters=${BENCH_ITERS:-5}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "== installing torch 2.13.0 and torchvision 0.28.0 into $venv (first time only)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "torch==2.13.0" "torchvision==0.28.0"
fi
out=target/bench-model
mkdir -p "$out"
ours="$out/muxmed.jsonl"
: >"$ours"
for arch in densenet121 muxnet_m; do
  for batch in 32 1; do
    extra=()
    if [ "$arch" = muxnet_m ] && [ "$batch" = 32 ]; then extra=(--export "$out/muxnet_m.pt"); fi
    line=$(target/release/muxmed bench model --arch "$arch" --batch "$batch" --iters "$iters" "${extra[@]}")
    echo "$line" | head -2
    echo "$line" | tail -1 >>"$ours"
  done
done
echo "== PyTorch eager (torchvision DenseNet-121; muxmed's MUXNet-m TorchScript export)"
"$venv/bin/python" benches/pytorch_baseline.py --batches 32,1 --iters "$iters" \
  --scripted "$out/muxnet_m.pt" --scripted-name "muxmed MUXNet-m TorchScript" | tee "$out/pytorch.jsonl"
python3 - "$ours" "$out/pytorch.jsonl" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1])]
py = [json.loads(l) for l in open(sys.argv[2])]
machine = py[0]
print(f"machine: {machine['machine']}, {machine['threads']} threads, torch {machine['torch']}")
def find(rows, **kw):
    return next(r for r in rows if all(r.get(k) == v for k, v in kw.items()))
for batch in (32, 1):
    m = find(ours, arch="densenet121", batch=batch)
    for fmt in ("channels_last", "nchw"):
        tv = find(py, model="torchvision densenet121", format=fmt, batch=batch)
        print(f"DenseNet-121 batch {batch:>2}: muxmed inference {m['infer_images_per_s']:.1f} img/s = "
              f"{m['infer_images_per_s'] / tv['infer_images_per_s']:.2f}x torchvision {fmt} ({tv['infer_images_per_s']:.1f}); "
              f"training {m['train_images_per_s']:.2f} img/s = {m['train_images_per_s'] / tv['train_images_per_s']:.2f}x ({tv['train_images_per_s']:.2f})")
for batch in (32, 1):
    m = find(ours, arch="muxnet_m", batch=batch)
    ts = find(py, model="muxmed MUXNet-m TorchScript", batch=batch)
    print(f"MUXNet-m batch {batch:>2}: muxmed inference {m['infer_images_per_s']:.1f} img/s; its TorchScript export in PyTorch "
          f"{ts['infer_images_per_s']:.1f} img/s (muxmed = {m['infer_images_per_s'] / ts['infer_images_per_s']:.2f}x); "
          f"training {m['train_images_per_s']:.1f} img/s")
PY
