"""The parity cases of the GPU check, shared by the pack (which runs them on the CPU here to
make the references) and the driver (which runs them on the GPU there and compares).

- diffusion: every config of tests/fixtures/x4_pipeline.json (the tiny x4 upscaler, the
  schedulers, guidance on and off, noise levels 0..350, a floored input), all in one
  `diffsr upscale --manifest` run per dtype;
- gan: every valid model of tests/fixtures/gan/gan_parity.json, the built-in model and a
  denoise blend (--denoise), each on the three 48x40 photos in one run per model and dtype.

Inputs are the fixtures' 8-bit PNGs made 16-bit (same values): diffsr keeps the input's depth,
so the outputs are 16-bit and differences far below 1/255 show.

Paths in the pack's manifest are relative to the repository root: the fixtures are tracked
files, so they travel with the working tree and are not copied (the manifest holds their
hashes, and the driver checks them).
"""

import json
from pathlib import Path

X4_MODEL = "tests/fixtures/tiny-x4-upscaler"
X4_CONFIGS = "tests/fixtures/x4_pipeline.json"
X4_IMAGES = "tests/fixtures/images"
GAN_DIR = "tests/fixtures/gan"
GAN_PHOTOS = ["astronaut", "chelsea", "coffee"]
# Run first, so that a check cut short by its deadline still has them.
X4_CORE = ["default-ddim", "euler-a-noise350", "dpmpp-2m-sde"]
GAN_CORE = ["rrdb_x4", "srvgg_x4_prelu", "builtin"]
MANIFEST_KEYS = ("prompt", "negative_prompt", "seed", "steps", "guidance", "noise_level",
                 "scheduler", "eta")

# Judged tolerances against the CPU f32 reference, in 0..1 units: (max, mean).
# f32 on the GPU differs only by summation order (cuBLAS, no TF32: candle's default), ~1e-5
# per op, amplified by the denoising loop; f16 keeps ~3 decimal digits.
TOLERANCE = {"f32": (2e-3, 2e-4), "f16": (3e-2, 3e-3), "bf16": (1e-1, 1e-2)}


def x4_case(root):
    """The diffusion case: one job per config, core configs first."""
    configs = json.loads((Path(root) / X4_CONFIGS).read_text())
    configs.sort(key=lambda c: (c["name"] not in X4_CORE,
                                X4_CORE.index(c["name"]) if c["name"] in X4_CORE else 0))
    jobs = []
    for c in configs:
        stem = Path(c["image"]).stem
        options = {k: c[k] for k in MANIFEST_KEYS if c.get(k) is not None}
        jobs.append({"name": c["name"], "source": f"{X4_IMAGES}/{c['image']}",
                     "input": f"gpu-check/inputs/x4/{stem}.png", "options": options,
                     "ref": f"gpu-check/refs/x4/{c['name']}.png"})
    return {"id": "x4", "engine": "diffusion", "model": X4_MODEL, "args": [], "jobs": jobs}


def gan_cases(root):
    """One case per GAN model: the fixtures' valid models, the built-in one, a blend."""
    meta = json.loads((Path(root) / GAN_DIR / "gan_parity.json").read_text())
    models = [(v["name"], f"{GAN_DIR}/{v['file']}", []) for v in meta["variants"]]
    models.append(("builtin", None, []))
    models.append(("srvgg_general_denoise", f"{GAN_DIR}/srvgg_general.pth",
                   ["--denoise", "0.5", "--denoise-model", f"{GAN_DIR}/srvgg_general_wdn.pth"]))
    models.sort(key=lambda m: (m[0] not in GAN_CORE,
                               GAN_CORE.index(m[0]) if m[0] in GAN_CORE else 0))
    cases = []
    for name, model, args in models:
        jobs = [{"name": photo, "source": f"{GAN_DIR}/photos/{photo}.png",
                 "input": f"gpu-check/inputs/gan/{photo}.png", "options": {},
                 "ref": f"gpu-check/refs/gan/{name}/{photo}.png"} for photo in GAN_PHOTOS]
        cases.append({"id": f"gan/{name}", "engine": "gan", "model": model, "args": args,
                      "jobs": jobs})
    return cases


def all_cases(root):
    return [x4_case(root), *gan_cases(root)]


def referenced_files(case):
    """Repository files a case reads besides its inputs (for the manifest's hashes)."""
    files = []
    if case["model"]:
        files.append(case["model"])
    files += [a for a in case["args"] if a.startswith("tests/")]
    return files


def command(binary, root, case, device, dtype, workdir):
    """argv of one run of `case` (all its jobs), writing outputs `<job name>.png` under
    workdir; for diffusion it also writes workdir/jobs.jsonl."""
    root = Path(root)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    common = ["--device", device, "--dtype", dtype, "--json"]
    args = [a if not a.startswith("tests/") else str(root / a) for a in case["args"]]
    if case["engine"] == "diffusion":
        lines = []
        for job in case["jobs"]:
            line = {"input": str(root / job["input"]), "output": f"{job['name']}.png",
                    **job["options"]}
            lines.append(json.dumps(line))
        (workdir / "jobs.jsonl").write_text("\n".join(lines) + "\n")
        return [str(binary), "upscale", "--manifest", str(workdir / "jobs.jsonl"),
                "--model", str(root / case["model"]), "--engine", "diffusion", *args, *common]
    model = ["--model", str(root / case["model"])] if case["model"] else []
    inputs = [str(root / job["input"]) for job in case["jobs"]]
    return [str(binary), "upscale", *inputs, "--out-dir", str(workdir), "--name",
            "{stem}.png", "--engine", "gan", *model, *args, *common]


def output_path(case, job, workdir):
    return Path(workdir) / f"{job['name']}.png"


def json_events(stdout):
    """The JSON events of a `diffsr upscale --json` run (lines that are not JSON skipped)."""
    events = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def failures(events):
    """{output or input: error} of the run's failed jobs, and an `error` event's message."""
    out = {}
    for e in events:
        if e.get("event") == "failed":
            out[e.get("output") or e.get("input") or "?"] = e.get("error")
        elif e.get("event") == "error":
            out["run"] = e.get("error") or e.get("message")
    return out
