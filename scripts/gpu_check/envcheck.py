"""Step 1 of the GPU check: the machine, before anything is timed. glibc against what the
binary needs, the GPU and driver (NVML / nvidia-smi), which CUDA libraries the dynamic loader
finds (the names cudarc tries), Python, torch and diffusers, `diffsr --version`, and a smoke
test: `diffsr bench unet --size 8 --device cuda --runs 1`, whose outcome decides whether the
diffsr GPU steps run at all (a hang there would hang them all).
"""

import json
import os
import platform
import sys

import elf
import gpumem
import runner

# What cudarc (dynamic-loading) opens, by the names it tries first for CUDA 13.
CUDA_LIBS = ["libcuda.so.1", "libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13",
             "libcurand.so.10", "libnvrtc.so.13"]

FIND_LIBS = r"""
import ctypes, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        ctypes.CDLL(name)
    except OSError as e:
        found[name] = {"found": False, "error": str(e)[:300]}
        continue
    found[name] = {"found": True}
paths = {}
with open("/proc/self/maps") as f:
    for line in f:
        p = line.split()[-1]
        if p.startswith("/"):
            paths.setdefault(p.rsplit("/", 1)[-1], p)
for name, rec in found.items():
    if rec["found"]:
        stem = name.split(".so")[0]
        rec["path"] = next((p for b, p in paths.items() if b.startswith(stem + ".so")), None)
print(json.dumps(found))
"""

TORCH_INFO = r"""
import json
info = {}
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if info["cuda_available"]:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = list(torch.cuda.get_device_capability(0))
except Exception as e:
    info["torch_error"] = f"{type(e).__name__}: {e}"
for mod in ("diffusers", "transformers", "safetensors", "numpy", "cv2", "pynvml"):
    try:
        m = __import__(mod)
        info[mod] = getattr(m, "__version__", "present")
    except Exception as e:
        info[mod] = None
        info[mod + "_error"] = f"{type(e).__name__}: {e}"[:300]
print(json.dumps(info))
"""


def glibc_version():
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").split()[-1]
    except (ValueError, OSError, AttributeError, IndexError):
        return platform.libc_ver()[1] or None


def _json_of(rec):
    try:
        return json.loads(rec["stdout"].strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def check(ctx):
    """Returns the environment step's record; ctx has binary, torch_python, workdir, device,
    gpu (probe), budget, log."""
    t0 = ctx.budget.elapsed()
    info = {"uname": platform.uname()._asdict(), "python": sys.version.split()[0],
            "driver_python": sys.executable,
            "ld_library_path": os.environ.get("LD_LIBRARY_PATH", ""),
            "pythonpath": os.environ.get("PYTHONPATH", ""), "glibc": glibc_version(),
            "gpu": ctx.gpu}
    problems = []
    try:
        info["binary_needs"] = elf.needs(ctx.binary)
        need = info["binary_needs"]["max_glibc"]
        if need and info["glibc"] and elf.version_tuple(need) > elf.version_tuple(info["glibc"]):
            problems.append(f"the binary needs GLIBC_{need}, this machine has {info['glibc']}")
        cuda_needed = [n for n in info["binary_needs"]["needed"] if "cu" in n or "nvrtc" in n]
        if cuda_needed:
            problems.append(f"the binary links CUDA libraries at load time: {cuda_needed}")
    except (OSError, ValueError) as e:
        info["binary_needs"] = {"error": str(e)}
    work = ctx.workdir / "env"
    r = runner.run([sys.executable, "-c", FIND_LIBS, *CUDA_LIBS], 30, work, label="libs")
    info["cuda_libs"] = _json_of(r) or {"error": r["error"], "stderr": runner.tail(r["stderr"])}
    r = runner.run([ctx.torch_python, "-c", TORCH_INFO], 90, work, label="torch")
    info["python_packages"] = _json_of(r) or {"error": r["error"],
                                               "stderr": runner.tail(r["stderr"])}
    smi = gpumem._smi(["--query-gpu=name,driver_version,memory.total,compute_cap,"
                       "clocks.max.sm,power.limit", "--format=csv"])
    info["nvidia_smi"] = smi.strip() if smi else None
    r = runner.run([ctx.binary, "--version"], 30, work, label="version")
    info["diffsr_version"] = r["stdout"].strip() or r["error"]
    if r["status"] != runner.OK:
        problems.append(f"diffsr --version: {r['error']}")
    ctx.log(f"env: glibc {info['glibc']}, binary needs "
            f"{info['binary_needs'].get('max_glibc')}, {info['diffsr_version']}, "
            f"gpu: {ctx.gpu.get('gpus') or ctx.gpu.get('reason')}")
    smoke = smoke_test(ctx)
    info["smoke"] = smoke
    status = runner.OK if not problems else runner.FAILED
    return runner.step("environment", status, ctx.budget.elapsed() - t0,
                       "; ".join(problems) or None, info=info)


def smoke_test(ctx):
    """`diffsr bench unet --size 8 --device D --runs 1`: does diffsr run on the device?"""
    argv = [ctx.binary, "bench", "unet", "--size", "8", "--device", ctx.device, "--dtype",
            "f32", "--runs", "1", "--warmup", "1", "--json"]
    timeout = ctx.budget.timeout_for(150, 20)
    if timeout is None:
        return {"status": runner.SKIPPED, "error": "the deadline is too near"}
    r = runner.run(argv, timeout, ctx.workdir / "env", poll_gpu=ctx.device != "cpu",
                   label="smoke")
    rec = {"argv": r["argv"], "status": r["status"], "seconds": r["seconds"],
           "error": r["error"], "result": _json_of(r), "gpu_memory": r["gpu_memory"],
           "stderr": runner.tail(r["stderr"], 2000)}
    if r["status"] == runner.FAILED and not ctx.gpu.get("present") and ctx.device != "cpu":
        rec["status"] = runner.NO_DEVICE
    ctx.log(f"smoke ({' '.join(argv[1:])}): {rec['status']} in {r['seconds']:.1f} s"
            + (f": {r['error']}" if r["error"] else ""))
    return rec

