#!/usr/bin/env bash
# Builds the CUDA diffsr binary on a machine without a GPU or the CUDA toolkit, from NVIDIA's
# PyPI wheels (pinned to CUDA 13.0.x, whose PTX driver 580 accepts), for Hopper (sm_90a) by
# default. The CPU build and CI never need any of this (docs/gpu.md).
#
#   scripts/build-cuda.sh           # stripped binary: target-cuda/release/diffsr
#   scripts/build-cuda.sh check     # cached type-check and lint of the `cuda` feature's code
#   CUDA_COMPUTE_CAP=89 scripts/build-cuda.sh
#
# The binary loads the CUDA libraries at run time (cudarc's `dynamic-loading`), so it has no
# CUDA `NEEDED` entry and starts anywhere: without the driver it runs on the CPU, and
# `--device cuda` names the library it could not load. candle-core 0.11.1 asks cudarc for
# `dynamic-linking`, and cudarc refuses both modes at once, so feature unification cannot switch
# it: this script builds from a shadow workspace (target-cuda/ws: links to this checkout, plus
# a [patch] of candle-core with that one feature changed), which leaves Cargo.toml and
# Cargo.lock here untouched.
#
# On the GPU machine (scripts/gpu-check.sh does this):
#   export LD_LIBRARY_PATH="$(python3 -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13","lib"))'):${LD_LIBRARY_PATH:-}"
#   ./diffsr upscale in.png -o out.png --device cuda
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${1:-build}
case "$mode" in
build | check) ;;
*)
  echo "usage: scripts/build-cuda.sh [build|check]" >&2
  exit 2
  ;;
esac

TOOLS=${CUDA_PIP_DIR:-$HOME/.cache/cuda13-pip}
export CUDA_ROOT=$TOOLS/nvidia/cu13
if [ ! -x "$CUDA_ROOT/bin/nvcc" ]; then
  python3 -m pip install --no-deps --target "$TOOLS" \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
    nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35
fi
export CUDA_HOME=$CUDA_ROOT CUDA_PATH=$CUDA_ROOT PATH=$CUDA_ROOT/bin:$PATH NVCC=$CUDA_ROOT/bin/nvcc
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=13000
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-cuda}
# candle-kernels also compiles its MoE/GGUF kernels (unused by diffsr) into a static library that
# asks for `-lcudart`. The linker finds libcudart.a first in this folder: NVIDIA's static
# runtime, which loads the driver with dlopen at its first call, so the binary still has no
# CUDA `NEEDED` entry (it has none for the wheels' libcudart.so.13 either, which is not linked).
static_cudart=$CUDA_ROOT/lib/static-cudart
mkdir -p "$static_cudart"
ln -sfn ../libcudart_static.a "$static_cudart/libcudart.a"
export LIBRARY_PATH=$static_cudart${LIBRARY_PATH:+:$LIBRARY_PATH}

# candle-core, as published, with cudarc's `dynamic-linking` swapped for `dynamic-loading`.
registry_copy=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-core-0.11.1 2>/dev/null | head -n1 || true)
if [ -z "$registry_copy" ]; then
  cargo fetch --locked >/dev/null
  registry_copy=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-core-0.11.1 | head -n1)
fi
patched=$CARGO_TARGET_DIR/patched/candle-core-0.11.1
if [ ! -f "$patched/.diffsr-patched" ]; then
  rm -rf "$patched"
  mkdir -p "$(dirname "$patched")"
  cp -a "$registry_copy" "$patched"
  if [ "$(grep -c '^    "dynamic-linking",$' "$patched/Cargo.toml")" != 1 ]; then
    echo "candle-core 0.11.1's Cargo.toml is not the one this script knows how to patch" >&2
    exit 1
  fi
  sed -i 's/^    "dynamic-linking",$/    "dynamic-loading",/' "$patched/Cargo.toml"
  touch "$patched/.diffsr-patched"
fi

# The shadow workspace: every top-level entry of the checkout linked, except the manifest and
# lock file, which are copies with the patch added.
ws=$CARGO_TARGET_DIR/ws
mkdir -p "$ws"
for entry in "$root"/* "$root"/.cargo; do
  name=$(basename "$entry")
  case "$name" in
  Cargo.toml | Cargo.lock | target | target-cuda | cuda-build | gpu-check) continue ;;
  esac
  [ -e "$entry" ] && ln -sfn "$entry" "$ws/$name"
done
cp "$root/Cargo.toml" "$ws/Cargo.toml"
printf '\n[patch.crates-io]\ncandle-core = { path = "%s" }\n' "$patched" >>"$ws/Cargo.toml"
# The lock is refreshed from the checkout's whenever that one changes; cargo then rewrites
# only candle-core's entry (a path instead of the registry).
if ! cmp -s "$root/Cargo.lock" "$ws/Cargo.lock.from-checkout" 2>/dev/null; then
  cp "$root/Cargo.lock" "$ws/Cargo.lock"
  cp "$root/Cargo.lock" "$ws/Cargo.lock.from-checkout"
fi
cd "$ws"

if [ "$mode" = check ]; then
  # The type-check (and lints) of everything behind `cuda`. Only candle-kernels' build script
  # needs nvcc; after the first run its PTX is cached and this takes about a minute.
  cargo clippy -p diffsr --all-targets --features cuda -- -D warnings
  echo "cuda check passed"
  exit 0
fi

cargo build --release --features cuda --bin diffsr
bin=$CARGO_TARGET_DIR/release/diffsr
strip "$bin"
if readelf -d "$bin" | grep -E 'NEEDED.*(libcuda|libcublas|libcurand|libcudart|libnvrtc)'; then
  echo "$bin still links a CUDA library at load time" >&2
  exit 1
fi
echo "built $bin ($(du -h "$bin" | cut -f1)); it loads the CUDA libraries at run time"
