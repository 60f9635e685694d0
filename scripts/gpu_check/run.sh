#!/usr/bin/env bash
# The GPU check, on the GPU machine: `bash gpu-check/run.sh` from the repository root, with
# gpu-check/ made by `scripts/gpu-check.sh pack` (copied there from scripts/gpu_check/run.sh).
# Sets LD_LIBRARY_PATH to the CUDA 13 libraries of PyTorch's NVIDIA wheels and /usr/local/cuda,
# installs the carried wheels into a scratch folder, unpacks the binary, then runs the driver
# under one deadline; it writes $OUT/gpu-check.json, gpu-check.md and gpu-check.log.
#
#   OUT=/tmp/out bash gpu-check/run.sh [driver options, e.g. --deadline 300 --self-test-cpu]
#
# Environment: OUT (reports; default /tmp/gpu-check-out), GPU_CHECK_DEADLINE (seconds, default
# 480), GPU_CHECK_PYTHON (the python with torch; default python3), GPU_CHECK_WORK (scratch;
# default /tmp/gpu-check-work), GPU_CHECK_BINARY (use this binary instead of the packed one).
# Never fails before the driver has written its reports, unless the pack itself is missing.
set -euo pipefail
pack=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$pack")
out=${OUT:-/tmp/gpu-check-out}
work=${GPU_CHECK_WORK:-/tmp/gpu-check-work}
deadline=${GPU_CHECK_DEADLINE:-480}
py=${GPU_CHECK_PYTHON:-python3}
mkdir -p "$out" "$work"
log=$out/gpu-check.log
export PYTHONUNBUFFERED=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
note() { echo "[gpu-check run.sh] $*" | tee -a "$log" >&2; }
start=$(date +%s)
note "pack $pack, repository $root, OUT $out, deadline ${deadline}s, python $(command -v "$py" || echo "$py missing")"

# CUDA libraries: PyTorch's NVIDIA wheels (nvidia/cu13/lib, else every nvidia/*/lib), then the
# toolkit's and the driver's folders. libcuda.so.1 itself comes from the driver.
libdirs=$(timeout 60 "$py" - <<'EOF' 2>/dev/null || true
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
for base in nvidia.__path__:
    cu13 = os.path.join(base, "cu13", "lib")
    dirs = [cu13] if os.path.isdir(cu13) else sorted(glob.glob(os.path.join(base, "*", "lib")))
    print(":".join(dirs))
EOF
)
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64; do
  if [ -d "$d" ]; then libdirs=${libdirs:+$libdirs:}$d; fi
done
libdirs=$(echo "$libdirs" | tr '\n' ':' | sed 's/::*/:/g; s/^://; s/:$//')
export LD_LIBRARY_PATH=${libdirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
note "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# Wheels the machine lacks (diffusers), into a scratch site folder.
shopt -s nullglob
wheels=("$pack"/wheels/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
  if timeout 180 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$work/site" "${wheels[@]}" >>"$log" 2>&1; then
    export PYTHONPATH=$work/site${PYTHONPATH:+:$PYTHONPATH}
    note "installed ${#wheels[@]} wheel(s) into $work/site"
  else
    note "installing the wheels failed (see the log); the torch references may be skipped"
  fi
fi

binary=${GPU_CHECK_BINARY:-}
if [ -z "$binary" ]; then
  binary=$work/diffsr
  unxz='import lzma, sys; open(sys.argv[2], "wb").write(lzma.decompress(open(sys.argv[1], "rb").read()))'
  if [ -f "$pack/bin/diffsr.xz" ]; then
    "$py" -c "$unxz" "$pack/bin/diffsr.xz" "$binary" || xz -dc "$pack/bin/diffsr.xz" >"$binary" ||
      note "could not unpack the binary: the environment step will say so"
  else
    cp "$pack/bin/diffsr" "$binary" || note "no binary in the pack"
  fi
  chmod +x "$binary" 2>/dev/null || true
fi

# The driver keeps to the deadline (less what this script used); timeout(1) is the backstop.
left=$((deadline - ($(date +%s) - start)))
if [ "$left" -lt 30 ]; then left=30; fi
rc=0
timeout -k 10 $((left + 45)) "$py" "$pack/py/driver.py" --pack "$pack" --root "$root" \
  --out "$out" --work "$work" --binary "$binary" --torch-python "$py" --deadline "$left" "$@" ||
  rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  note "the driver overran its deadline and was killed; the reports hold the steps it finished"
fi
note "driver exit code $rc; reports: $out/gpu-check.md, $out/gpu-check.json"
if [ -f "$out/gpu-check.md" ]; then cat "$out/gpu-check.md"; fi
exit "$rc"
