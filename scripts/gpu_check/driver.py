"""The GPU check's driver: runs every step of a pack made by `scripts/gpu-check.sh pack`
within one deadline and writes $OUT/gpu-check.json, gpu-check.md and gpu-check.log.
Started by gpu-check/run.sh (which sets the library path, installs the carried wheels and
unpacks the binary); stdlib only, so it runs on any python3 >= 3.8.

Steps, cheap and decisive first (docs/gpu-check.md): environment (+ smoke test), pack
(hashes), parity (GPU against the pack's CPU references), timing (against PyTorch, with peak
GPU memory), memory (diffsr's estimate against the measured peak). Every command has its own
timeout and runs in its own process group; a failing step is recorded and the next one runs;
steps that the deadline no longer allows are recorded as skipped.

Without a GPU every GPU step reports "no device" at once. `--self-test-cpu` runs the parity
cases on the CPU in f32 (every difference must be exactly 0) and the timing code at tiny sizes
on the CPU, proving the pack and the driver on a machine without a GPU.
"""

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import envcheck  # noqa: E402
import gpumem  # noqa: E402
import parity  # noqa: E402
import report  # noqa: E402
import runner  # noqa: E402
import timing  # noqa: E402


class Context:
    """What every step needs: paths, the device, the deadline, what is known to work."""

    def __init__(self, a, budget, log):
        self.root = Path(a.root).resolve()
        self.pack = Path(a.pack).resolve()
        self.py_dir = HERE
        self.binary = Path(a.binary).resolve()
        self.torch_python = a.torch_python
        self.workdir = Path(a.work).resolve()
        self.self_test = a.self_test_cpu
        self.device = "cpu" if a.self_test_cpu else a.device
        self.configs = self.pack / ("configs-tiny" if a.self_test_cpu else "configs")
        self.budget = budget
        self.log = log
        self.gpu = {}
        self.device_ok = True
        self.no_device_reason = None
        self.diffsr_skip_reason = None
        self.torch_ok = True
        self.torch_reason = None
        self.diffusers_ok = True
        self.diffusers_reason = None
        self.prepared = {}
        self.prepare_records = []


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_pack(ctx, manifest):
    """Every file the manifest lists is there with its hash (fixtures included: they travel
    with the working tree, which may have changed since the pack was made)."""
    t0 = time.monotonic()
    bad = []
    for rel, meta in manifest.get("files", {}).items():
        p = ctx.root / rel
        if not p.is_file():
            bad.append(f"{rel}: missing")
        elif sha256(p) != meta["sha256"]:
            bad.append(f"{rel}: changed since the pack was made")
    status = runner.OK if not bad else runner.FAILED
    ctx.log(f"pack: {len(manifest.get('files', {}))} files, {len(bad)} missing or changed")
    return runner.step("pack", status, time.monotonic() - t0,
                       "; ".join(bad[:20]) or None, files_checked=len(manifest.get("files", {})))


