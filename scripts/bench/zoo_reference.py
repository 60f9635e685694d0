"""Reference side of the model-zoo CPU bench (benches/zoo_cpu.rs): spandrel 0.4.2's PyTorch
modules, at each architecture's published preset, with random weights.

    python scripts/bench/zoo_reference.py make ARCH OUT.safetensors
        builds ARCH's preset (PRESETS below) with seeded random weights and saves its state dict
        as safetensors, the form users' files have; prints one JSON line {"arch", "params"}.
    python scripts/bench/zoo_reference.py time FILE --size N --threads T --reps R
        loads FILE with spandrel's ModelLoader (what chaiNNer and ComfyUI do), runs it on a
        smooth deterministic N x N picture in f32 with torch.inference_mode, once as warm-up
        and then R timed runs, and prints one JSON line:
        {"arch", "seconds": median, "times_s", "foreign_load", "peak_rss_bytes", "torch",
         "spandrel"}.

Random weights do not change the work (no data-dependent branches in these networks); normal
draws with std 1/sqrt(fan_in) keep activations in a realistic range.
"""

import argparse
import json
import math
import resource
import statistics
import sys
import time

from bench_common import log, machine_busy_s

# Published presets (the lightest common release of each): spandrel's architecture folder,
# module and class, and the constructor's arguments. ESRGAN (x4plus) and Compact are the engines diffsr had before, as baselines.
PRESETS = {
    "esrgan": ("ESRGAN", "RRDB", "RRDBNet", dict(in_nc=3, out_nc=3, num_filters=64, num_blocks=23,
                                          scale=4)),
    "compact": ("Compact", "SRVGG", "SRVGGNetCompact", dict(num_in_ch=3, num_out_ch=3, num_feat=64,
                                                    num_conv=16, upscale=4, act_type="prelu")),
    "span": ("SPAN", "span", "SPAN", dict(num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=4)),
    "realplksr": ("PLKSR", "RealPLKSR", "RealPLKSR", dict(dim=64, n_blocks=28, kernel_size=17,
                                             split_ratio=0.25, use_ea=True, norm_groups=4,
                                             upscaling_factor=4, dysample=False)),
    "swinir-light": ("SwinIR", "SwinIR", "SwinIR", dict(upscale=4, in_chans=3, img_size=64,
                                              window_size=8, img_range=1.0,
                                              depths=[6, 6, 6, 6], embed_dim=60,
                                              num_heads=[6, 6, 6, 6], mlp_ratio=2,
                                              upsampler="pixelshuffledirect",
                                              resi_connection="1conv")),
    "hat-s": ("HAT", "HAT", "HAT", dict(upscale=4, in_chans=3, img_size=64, window_size=16,
                                 compress_ratio=24, squeeze_factor=24, conv_scale=0.01,
                                 overlap_ratio=0.5, img_range=1.0, depths=[6] * 6,
                                 embed_dim=144, num_heads=[6] * 6, mlp_ratio=2,
                                 upsampler="pixelshuffle", resi_connection="1conv")),
    "dat-light": ("DAT", "DAT", "DAT", dict(upscale=4, in_chans=3, img_size=64, img_range=1.0,
                                     depth=[18], embed_dim=60, num_heads=[6],
                                     expansion_factor=2, resi_connection="3conv",
                                     split_size=[8, 32], upsampler="pixelshuffledirect")),
    "omnisr": ("OmniSR", "OmniSR", "OmniSR", dict(num_in_ch=3, num_out_ch=3, num_feat=64, block_num=1,
                                        pe=True, window_size=8, res_num=5, up_scale=4,
                                        bias=True)),
}


def build(arch):
    import importlib

    import torch

    folder, file, cls, kwargs = PRESETS[arch]
    module = importlib.import_module(f"spandrel.architectures.{folder}.__arch.{file}")
    model = getattr(module, cls)(**kwargs)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    return model.eval()


def make(arch, out):
    from safetensors.torch import save_file

    model = build(arch)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, out)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"arch": arch, "params": params}))


def picture(size):
    """A smooth deterministic picture, (1, 3, N, N) in [0, 1] (content does not change the work)."""
    import torch

    yy = torch.linspace(0, 1, size).view(size, 1).expand(size, size)
    xx = torch.linspace(0, 1, size).view(1, size).expand(size, size)
    chans = [0.5 + 0.3 * torch.sin(6.0 * xx + 4.0 * yy + 2.0 * c) for c in range(3)]
    return torch.stack(chans).clamp(0, 1).unsqueeze(0)


def time_file(path, size, threads, reps):
    import spandrel
    import torch

    torch.set_num_threads(threads)
    descriptor = spandrel.ModelLoader().load_from_file(path)
    model = descriptor.model.eval()
    x = picture(size)
    with torch.inference_mode():
        t = time.perf_counter()
        model(x)
        log(f"  [torch] {descriptor.architecture.id} {size}: warm-up "
            f"{time.perf_counter() - t:.3f} s")
        times = []
        busy0, own0 = machine_busy_s(), time.process_time()
        for _ in range(reps):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
        busy1, own1 = machine_busy_s(), time.process_time()
    # Cores other processes kept busy: the machine's busy time less this process's own.
    load = None
    if busy0 is not None and busy1 is not None:
        load = max(0.0, (busy1 - busy0) - (own1 - own0)) / sum(times)
    log(f"  [torch] {[round(t, 3) for t in times]} s, other processes' load {load}")
    print(json.dumps({
        "arch": descriptor.architecture.id,
        "seconds": statistics.median(times),
        "times_s": times,
        "foreign_load": load,
        # Linux reports ru_maxrss in KiB.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "torch": torch.__version__,
        "spandrel": spandrel.__version__,
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("arch", choices=sorted(PRESETS))
    m.add_argument("out")
    t = sub.add_parser("time")
    t.add_argument("file")
    t.add_argument("--size", type=int, default=128)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    if args.command == "make":
        make(args.arch, args.out)
    else:
        time_file(args.file, args.size, args.threads, args.reps)


if __name__ == "__main__":
    sys.exit(main())
