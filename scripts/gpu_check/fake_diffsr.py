#!/usr/bin/env python3
"""A development stand-in for the `diffsr bench` subcommand, for trying the GPU check's driver
before the real one exists (never packed). Every other command goes to the real binary
($DIFFSR_REAL_BIN). `bench ... --device cuda` fails as a CPU build does; on the CPU it sleeps a
little and prints the contract's JSON object:

    GPU_CHECK_BINARY=scripts/gpu_check/fake_diffsr.py DIFFSR_REAL_BIN=target/release/diffsr \
        scripts/gpu-check.sh self-test
"""

import argparse
import json
import os
import statistics
import sys
import time


def main():
    if len(sys.argv) < 2 or sys.argv[1] != "bench":
        real = os.environ["DIFFSR_REAL_BIN"]
        os.execv(real, [real, *sys.argv[1:]])
    p = argparse.ArgumentParser(prog="diffsr bench")
    p.add_argument("case", choices=["unet", "vae", "gan", "upscale"])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--dtype", default="f32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--model")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--max-memory")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(sys.argv[2:])
    if a.device.startswith("cuda"):
        sys.exit(f"error: --device {a.device}: this device is not available: the candle crate "
                 "has not been built with cuda support")
    if a.case in ("gan", "upscale") and not a.model:
        sys.exit(f"error: bench {a.case} needs --model")
    times = []
    for i in range(a.warmup + a.runs):
        t = time.perf_counter()
        time.sleep(0.01 * a.size / 8)
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    budget = 8 << 30
    print(json.dumps({"case": a.case, "size": a.size, "device": "cpu", "dtype": a.dtype,
                      "warmup": a.warmup, "times_s": times,
                      "median_s": statistics.median(times), "min_s": min(times),
                      "budget_bytes": budget,
                      "estimated_peak_bytes": 300 << 20 if a.case in ("gan", "upscale") else None,
                      "device_memory": None}))


if __name__ == "__main__":
    main()