def decide(ctx, env_rec):
    """After the environment step: which later steps can run at all."""
    info = env_rec.get("info", {})
    pk = info.get("python_packages") or {}
    if not pk.get("torch"):
        ctx.torch_ok, ctx.torch_reason = False, pk.get("torch_error") or "torch is missing"
    elif ctx.device != "cpu" and not pk.get("cuda_available"):
        ctx.torch_ok, ctx.torch_reason = False, "torch sees no CUDA device"
    if not pk.get("diffusers"):
        ctx.diffusers_ok = False
        ctx.diffusers_reason = pk.get("diffusers_error") or "diffusers is missing"
    smoke = info.get("smoke") or {}
    seen = ctx.gpu.get("present") or pk.get("cuda_available") or smoke.get("status") == runner.OK
    if ctx.device != "cpu" and not seen:
        ctx.device_ok = False
        ctx.no_device_reason = (f"no GPU ({ctx.gpu.get('reason')}); diffsr's smoke test: "
                                f"{smoke.get('error') or smoke.get('status')}")
    elif smoke.get("status") == runner.TIMEOUT:
        ctx.diffsr_skip_reason = "diffsr's smoke test timed out: its GPU runs are skipped"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pack", required=True, help="the gpu-check/ folder")
    p.add_argument("--root", required=True, help="the repository root")
    p.add_argument("--out", required=True, help="where the reports go ($OUT)")
    p.add_argument("--work", required=True, help="scratch folder (outputs, models)")
    p.add_argument("--binary", required=True, help="the unpacked diffsr binary")
    p.add_argument("--torch-python", default="python3", help="python with torch (+ diffusers)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--deadline", type=float, default=480.0, help="seconds for the whole check")
    p.add_argument("--parity-share", type=float, default=150.0,
                   help="seconds parity may use at most, so that the timings keep theirs")
    p.add_argument("--parity-dtypes", default="f32,f16")
    p.add_argument("--skip", default="", help="comma-separated steps to leave out: "
                   "parity, timing")
    p.add_argument("--self-test-cpu", action="store_true",
                   help="parity on the CPU (f32, must be exactly 0) and timings at tiny sizes")
    a = p.parse_args()

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = runner.Log(out / "gpu-check.log")
    budget = runner.Budget(a.deadline)
    ctx = Context(a, budget, log)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((ctx.pack / "manifest.json").read_text())
    doc = {"mode": "self-test-cpu" if ctx.self_test else "gpu", "device": ctx.device,
           "deadline_s": a.deadline, "started": report.now(), "finished": None,
           "elapsed_s": 0.0, "manifest": {k: manifest.get(k) for k in
                                          ("git_commit", "git_dirty", "created", "binary",
                                           "sizes", "tolerance")},
           "steps": [], "memory_checks": [], "context_overhead_bytes": None}
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}

    def emit(rec):
        doc["steps"].append(rec)
        doc["elapsed_s"] = round(budget.elapsed(), 1)
        report.write(out, doc)

    log(f"start: {doc['mode']} on {ctx.device}, deadline {a.deadline:.0f} s, pack of "
        f"{manifest.get('created')} (commit {manifest.get('git_commit')})")
    ctx.gpu = gpumem.probe() if ctx.device != "cpu" else {"present": False, "reason": "cpu"}
    env_rec = envcheck.check(ctx)
    emit(env_rec)
    decide(ctx, env_rec)
    emit(check_pack(ctx, manifest))

    if "parity" not in skip:
        dtypes = ["f32"] if ctx.self_test else [d for d in a.parity_dtypes.split(",") if d]
        parity.run_all(ctx, manifest["cases"], dtypes, a.parity_share, emit)
    if "timing" not in skip:
        timing.run_all(ctx, emit)
    for rec in ctx.prepare_records:
        doc.setdefault("models_made", []).append(rec)
    doc["context_overhead_bytes"] = timing.context_overhead(doc["steps"])
    doc["memory_checks"] = timing.memory_checks(doc["steps"], doc["context_overhead_bytes"])
    doc["timing_summary"] = timing.summary(doc["steps"])
    doc["finished"] = report.now()
    doc["elapsed_s"] = round(budget.elapsed(), 1)
    report.write(out, doc)

    counts = {}
    for r in doc["steps"]:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    log(f"done in {budget.elapsed():.0f} s: " + ", ".join(f"{k} {v}" for k, v in
                                                         sorted(counts.items()))
        + f"; reports in {out}")
    if ctx.self_test:
        return self_test_verdict(doc, log)
    return 0


def self_test_verdict(doc, log):
    """The self-test passes when the pack checks out and every parity job is exactly 0."""
    problems = []
    for r in doc["steps"]:
        if r["name"] == "pack" and r["status"] != runner.OK:
            problems.append(f"pack: {r['error']}")
        if r["name"].startswith("parity/"):
            if r["status"] != runner.OK:
                problems.append(f"{r['name']}: {r['status']}: {r['error']}")
            for j in r.get("jobs") or []:
                if j.get("max_abs") != 0.0:
                    problems.append(f"{r['name']}/{j['job']}: max |diff| {j.get('max_abs')}"
                                    + (f" ({j['error']})" if j.get("error") else ""))
    for p in problems:
        log(f"SELF-TEST PROBLEM: {p}")
    log("self-test: " + ("passed (every parity difference is exactly 0)" if not problems
                         else f"FAILED ({len(problems)} problems)"))
    return 0 if not problems else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
