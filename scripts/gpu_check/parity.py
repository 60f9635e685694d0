"""Step 2 of the GPU check: GPU against CPU. Each case of the pack's manifest (cases.py) runs
once per dtype on the device; every output is compared with the CPU f32 reference made at pack
time by the same binary: max and mean absolute difference in 0..1 units, judged against
cases.TOLERANCE (the numbers are kept whatever the verdict).

In the CPU self-test (device cpu, f32 only) every difference must be exactly 0: that proves
the packing, the references and the comparison code on a machine without a GPU.
"""

import time

import cases
import gpumem
import imgdiff
import runner

# (wanted, minimum) timeout of one run: the first CUDA run also JIT-compiles the kernels' PTX.
TIMEOUT = {"diffusion": (120, 20), "gan": (60, 10)}


def run_case(ctx, case, dtype, share):
    """One case in one dtype: a record with a row per job."""
    name = f"parity/{case['id']}/{dtype}"
    if not ctx.device_ok:
        return runner.step(name, runner.NO_DEVICE, error=ctx.no_device_reason,
                           case=case["id"], dtype=dtype)
    if share.left() <= 0:
        return runner.step(name, runner.SKIPPED, error="the parity share of the deadline is "
                           "spent (core cases run first)", case=case["id"], dtype=dtype)
    wanted, minimum = TIMEOUT[case["engine"]]
    timeout = ctx.budget.timeout_for(min(wanted, max(share.left(), minimum)), minimum)
    if timeout is None:
        return runner.step(name, runner.SKIPPED, error="the deadline is too near",
                           case=case["id"], dtype=dtype)
    workdir = ctx.workdir / "parity" / case["id"].replace("/", "-") / dtype
    argv = cases.command(ctx.binary, ctx.root, case, ctx.device, dtype, workdir)
    r = runner.run(argv, timeout, workdir, poll_gpu=ctx.device != "cpu", label="run")
    gpumem.wait_idle(0.1)
    failed = cases.failures(cases.json_events(r["stdout"]))
    tol_max, tol_mean = cases.TOLERANCE[dtype]
    if ctx.self_test:
        tol_max = tol_mean = 0.0
    jobs = []
    for job in case["jobs"]:
        out = cases.output_path(case, job, workdir)
        row = {"job": job["name"], "max_abs": None, "mean_abs": None, "pass": False}
        if out.exists():
            try:
                row.update(imgdiff.compare(out, ctx.root / job["ref"]))
                row["pass"] = row["max_abs"] <= tol_max and row["mean_abs"] <= tol_mean
            except (OSError, ValueError) as e:
                row["error"] = str(e)
        else:
            row["error"] = failed.get(out.name) or failed.get("run") or "no output written"
        jobs.append(row)
    status = r["status"]
    if status == runner.OK and any(j.get("error") for j in jobs):
        status = runner.FAILED
    error = r["error"]
    if status == runner.FAILED and not error:
        error = "; ".join(f"{j['job']}: {j['error']}" for j in jobs if j.get("error"))[:2000]
    rec = runner.step(name, status, r["seconds"], error, case=case["id"],
                      engine=case["engine"], dtype=dtype, device=ctx.device,
                      tolerance={"max_abs": tol_max, "mean_abs": tol_mean},
                      all_pass=bool(jobs) and all(j["pass"] for j in jobs), jobs=jobs,
                      gpu_memory=r["gpu_memory"], argv=r["argv"],
                      stderr=runner.tail(r["stderr"], 1500) if status != runner.OK else None)
    worst = max((j["max_abs"] for j in jobs if j["max_abs"] is not None), default=None)
    ctx.log(f"{name}: {status} in {r['seconds']:.1f} s, worst max |diff| "
            f"{'-' if worst is None else f'{worst:.2e}'}, "
            f"{sum(j['pass'] for j in jobs)}/{len(jobs)} within tolerance"
            + (f": {error}" if error else ""))
    return rec


class Share:
    """The part of the deadline parity may use, so that the timings keep theirs."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return self.end - time.monotonic()


def run_all(ctx, manifest_cases, dtypes, share_s, emit):
    """Every case in every dtype, core cases first (their order in the manifest); each
    record is passed to emit as soon as it exists."""
    share = Share(share_s)
    for case in manifest_cases:
        for dtype in dtypes:
            emit(run_case(ctx, case, dtype, share))
