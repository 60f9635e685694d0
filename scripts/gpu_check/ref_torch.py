"""The PyTorch side of the GPU check's timings, one case a process (so that its GPU memory is
its own), and the random-weight model files both sides time. Needs torch, and diffusers +
transformers for the x4 cases; run by driver.py with the GPU machine's python3.

    ref_torch.py time unet --size 64 --dtype f16 [--device cuda] [--runs 3] [--warmup 1]
    ref_torch.py time vae --size 64 --dtype f32
    ref_torch.py time gan --size 512 --dtype f16 --model rrdb.safetensors
    ref_torch.py time upscale --size 512 --steps 5 --dtype f16 --model X4_DIR
    ref_torch.py make-gan OUT.safetensors      # realesrgan-x4plus's RRDBNet, random weights
    ref_torch.py make-x4 OUT_DIR --configs D --fixture TINY_X4_DIR   # full-size x4, random

`time` prints one JSON object on stdout, in the form of `diffsr bench --json`
({"case", "size", "device", "dtype", "warmup", "times_s", "median_s", "min_s", ...}) plus the
library versions and torch's own peak allocator figures; progress goes to stderr.

The cases are diffsr's: the UNet one guided step, sample (2, 7, S, S), timestep 500 (a
tensor), encoder_hidden_states (2, 77, 1024), class labels [20, 20]; the VAE one decode of
(1, 4, S, S) latents; the GAN one forward of a (1, 3, S, S) image; the upscale
StableDiffusionUpscalePipeline on an S x S image, guidance 9, noise level 20, seed 0, the UNet
and text encoder in --dtype and the VAE in f32 (as diffsr runs it). Random weights follow
benches/common/random_model.rs: norms 1 and 0, other vectors N(0, 0.02²), matrices and kernels
N(0, 1/fan_in).
"""

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

TIMESTEP = 500
NOISE_LEVEL = 20
GUIDANCE = 9.0
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def log(msg):
    print(f"[torch] {msg}", file=sys.stderr, flush=True)


def random_init_(module, seed=0):
    """Overwrites every parameter as random_model.rs draws them (see the docstring)."""
    import torch

    generators = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            parts = name.split(".")
            leaf, owner = parts[-1], (parts[-2] if len(parts) > 1 else "")
            if p.dim() == 1 and "norm" in owner:
                p.fill_(1.0 if leaf == "weight" else 0.0)
                continue
            if p.dim() == 1:
                std = 0.02
            else:
                fan_in = 1
                for d in p.shape[1:]:
                    fan_in *= d
                std = 1.0 / max(fan_in, 1) ** 0.5
            # Drawn where the parameter lives (the GPU draws 0.5 G numbers in milliseconds).
            if p.device not in generators:
                generators[p.device] = torch.Generator(device=p.device).manual_seed(seed)
            p.normal_(0.0, std, generator=generators[p.device])


def build_diffusers(cls, config, device, dtype):
    """A diffusers model from its config, random weights, on device in dtype."""
    import torch

    with torch.device(device):  # PyTorch's own initialisation runs there too
        model = cls.from_config(config)
    random_init_(model)
    return model.to(device=device, dtype=getattr(torch, DTYPES[dtype])).eval()


# --- realesrgan-x4plus: basicsr's RRDBNet (num_feat 64, num_block 23, num_grow_ch 32, x4) ---

