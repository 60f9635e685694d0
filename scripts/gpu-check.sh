#!/usr/bin/env bash
# The GPU check (docs/gpu-check.md): one prepared command that answers, on a lent GPU, whether
# diffsr's CUDA build runs there, matches its CPU results and how fast it is against PyTorch.
#
#   scripts/gpu-check.sh [pack]     build the CUDA binary (scripts/build-cuda.sh), make
#                                   gpu-check/ (binary, inputs, CPU references, wheels,
#                                   manifest), check the 64 MiB limit, print the device call
#   scripts/gpu-check.sh dry-run    pack (reused if current), then run gpu-check/run.sh here:
#                                   without a GPU every GPU step reports "no device"
#   scripts/gpu-check.sh self-test  pack (reused if current), then the driver's CPU self-test:
#                                   parity on the CPU (every difference exactly 0) and the
#                                   timing code at tiny sizes, torch from the fixture venv
#
# Environment: DIFFSR_BIN=path packs that binary instead of building one (e.g. the CPU build
# target/release/diffsr); GPU_CHECK_NO_WHEELS=1 packs no wheels; OUT=dir for the dry run's and
# self-test's reports (default: a new temporary folder); GPU_CHECK_TORCH_PYTHON=python for
# the self-test (default: ~/.cache/diffsr-fixture-venv/bin/python).
#
# On the GPU machine (the device tool; what `pack` prints):
#   run(command="bash gpu-check/run.sh", carry=["gpu-check"], timeout_s=570)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${1:-pack}
shift || true

case "$mode" in
pack | dry-run | self-test) ;;
*)
  echo "usage: scripts/gpu-check.sh [pack|dry-run|self-test] [driver options]" >&2
  exit 2
  ;;
esac

binary() {
  if [ -n "${DIFFSR_BIN:-}" ]; then
    echo "$DIFFSR_BIN"
  else
    scripts/build-cuda.sh >&2
    echo "$root/target-cuda/release/diffsr"
  fi
}

pack() {
  local bin
  bin=$(binary)
  local args=(--binary "$bin")
  if [ -n "${GPU_CHECK_NO_WHEELS:-}" ]; then args+=(--no-wheels); fi
  python3 scripts/gpu_check/pack.py "${args[@]}"
}

# A pack is current when it was made from this commit with the binary that would be packed
# now and the driver files as they are.
pack_is_current() {
  [ -f gpu-check/manifest.json ] || return 1
  local bin
  bin=${DIFFSR_BIN:-$root/target-cuda/release/diffsr}
  [ -f "$bin" ] || return 1
  python3 - "$bin" <<'EOF'
import hashlib, json, subprocess, sys
from pathlib import Path
m = json.loads(Path("gpu-check/manifest.json").read_text())
head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
sha = hashlib.sha256(Path(sys.argv[1]).read_bytes()).hexdigest()
same_py = all((Path("gpu-check/py") / f.name).read_bytes() == f.read_bytes()
              for f in Path("scripts/gpu_check").glob("*.py")
              if f.name != "pack.py")
same_run = Path("gpu-check/run.sh").read_bytes() == Path("scripts/gpu_check/run.sh").read_bytes()
sys.exit(0 if m.get("git_commit") == head and m["binary"]["sha256"] == sha and same_py
         and same_run else 1)
EOF
}

case "$mode" in
pack)
  pack
  ;;
dry-run | self-test)
  if pack_is_current; then
    echo "[gpu-check] reusing gpu-check/ (same commit, binary and driver)" >&2
  else
    pack >/dev/null
  fi
  out=${OUT:-$(mktemp -d /tmp/gpu-check-out.XXXXXX)}
  work=$(mktemp -d /tmp/gpu-check-work.XXXXXX)
  rc=0
  if [ "$mode" = dry-run ]; then
    OUT=$out GPU_CHECK_WORK=$work bash gpu-check/run.sh "$@" >/dev/null || rc=$?
  else
    py=${GPU_CHECK_TORCH_PYTHON:-$HOME/.cache/diffsr-fixture-venv/bin/python}
    if [ ! -x "$py" ]; then py=python3; fi
    OUT=$out GPU_CHECK_WORK=$work GPU_CHECK_PYTHON=$py bash gpu-check/run.sh --self-test-cpu \
      "$@" >/dev/null || rc=$?
  fi
  rm -rf "$work"
  if [ "$mode" = dry-run ] && [ -f "$out/gpu-check.json" ]; then
    # Without a GPU here, every GPU step must say so, and nothing else may fail.
    python3 - "$out/gpu-check.json" <<'EOF' || rc=1
import json, sys
doc = json.load(open(sys.argv[1]))
gpu = any(r["name"] == "environment" and (r.get("info", {}).get("gpu") or {}).get("present")
          for r in doc["steps"])
bad = [f"{r['name']}: {r['status']}" for r in doc["steps"]
       if (r["status"] != "ok" if r["name"] in ("environment", "pack")
           else not gpu and r["status"] != "no device")]
for b in bad:
    print(f"[gpu-check] dry-run: unexpected {b}", file=sys.stderr)
counts = {}
for r in doc["steps"]:
    counts[r["status"]] = counts.get(r["status"], 0) + 1
print(f"[gpu-check] dry-run: {len(doc['steps'])} steps: {counts}", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
  fi
  echo "[gpu-check] $mode: exit $rc; reports in $out (gpu-check.md, gpu-check.json, gpu-check.log)" >&2
  exit "$rc"
  ;;
esac
