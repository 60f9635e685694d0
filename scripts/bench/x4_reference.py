"""Reference timings for benches/x4_cpu.rs: one case of the same work in diffusers /
transformers on PyTorch (CPU, f32), in a process of its own so that its peak memory is its own.

Cases (random initialisation, nothing downloaded):

  unet_S    the x4 UNet from --unet-config; one guided step: sample (2, 7, S, S), timestep 500,
            encoder_hidden_states (2, 77, 1024), class labels [20, 20]
  vae_S     the VAE from --vae-config; one decode of (1, 4, S, S) latents / 0.08333
  text      transformers' CLIPTextModel from --text-config on (2, 77) token ids
            (id = (1 + 7919 i) mod vocab_size, as the bench's)
  whole_S   StableDiffusionUpscalePipeline.from_pretrained(--model-dir) on the S x S raw RGB
            image --image: --steps steps of the directory's scheduler, guidance 9, noise level
            20, generator seed 0, output_type "np"; the warm-up is a 1-step upscale

One warm-up run, then --reps timed runs. Prints one JSON object on stdout (progress goes to
stderr):

    {"case": C, "torch": "2.x", "diffusers": "0.x", "transformers": "5.x", "threads": N,
     "params": P, "times_s": [...], "warmup_s": W, "foreign_load": L, "maxrss_bytes": R}

where L is the average number of cores other processes kept busy during the timed runs and R
the process's peak resident memory (ru_maxrss). Run by `cargo bench --bench x4_cpu` (which
passes the same thread count, repetitions and files), or alone, e.g.:

    python scripts/bench/x4_reference.py --case unet_32 --threads 2 --reps 3
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from bench_common import log, machine_busy_s

ROOT = Path(__file__).resolve().parents[2]
TIMESTEP = 500
NOISE_LEVEL = 20
GUIDANCE = 9.0
SEED = 0
VAE_SCALING_FACTOR = 0.08333


def timed(label, fn, n):
    """fn(warm_up) once with warm_up=True, then n timed calls; outputs must be finite."""
    import torch

    def check(out):
        mean_abs = out.abs().mean().item()
        if not torch.isfinite(torch.tensor(mean_abs)):
            sys.exit(f"{label}: output is not finite (mean |x| = {mean_abs})")
        return mean_abs

    t = time.perf_counter()
    out = fn(True)
    warm = time.perf_counter() - t
    log(f"[torch] {label}: warm-up {warm:.3f} s, output {tuple(out.shape)}, "
        f"mean |x| {check(out):.3f}")
    del out
    times = []
    busy_other = 0.0
    known = True
    for _ in range(n):
        busy0, own0 = machine_busy_s(), time.process_time()
        t = time.perf_counter()
        out = fn(False)
        secs = time.perf_counter() - t
        busy1, own1 = machine_busy_s(), time.process_time()
        times.append(secs)
        if busy0 is None or busy1 is None:
            known = False
        else:
            busy_other += max(0.0, (busy1 - busy0) - (own1 - own0))
        check(out)
        del out
    # Cores busy with other processes during the timed runs, on average.
    foreign = busy_other / sum(times) if known else None
    load = "unknown" if foreign is None else f"{foreign:.2f}"
    log(f"[torch] {label}: {[round(t, 3) for t in times]} s, other processes' load {load}")
    return {"times_s": times, "warmup_s": warm, "foreign_load": foreign}


def count(module):
    return sum(p.numel() for p in module.parameters())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--case", required=True, help="unet_S, vae_S, text or whole_S")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--reps", type=int, default=1, help="timed runs after one warm-up")
    p.add_argument("--steps", type=int, default=20, help="denoising steps of whole_S")
    p.add_argument("--unet-config", default=str(ROOT / "assets/x4-upscaler/unet_config.json"))
    p.add_argument("--vae-config", default=str(ROOT / "assets/x4-upscaler/vae_config.json"))
    p.add_argument("--text-config",
                   default=str(ROOT / "target/bench-results/x4_text_encoder_config.json"),
                   help="the text encoder's config.json (the bench writes it)")
    p.add_argument("--model-dir", default=str(ROOT / "target/bench-models/x4-random"),
                   help="a diffusers x4 upscaler directory, for whole_S")
    p.add_argument("--image", help="S x S raw 8-bit RGB, for whole_S (the bench writes it)")
    args = p.parse_args()
    if args.reps < 1 or args.steps < 1 or args.threads < 1:
        sys.exit("--reps, --steps and --threads must be at least 1")
    kind, _, size = args.case.partition("_")
    if kind not in ("unet", "vae", "text", "whole") or (
            size != "" if kind == "text" else not size.isdigit() or int(size) < 1):
        sys.exit(f"--case {args.case!r}: expected unet_S, vae_S, text or whole_S")
    size = int(size) if size else 0

    import torch

    # Before any parallel work: intra-op threads as diffsr's, and one inter-op thread.
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import diffusers
    import transformers

    # Loading progress bars only clutter the bench's log.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()

    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        if kind == "unet":
            from diffusers import UNet2DConditionModel

            with open(args.unet_config) as f:
                cfg = json.load(f)
            model = UNet2DConditionModel.from_config(cfg).eval()
            ehs = torch.randn(2, 77, cfg["cross_attention_dim"])
            labels = torch.tensor([NOISE_LEVEL, NOISE_LEVEL], dtype=torch.long)
            sample = torch.randn(2, cfg["in_channels"], size, size)
            log(f"[torch] {args.case}: built in {time.perf_counter() - t0:.1f} s")
            r = timed(args.case,
                      lambda _: model(sample, TIMESTEP, ehs, class_labels=labels).sample,
                      args.reps)
        elif kind == "vae":
            from diffusers import AutoencoderKL

            with open(args.vae_config) as f:
                cfg = json.load(f)
            model = AutoencoderKL.from_config(cfg).eval()
            latents = torch.randn(1, cfg["latent_channels"], size, size) / VAE_SCALING_FACTOR
            log(f"[torch] {args.case}: built in {time.perf_counter() - t0:.1f} s")
            r = timed(args.case, lambda _: model.decode(latents).sample, args.reps)
        elif kind == "text":
            from transformers import CLIPTextConfig, CLIPTextModel

            cfg = CLIPTextConfig.from_json_file(args.text_config)
            model = CLIPTextModel(cfg).eval()
            n = 2 * 77
            ids = torch.tensor([(1 + 7919 * i) % cfg.vocab_size for i in range(n)],
                               dtype=torch.long).reshape(2, 77)
            log(f"[torch] {args.case}: built in {time.perf_counter() - t0:.1f} s")
            r = timed(args.case, lambda _: model(input_ids=ids).last_hidden_state, args.reps)
        else:
            import numpy as np
            from PIL import Image
            from diffusers import StableDiffusionUpscalePipeline

            if args.image is None:
                sys.exit(f"--case {args.case} needs --image")
            raw = Path(args.image).read_bytes()
            if len(raw) != 3 * size * size:
                sys.exit(f"{args.image} is not a {size}x{size} RGB image")
            image = Image.frombytes("RGB", (size, size), raw)
            pipe = StableDiffusionUpscalePipeline.from_pretrained(args.model_dir)
            pipe.set_progress_bar_config(disable=True)
            model = pipe.unet
            for component in (pipe.unet, pipe.vae, pipe.text_encoder):
                if component.dtype != torch.float32:
                    sys.exit(f"{args.model_dir} loaded as {component.dtype}, not float32")
            log(f"[torch] {args.case}: loaded {args.model_dir} in "
                f"{time.perf_counter() - t0:.1f} s ({type(pipe.scheduler).__name__})")

            def upscale(warm_up):
                out = pipe(
                    prompt="",
                    image=image,
                    num_inference_steps=1 if warm_up else args.steps,
                    guidance_scale=GUIDANCE,
                    noise_level=NOISE_LEVEL,
                    generator=torch.Generator("cpu").manual_seed(SEED),
                    output_type="np",
                ).images
                return torch.from_numpy(np.asarray(out))

            r = timed(args.case, upscale, args.reps)

    print(
        json.dumps(
            {
                "case": args.case,
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "transformers": transformers.__version__,
                "threads": torch.get_num_threads(),
                "params": count(model),
                **r,
                # Linux reports ru_maxrss in KiB.
                "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
