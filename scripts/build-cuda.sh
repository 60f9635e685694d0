#!/usr/bin/env bash
# Builds the CUDA diffsr binary on a machine without a GPU or the CUDA toolkit, from NVIDIA's
# PyPI wheels (pinned to CUDA 13.0.x, whose PTX driver 580 accepts), for Hopper (sm_90a) by
# default. The result is a stripped binary in target-cuda/release/diffsr that dynamically
# links libcuda.so.1 (from the driver), libcudart/libcublas/libcurand (PyTorch's CUDA wheels
# or /usr/local/cuda on the GPU machine). The CPU build and CI never need any of this.
#
#   scripts/build-cuda.sh                # CUDA_COMPUTE_CAP=90
#   CUDA_COMPUTE_CAP=89 scripts/build-cuda.sh
#
# On the GPU machine:
#   export LD_LIBRARY_PATH="$(python3 -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13","lib"))'):${LD_LIBRARY_PATH:-}"
#   ./diffsr upscale in.png -o out.png --device cuda
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${CUDA_PIP_DIR:-$HOME/.cache/cuda13-pip}
export CUDA_ROOT=$TOOLS/nvidia/cu13
if [ ! -x "$CUDA_ROOT/bin/nvcc" ]; then
  python3 -m pip install --no-deps --target "$TOOLS" \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
    nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35
fi
# The wheels ship only libX.so.N: add the link-time names.
(
  cd "$CUDA_ROOT/lib"
  for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
    ln -sf "$l" "${l%%.so.*}.so"
  done
)
# No wheel ships the driver: link against a stub whose soname is libcuda.so.1. It is only for
# the linker and is never shipped; the GPU machine's driver provides the real one.
if [ ! -f "$CUDA_ROOT/lib/stubs/libcuda.so" ]; then
  mkdir -p "$CUDA_ROOT/lib/stubs"
  gcc -E -P -I"$CUDA_ROOT/include" "$CUDA_ROOT/include/cuda.h" | tr '\n' ' ' |
    grep -oE '\b(CUresult|void) +cu[A-Za-z0-9_]+ *\(' |
    sed -E 's/^(CUresult|void) +//; s/ *\($//' | sort -u |
    awk '{print "int " $1 "(void){return 999;}"}' >"$CUDA_ROOT/lib/stubs/cuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA_ROOT/lib/stubs/libcuda.so" \
    "$CUDA_ROOT/lib/stubs/cuda_stub.c"
fi
export CUDA_HOME=$CUDA_ROOT CUDA_PATH=$CUDA_ROOT PATH=$CUDA_ROOT/bin:$PATH NVCC=$CUDA_ROOT/bin/nvcc
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH=$CUDA_ROOT/lib:$CUDA_ROOT/lib/stubs:${LIBRARY_PATH:-}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda}
cargo build --release --features cuda --bin diffsr
strip "$CARGO_TARGET_DIR/release/diffsr"
echo "built $CARGO_TARGET_DIR/release/diffsr"
