#!/usr/bin/env bash
# Installs a CPU-only libtorch 2.13.0 (the version tch 0.26 expects) from pinned PyPI wheels
# into a cache folder outside the repository, so every clone on this machine reuses it.
#
#   PREFIX = ${MUXMED_LIBTORCH_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/muxmed/libtorch-2.13.0-cpu}
#   PREFIX/torch/{lib,include,share}   libtorch (CUDA libraries removed)
#   PREFIX/nvidia/cu13/lib             libcudart/libcupti that libtorch_cpu.so links against
#   PREFIX/.complete                   written last; its absence means "redo the install"
#
# Idempotent: with the marker present and matching, it exits at once.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
req="$here/requirements-libtorch.txt"
prefix="${MUXMED_LIBTORCH_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/muxmed/libtorch-2.13.0-cpu}"
marker="$prefix/.complete"
want="torch-2.13.0 $(sha256sum "$req" | cut -d' ' -f1)"

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] && [ -f "$prefix/torch/lib/libtorch_cpu.so" ]; then
  echo "libtorch: ready at $prefix/torch"
  exit 0
fi

py=""
for c in python3 python; do
  if command -v "$c" >/dev/null 2>&1 && "$c" -m pip --version >/dev/null 2>&1; then py="$c"; break; fi
done
if [ -z "$py" ]; then
  echo "error: installing libtorch needs python3 with pip (only to download the pinned wheels)." >&2
  echo "       On Debian/Ubuntu: apt-get install python3 python3-pip" >&2
  exit 1
fi

if [ -e "$prefix" ]; then
  echo "libtorch: incomplete or outdated install at $prefix, redoing it"
fi
parent=$(dirname "$prefix")
mkdir -p "$parent"
work=$(mktemp -d "$parent/.libtorch-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "libtorch: downloading pinned wheels (about 540 MB; pip's cache is reused)"
"$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --require-hashes -r "$req" -d "$work/wheels"

echo "libtorch: unpacking"
mkdir -p "$work/root"
for whl in "$work"/wheels/*.whl; do
  case "$(basename "$whl")" in
    torch-*) "$py" - "$whl" "$work/root" <<'PY'
import sys, zipfile
whl, dst = sys.argv[1], sys.argv[2]
keep = ("torch/lib/", "torch/include/", "torch/share/")
with zipfile.ZipFile(whl) as z:
    members = [m for m in z.namelist() if m.startswith(keep)]
    z.extractall(dst, members)
PY
    ;;
    *) "$py" -m zipfile -e "$whl" "$work/root" ;;
  esac
done

# A CPU-only libtorch: without these, tch's build script links torch_cuda and the binary
# needs the whole CUDA stack.
for lib in libtorch_cuda.so libtorch_cuda_linalg.so libc10_cuda.so libtorch_nvshmem.so \
           libcaffe2_nvrtc.so libtorch_python.so; do
  rm -f "$work/root/torch/lib/$lib"
done
for f in libtorch_cpu.so libc10.so; do
  [ -f "$work/root/torch/lib/$f" ] || { echo "error: $f missing from the torch wheel" >&2; exit 1; }
done
ls "$work"/root/nvidia/cu13/lib/libcudart.so.13 >/dev/null

rm -rf "$prefix"
mv "$work/root" "$prefix"
echo "$want" > "$marker.tmp" && mv "$marker.tmp" "$marker"
echo "libtorch: installed at $prefix/torch ($(du -sh "$prefix" | cut -f1))"
