#!/usr/bin/env bash
# `make bench-data`: muxmed's data pipeline against the PIL baseline, same images, same run.
set -euo pipefail
cd "$(dirname "$0")/.."
images=${1:-../shared/data/nih/images}
venv="${XDG_CACHE_HOME:-$HOME/.cache}/muxmed/bench-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import PIL, numpy" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "pillow==11.*" "numpy==2.*"
fi
echo "== muxmed (release build)"
ours=$(target/release/muxmed bench data --images "$images" --workers 2 | tail -1)
echo "$ours"
echo "== PIL baseline, 2 worker processes"
base=$("$venv/bin/python" benches/pil_baseline.py "$images" --workers 2 --epochs 3)
echo "$base"
python3 - "$ours" "$base" <<'PY'
import json, sys
o, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"(a) decode + resize:          {o['decode_resize_images_per_s']:.1f} img/s = {o['decode_resize_images_per_s'] / b['images_per_s']:.2f}x the baseline ({b['images_per_s']:.1f} img/s)")
print(f"(b) cache + augment + batch:  {o['cache_augment_batch_images_per_s']:.1f} img/s = {o['cache_augment_batch_images_per_s'] / b['images_per_s']:.2f}x the baseline")
PY