def rrdbnet(num_in=3, num_out=3, nf=64, nb=23, gc=32):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class RDB(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
            self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
            self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
            self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
            self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

        def forward(self, x):
            lrelu = nn.functional.leaky_relu
            x1 = lrelu(self.conv1(x), 0.2)
            x2 = lrelu(self.conv2(torch.cat((x, x1), 1)), 0.2)
            x3 = lrelu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
            x4 = lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
            x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
            return x5 * 0.2 + x

    class RRDB(nn.Module):
        def __init__(self):
            super().__init__()
            self.rdb1, self.rdb2, self.rdb3 = RDB(), RDB(), RDB()

        def forward(self, x):
            return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x

    class RRDBNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_first = nn.Conv2d(num_in, nf, 3, 1, 1)
            self.body = nn.Sequential(*[RRDB() for _ in range(nb)])
            self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_last = nn.Conv2d(nf, num_out, 3, 1, 1)

        def forward(self, x):
            lrelu = nn.functional.leaky_relu
            feat = self.conv_first(x)
            feat = feat + self.conv_body(self.body(feat))
            feat = lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
            feat = lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
            return self.conv_last(lrelu(self.conv_hr(feat), 0.2))

    return RRDBNet()


def make_gan(out):
    """realesrgan-x4plus's architecture with random weights, as safetensors (basicsr names).
    Kernels are scaled by 0.1 in the residual blocks, as basicsr initialises them, so the
    activations stay in f16 range."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = rrdbnet()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith("body.") and name.endswith("weight"):
                p.mul_(0.1)
    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(out))
    params = sum(v.numel() for v in tensors.values())
    log(f"wrote {out}: RRDBNet x4 (64 feat, 23 blocks, 32 grow), {params / 1e6:.1f}M parameters")


def load_gan(path, device, dtype):
    import torch
    from safetensors.torch import load_file

    net = rrdbnet()
    net.load_state_dict(load_file(str(path)))
    return net.to(device=device, dtype=getattr(torch, DTYPES[dtype])).eval()


def make_x4(out, configs, fixture):
    """A full-size x4 upscaler folder in the hub's diffusers layout, random weights (f32
    safetensors): configs from `configs` (unet_config.json, vae_config.json,
    text_encoder_config.json), scheduler and tokenizer files from the tiny fixture."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out, configs, fixture = Path(out), Path(configs), Path(fixture)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(fixture / "model_index.json", out / "model_index.json")
    for part in ("scheduler", "low_res_scheduler", "tokenizer"):
        shutil.copytree(fixture / part, out / part)
    t0 = time.perf_counter()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(dev):
        unet = UNet2DConditionModel.from_config(
            json.loads((configs / "unet_config.json").read_text()))
        vae = AutoencoderKL.from_config(json.loads((configs / "vae_config.json").read_text()))
        text = CLIPTextModel(CLIPTextConfig.from_json_file(configs / "text_encoder_config.json"))
    for name, model in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        random_init_(model)
        model.save_pretrained(out / name, safe_serialization=True, max_shard_size="100GB")
        n = sum(p.numel() for p in model.parameters())
        log(f"{name}: {n / 1e6:.1f}M parameters")
    log(f"wrote {out} in {time.perf_counter() - t0:.1f} s")


def timed(fn, runs, warmup, sync):
    """Warm-up calls, then timed ones, each ended by a device synchronize."""
    warm = []
    for _ in range(warmup):
        t = time.perf_counter()
        out = fn()
        sync()
        warm.append(time.perf_counter() - t)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return times, warm, out


