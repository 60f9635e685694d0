"""Step 3 of the GPU check: diffsr against PyTorch/diffusers on the same GPU, each side in a
process of its own (one warm-up, then timed runs; median and min; ratio diffsr / torch), with
the peak GPU memory of each process sampled by gpumem.Poller. Then the memory check: diffsr's
own estimate of its peak (`estimated_peak_bytes` of `diffsr bench --json`, weights included)
against the measured peak less the CUDA context, which is measured separately.

Cases (CASES), cheap first, the 512 -> 2048 upscale last with the largest timeout:
  unet-64, unet-128  f16   the full-size x4 UNet, one guided step (batch 2)
  vae-64, vae-128    f32   the x4 VAE, one decode
  gan-512            f16   realesrgan-x4plus's RRDBNet (random weights) on a 512² image
  upscale-512        f16   the full-size x4 model (random weights), 5 steps, 512² -> 2048²
"""

import json
import statistics

import gpumem
import runner

# diffsr bench case, size, dtype, timed runs, model it needs, timeouts (diffsr, torch),
# minimum seconds worth starting, extra diffsr flags, torch first. The GAN runs the whole 512²
# image at once on both sides (a budget that needs no tiles, no pre-pad); the upscale keeps diffsr's
# default GPU budget (free memory less a reserve; tiled all the same: UNet tiles are at most
# 128 latent pixels) against diffusers untiled, and times torch first, so that a slow diffsr
# run cannot cost the reference its number.
CASES = [
    ("unet", 64, "f16", 5, None, (90, 150), 20, [], False),
    ("unet", 128, "f16", 5, None, (90, 150), 20, [], False),
    ("vae", 64, "f32", 5, None, (60, 120), 15, [], False),
    ("vae", 128, "f32", 3, None, (60, 120), 15, [], False),
    ("gan", 512, "f16", 3, "gan", (90, 120), 20,
     ["--max-memory", "32G", "--pre-pad", "0"], False),
    ("upscale", 512, "f16", 1, "x4", (300, 240), 60, [], True),
]
# The CPU self-test: the same code at sizes a CPU does in seconds, with the tiny x4 configs.
SELF_TEST_SIZES = {64: 8, 128: 16, 512: 32}
UPSCALE_STEPS = 5
SELF_TEST_STEPS = 2


def _last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def _side(ctx, label, argv, timeout, env=None):
    """Runs one side; {"status", "seconds", "error", "result", "gpu_memory", "argv"}."""
    r = runner.run(argv, timeout, ctx.workdir / "timing", env=env,
                   poll_gpu=ctx.device != "cpu", label=label)
    gpumem.wait_idle(0.3)
    result = _last_json(r["stdout"]) if r["status"] == runner.OK else None
    status, error = r["status"], r["error"]
    if status == runner.OK and result is None:
        status, error = runner.FAILED, "no JSON object on stdout"
    if result is not None and ctx.device != "cpu" and result.get("output_finite") is False:
        error = "output is not finite"
    rec = {"status": status, "seconds": r["seconds"], "error": error, "result": result,
           "gpu_memory": r["gpu_memory"], "peak_bytes": gpumem.peak_of(r["gpu_memory"]),
           "argv": r["argv"]}
    if status != runner.OK:
        rec["stderr"] = runner.tail(r["stderr"], 2000)
    return rec


def _skip(reason):
    return {"status": runner.SKIPPED, "error": reason, "result": None, "seconds": 0.0}


def prepare(ctx, what):
    """Makes the random-weight model a case needs (once); returns (path, error)."""
    if what in ctx.prepared:
        return ctx.prepared[what]
    if not ctx.torch_ok:
        ctx.prepared[what] = (None, f"needs torch: {ctx.torch_reason}")
        return ctx.prepared[what]
    if what == "gan":
        path = ctx.workdir / "models" / "realesrgan-x4plus-random.safetensors"
        argv = [ctx.torch_python, ctx.py_dir / "ref_torch.py", "make-gan", path]
        wanted = 90
    else:
        if not ctx.diffusers_ok:
            ctx.prepared[what] = (None, f"needs diffusers: {ctx.diffusers_reason}")
            return ctx.prepared[what]
        path = ctx.workdir / "models" / "x4-random"
        argv = [ctx.torch_python, ctx.py_dir / "ref_torch.py", "make-x4", path,
                "--configs", ctx.configs, "--fixture", ctx.root / "tests/fixtures/tiny-x4-upscaler"]
        wanted = 240
    path.parent.mkdir(parents=True, exist_ok=True)
    timeout = ctx.budget.timeout_for(wanted, 20)
    if timeout is None:
        ctx.prepared[what] = (None, "the deadline is too near to make the model")
        return ctx.prepared[what]
    r = runner.run(argv, timeout, ctx.workdir / "timing", label=f"make-{what}")
    ctx.log(f"make {what} model: {r['status']} in {r['seconds']:.1f} s"
            + (f": {r['error']}" if r["error"] else ""))
    ctx.prepared[what] = (path, None) if r["status"] == runner.OK else (
        None, f"making the model: {r['error']}; {runner.tail(r['stderr'], 600)}")
    ctx.prepare_records.append({"model": what, "status": r["status"], "seconds": r["seconds"],
                                "error": r["error"]})
    return ctx.prepared[what]


