"""Reference timings for benches/x4_cpu.rs: the same work in diffusers on PyTorch (CPU, f32).

Builds the full-size x4 upscaler UNet and VAE from assets/x4-upscaler/*_config.json with
diffusers' random initialisation (no weights are downloaded), then times, for each low-res size
S, one guided UNet step (batch 2, 7 input channels, encoder_hidden_states (2, 77, 1024), class
labels [20, 20]) and one VAE decode of (1, 4, S, S) latents, with one warm-up run each.

Prints one JSON object on stdout (progress goes to stderr):

    {"torch": "2.x", "diffusers": "0.x", "threads": N, "unet_params": P, "vae_params": Q,
     "maxrss_bytes": R,
     "cases": [{"case": "unet_32", "times_s": [...], "foreign_load": L}, ...]}

where L is the average number of cores other processes kept busy during the timed runs.

Run by `cargo bench --bench x4_cpu` (which passes the same thread count and repetitions), or
alone:

    python scripts/bench/x4_reference.py --threads 2 --sizes 32,64 --reps 3,2
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--sizes", default="32,64", help="low-res (latent) sizes, comma separated")
    p.add_argument("--reps", default="3,2", help="timed runs per size (one number or one per size)")
    p.add_argument("--unet-config", default=str(ROOT / "assets/x4-upscaler/unet_config.json"))
    p.add_argument("--vae-config", default=str(ROOT / "assets/x4-upscaler/vae_config.json"))
    p.add_argument("--skip-vae", action="store_true")
    p.add_argument("--skip-unet", action="store_true")
    args = p.parse_args()

    import torch

    # Before any parallel work: intra-op threads as diffsr's, and one inter-op thread.
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    sizes = [int(s) for s in args.sizes.split(",") if s]
    reps = [int(r) for r in args.reps.split(",") if r]
    if len(reps) == 1:
        reps = reps * len(sizes)
    if len(reps) != len(sizes):
        sys.exit(f"--reps has {len(reps)} entries for {len(sizes)} sizes")

    torch.manual_seed(0)
    with open(args.unet_config) as f:
        unet_cfg = json.load(f)
    with open(args.vae_config) as f:
        vae_cfg = json.load(f)
    t0 = time.perf_counter()
    unet = None if args.skip_unet else UNet2DConditionModel.from_config(unet_cfg).eval()
    vae = None if args.skip_vae else AutoencoderKL.from_config(vae_cfg).eval()
    log(f"[torch] models built in {time.perf_counter() - t0:.1f} s")

    def count(m):
        return 0 if m is None else sum(p.numel() for p in m.parameters())

    def machine_busy_s():
        # Busy CPU seconds of the whole machine (all but idle and iowait), or None.
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:9]]
        except OSError:
            return None
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")

    def timed(label, fn, n):
        t = time.perf_counter()
        out = fn()  # warm-up
        log(
            f"[torch] {label}: warm-up {time.perf_counter() - t:.3f} s, "
            f"output {tuple(out.shape)}, mean |x| {out.abs().mean().item():.3f}"
        )
        del out
        times = []
        busy0, own0, wall0 = machine_busy_s(), time.process_time(), time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        busy1, own1, wall1 = machine_busy_s(), time.process_time(), time.perf_counter()
        # Cores busy with other processes during the timed runs, on average.
        foreign = None
        if busy0 is not None and busy1 is not None:
            foreign = max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)
        load = "unknown" if foreign is None else f"{foreign:.2f}"
        log(f"[torch] {label}: {[round(t, 3) for t in times]} s, other processes' load {load}")
        return {"times_s": times, "foreign_load": foreign}

    cases = []
    with torch.inference_mode():
        ehs = torch.randn(2, 77, unet_cfg["cross_attention_dim"])
        labels = torch.tensor([20, 20], dtype=torch.long)
        for size, n in zip(sizes, reps):
            if unet is not None:
                sample = torch.randn(2, unet_cfg["in_channels"], size, size)
                r = timed(
                    f"unet {size}x{size}",
                    lambda: unet(sample, 500, ehs, class_labels=labels).sample,
                    n,
                )
                cases.append({"case": f"unet_{size}", **r})
            if vae is not None:
                latents = torch.randn(1, vae_cfg["latent_channels"], size, size) / 0.08333
                r = timed(f"vae {size}x{size}", lambda: vae.decode(latents).sample, n)
                cases.append({"case": f"vae_{size}", **r})

    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "threads": torch.get_num_threads(),
                "unet_params": count(unet),
                "vae_params": count(vae),
                # Linux reports ru_maxrss in KiB.
                "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "cases": cases,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