def time_case(a):
    import torch

    device = torch.device(a.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("torch sees no CUDA device")
    dt = getattr(torch, DTYPES[a.dtype])
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    versions = {"torch": torch.__version__}
    torch.manual_seed(0)
    t0 = time.perf_counter()
    params = None
    with torch.no_grad():
        if a.case in ("unet", "vae", "upscale"):
            import diffusers
            import transformers

            versions.update(diffusers=diffusers.__version__,
                            transformers=transformers.__version__)
            diffusers.utils.logging.disable_progress_bar()
        if a.case == "unet":
            from diffusers import UNet2DConditionModel

            cfg = json.loads((Path(a.configs) / "unet_config.json").read_text())
            model = build_diffusers(UNet2DConditionModel, cfg, device, a.dtype)
            sample = torch.randn(2, cfg["in_channels"], a.size, a.size, device=device, dtype=dt)
            ehs = torch.randn(2, 77, cfg["cross_attention_dim"], device=device, dtype=dt)
            t = torch.tensor(TIMESTEP, device=device)
            labels = torch.tensor([NOISE_LEVEL, NOISE_LEVEL], dtype=torch.long, device=device)

            def fn():
                return model(sample, t, ehs, class_labels=labels).sample
        elif a.case == "vae":
            from diffusers import AutoencoderKL

            cfg = json.loads((Path(a.configs) / "vae_config.json").read_text())
            model = build_diffusers(AutoencoderKL, cfg, device, a.dtype)
            latents = torch.randn(1, cfg["latent_channels"], a.size, a.size, device=device,
                                  dtype=dt) / cfg.get("scaling_factor", 0.08333)

            def fn():
                return model.decode(latents).sample
        elif a.case == "gan":
            model = load_gan(a.model, device, a.dtype)
            image = torch.rand(1, 3, a.size, a.size, device=device, dtype=dt)

            def fn():
                return model(image)
        elif a.case == "upscale":
            import numpy as np
            from PIL import Image
            from diffusers import StableDiffusionUpscalePipeline

            pipe = StableDiffusionUpscalePipeline.from_pretrained(a.model, torch_dtype=dt)
            pipe.vae.to(dtype=torch.float32)  # diffsr runs the VAE in f32
            pipe = pipe.to(device)
            pipe.set_progress_bar_config(disable=True)
            model = pipe.unet
            rng = np.random.default_rng(0)
            image = Image.fromarray(rng.integers(0, 256, (a.size, a.size, 3), dtype=np.uint8))

            def fn():
                out = pipe(prompt="", image=image, num_inference_steps=a.steps,
                           guidance_scale=GUIDANCE, noise_level=NOISE_LEVEL,
                           generator=torch.Generator("cpu").manual_seed(0),
                           output_type="np").images
                return torch.from_numpy(np.asarray(out))
        else:
            sys.exit(f"unknown case {a.case}")
        params = sum(p.numel() for p in model.parameters())
        sync()
        build_s = time.perf_counter() - t0
        log(f"{a.case} {a.size}: built in {build_s:.1f} s ({params / 1e6:.1f}M parameters)")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times, warm, out = timed(fn, a.runs, a.warmup, sync)
    out = out.float()
    finite = bool(torch.isfinite(out).all())
    result = {
        "case": a.case, "size": a.size, "device": str(device), "dtype": a.dtype,
        "warmup": a.warmup, "times_s": times, "median_s": statistics.median(times),
        "min_s": min(times), "warmup_s": warm, "build_s": build_s, "params": params,
        "output_shape": list(out.shape), "output_finite": finite,
        "output_mean_abs": float(out.abs().mean()) if finite else None, **versions,
    }
    if a.case == "upscale":
        result["steps"] = a.steps
    if cuda:
        # PyTorch's defaults, kept: TF32 in cuDNN convolutions, none in matmuls.
        result["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        result["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        result["gpu"] = torch.cuda.get_device_name(device)
        result["torch_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        result["torch_peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    log(f"{a.case} {a.size}: median {result['median_s']:.4f} s of {times}")
    print(json.dumps(result), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time")
    t.add_argument("case", choices=["unet", "vae", "gan", "upscale"])
    t.add_argument("--size", type=int, required=True)
    t.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    t.add_argument("--device", default="cuda")
    t.add_argument("--runs", type=int, default=3)
    t.add_argument("--warmup", type=int, default=1)
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--model", help="gan: a .safetensors file; upscale: an x4 model folder")
    t.add_argument("--configs", default=str(Path(__file__).resolve().parent / "configs"),
                   help="folder with unet_config.json and vae_config.json")
    g = sub.add_parser("make-gan")
    g.add_argument("out")
    m = sub.add_parser("make-x4")
    m.add_argument("out")
    m.add_argument("--configs", required=True)
    m.add_argument("--fixture", required=True)
    a = p.parse_args()
    if a.cmd == "make-gan":
        make_gan(a.out)
    elif a.cmd == "make-x4":
        make_x4(a.out, a.configs, a.fixture)
    else:
        if a.runs < 1 or a.warmup < 0 or a.size < 1:
            sys.exit("--runs must be >= 1, --warmup >= 0, --size >= 1")
        if a.case in ("gan", "upscale") and not a.model:
            sys.exit(f"{a.case} needs --model")
        time_case(a)


if __name__ == "__main__":
    main()