def run_case(ctx, spec):
    kind, size, dtype, runs, needs, (t_diffsr, t_torch), minimum, extra, torch_first = spec
    steps = UPSCALE_STEPS
    if ctx.self_test:
        size, dtype, runs, steps = SELF_TEST_SIZES[size], "f32", 1, SELF_TEST_STEPS
    fields = {"case": kind, "size": size, "dtype": dtype, "runs": runs}
    if kind == "upscale":
        fields["steps"] = steps
    name = f"{kind}-{size}"
    step_name = f"timing/{name}"
    if not ctx.device_ok:
        return runner.step(step_name, runner.NO_DEVICE, error=ctx.no_device_reason, **fields)
    if ctx.budget.left() < minimum:
        return runner.step(step_name, runner.SKIPPED, error="the deadline is too near", **fields)
    model, model_error = (None, None)
    if needs:
        model, model_error = prepare(ctx, needs)
    common = ["--size", str(size), "--dtype", dtype, "--device", ctx.device,
              "--runs", str(runs), "--warmup", "1"]
    if kind == "upscale":
        common += ["--steps", str(steps)]

    def diffsr_side():
        if needs and model is None:
            return _skip(f"no model: {model_error}")
        if ctx.diffsr_skip_reason:
            return _skip(ctx.diffsr_skip_reason)
        t = ctx.budget.timeout_for(t_diffsr, minimum)
        argv = [ctx.binary, "bench", kind, *common, *extra, "--json"]
        if ctx.self_test and kind in ("unet", "vae"):  # the tiny configs, as the torch side
            argv += ["--config", ctx.configs / f"{kind}_config.json"]
        if model is not None:
            argv += ["--model", model]
        return _side(ctx, f"{name}-diffsr", argv, t) if t else _skip("the deadline is too near")

    def torch_side():
        if not ctx.torch_ok:
            return _skip(f"torch: {ctx.torch_reason}")
        if kind in ("unet", "vae", "upscale") and not ctx.diffusers_ok:
            return _skip(f"diffusers: {ctx.diffusers_reason}")
        if needs and model is None:
            return _skip(f"no model: {model_error}")
        t = ctx.budget.timeout_for(t_torch, minimum)
        argv = [ctx.torch_python, ctx.py_dir / "ref_torch.py", "time", kind, *common,
                "--configs", ctx.configs]
        if model is not None:
            argv += ["--model", model]
        return _side(ctx, f"{name}-torch", argv, t) if t else _skip("the deadline is too near")

    if torch_first:
        p = torch_side()
        d = diffsr_side()
    else:
        d = diffsr_side()
        p = torch_side()
    ratio = None
    if d.get("result") and p.get("result"):
        try:
            ratio = d["result"]["median_s"] / p["result"]["median_s"]
        except (KeyError, TypeError, ZeroDivisionError):
            ratio = None
    status = d["status"]
    rec = runner.step(step_name, status, d.get("seconds", 0) + p.get("seconds", 0),
                      d.get("error"), diffsr=d, torch=p, ratio=ratio, **fields)
    ctx.log(f"{step_name}: diffsr {_fmt(d)}, torch {_fmt(p)}"
            + (f", ratio {ratio:.2f}" if ratio else ""))
    return rec


def _fmt(side):
    r = side.get("result")
    if r and "median_s" in r:
        peak = side.get("peak_bytes")
        return (f"median {r['median_s']:.4f} s (min {r['min_s']:.4f})"
                + (f", peak {peak / 2**20:.0f} MiB" if peak else ""))
    return f"{side['status']}" + (f" ({side['error']})" if side.get("error") else "")


def run_all(ctx, emit):
    for spec in CASES:
        emit(run_case(ctx, spec))


def context_overhead(records):
    """The GPU memory of a diffsr process that holds next to nothing (the tiny GAN parity
    runs: KB of weights, 48x40 images): the CUDA context, cuBLAS workspace, loaded kernels.
    The smallest such peak, or None."""
    peaks = [gpumem.peak_of(r.get("gpu_memory")) for r in records
             if r["name"].startswith("parity/gan/") and r["status"] == runner.OK]
    peaks = [p for p in peaks if p]
    return min(peaks) if peaks else None


def memory_checks(records, context):
    """Estimate against measurement for every timed diffsr run that reported an estimate:
    holds when the measured peak is at most the estimate plus the context overhead."""
    checks = []
    for r in records:
        if not r["name"].startswith("timing/"):
            continue
        d = r.get("diffsr") or {}
        if d.get("status") != runner.OK:
            continue
        res = d.get("result") or {}
        est = res.get("estimated_peak_bytes")
        measured = d.get("peak_bytes")
        if est is None and measured is None:
            continue
        row = {"case": r["name"][len("timing/"):], "estimated_peak_bytes": est,
               "budget_bytes": res.get("budget_bytes"), "measured_peak_bytes": measured,
               "measured_via": _via(d.get("gpu_memory")), "context_bytes": context,
               "device_memory": res.get("device_memory"), "plan": res.get("plan"),
               "holds": None}
        if est is not None and measured is not None:
            allowed = est + (context or 0)
            row["holds"] = measured <= allowed
            row["measured_less_context_bytes"] = measured - (context or 0)
            row["ratio_to_estimate"] = (measured - (context or 0)) / est if est else None
        checks.append(row)
    return checks


def _via(mem):
    if not mem:
        return None
    if mem.get("process_peak_bytes") is not None:
        return f"{mem['via']} (process)"
    if mem.get("device_peak_delta_bytes") is not None:
        return f"{mem['via']} (device used, less the baseline)"
    return None


def summary(records):
    """Median ratios, for the report's headline."""
    ratios = [r["ratio"] for r in records if r.get("ratio")]
    return {"cases_timed": len(ratios),
            "median_ratio": statistics.median(ratios) if ratios else None}
