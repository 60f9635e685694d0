"""Step 4 of the GPU check: the reports, rewritten after every step (a check killed halfway
still leaves what it had): gpu-check.json (everything, machine-readable) and gpu-check.md
(the environment, the parity table, the timing table, the memory check, every step's status).
"""

import json
import time
from pathlib import Path

import runner


def _mib(b):
    return "-" if b is None else f"{b / 2**20:,.0f}"


def _peak(side):
    return _mib(side.get("peak_bytes")) if side.get("status") == runner.OK else "-"


def _sci(x):
    return "-" if x is None else f"{x:.2e}"


def _s(side):
    r = (side or {}).get("result") or {}
    if "median_s" not in r:
        status = (side or {}).get("status", "-")
        err = (side or {}).get("error")
        return f"{status}" + (f": {err[:80]}" if err else "")
    return f"{r['median_s'] * 1e3:,.1f} ({r['min_s'] * 1e3:,.1f})"


def markdown(doc):
    lines = [f"# diffsr GPU check — {doc['finished'] or 'in progress'}", ""]
    m = doc.get("manifest") or {}
    lines += [f"- mode: {doc['mode']}; device: `{doc['device']}`; deadline {doc['deadline_s']} s, "
              f"used {doc['elapsed_s']:.0f} s",
              f"- pack: commit `{m.get('git_commit', '?')}`"
              + (" (with uncommitted changes)" if m.get("git_dirty") else "")
              + f", made {m.get('created', '?')}; binary sha256 "
              f"`{(m.get('binary') or {}).get('sha256', '?')[:16]}`"]
    env = next((r for r in doc["steps"] if r["name"] == "environment"), None)
    if env:
        i = env.get("info", {})
        gpu = i.get("gpu") or {}
        names = ", ".join(g["name"] for g in gpu.get("gpus", [])) or gpu.get("reason") or "-"
        pk = i.get("python_packages") or {}
        smoke = i.get("smoke") or {}
        lines += [f"- GPU: {names}; driver {gpu.get('driver', '-')}, "
                  f"CUDA {gpu.get('cuda_driver_version', '-')}",
                  f"- glibc {i.get('glibc')}; binary needs "
                  f"{(i.get('binary_needs') or {}).get('max_glibc')}; {i.get('diffsr_version')}",
                  f"- torch {pk.get('torch') or '-'} (CUDA {pk.get('torch_cuda') or '-'}), "
                  f"diffusers {pk.get('diffusers') or '-'}, "
                  f"transformers {pk.get('transformers') or '-'}",
                  f"- smoke test (`bench unet --size 8`): **{smoke.get('status', '-')}**"
                  + (f" — {smoke.get('error')}" if smoke.get("error") else "")]
        libs = i.get("cuda_libs") or {}
        if isinstance(libs, dict) and libs and "error" not in libs:
            found = [f"{k} → {v.get('path') or 'found'}" if v.get("found") else f"{k}: missing"
                     for k, v in libs.items()]
            lines.append("- CUDA libraries: " + "; ".join(found))
        if env.get("error"):
            lines.append(f"- **environment problems**: {env['error']}")
    lines.append("")

    parity = [r for r in doc["steps"] if r["name"].startswith("parity/")]
    if parity:
        lines += ["## Parity: GPU against the CPU f32 reference (0..1 units)", "",
                  "| case | dtype | status | jobs within tolerance | worst max | worst mean "
                  "| tolerance (max, mean) | s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in parity:
            jobs = r.get("jobs") or []
            maxes = [j["max_abs"] for j in jobs if j.get("max_abs") is not None]
            means = [j["mean_abs"] for j in jobs if j.get("mean_abs") is not None]
            tol = r.get("tolerance") or {}
            if not jobs:
                lines.append(f"| {r.get('case')} | {r.get('dtype')} | {r['status']}: "
                             f"{(r.get('error') or '')[:80]} | | | | | |")
                continue
            lines.append(
                f"| {r.get('case')} | {r.get('dtype')} | {r['status']} | "
                f"{sum(j['pass'] for j in jobs)}/{len(jobs)} | "
                f"{_sci(max(maxes) if maxes else None)} | {_sci(max(means) if means else None)}"
                f" | {_sci(tol.get('max_abs'))}, {_sci(tol.get('mean_abs'))} | "
                f"{r['seconds']:.1f} |")
        lines.append("")
        detail = [(r, j) for r in parity for j in r.get("jobs") or []
                  if r.get("engine") == "diffusion"]
        if detail:
            lines += ["Diffusion configs:", "", "| config | dtype | max | mean | > 1/255 | pass |",
                      "|---|---|---|---|---|---|"]
            for r, j in detail:
                verdict = "yes" if j["pass"] else "NO" + (
                    f": {j['error'][:60]}" if j.get("error") else "")
                lines.append(f"| {j['job']} | {r['dtype']} | {_sci(j.get('max_abs'))} | "
                             f"{_sci(j.get('mean_abs'))} | {j.get('over_1_255', '-')} | "
                             f"{verdict} |")
            lines.append("")

    timing = [r for r in doc["steps"] if r["name"].startswith("timing/")]
    if timing:
        lines += ["## Timing against PyTorch on the same GPU (ms, median (min), after a warm-up)",
                  "", "| case | dtype | diffsr | torch | ratio diffsr/torch | diffsr peak MiB "
                  "| torch peak MiB |", "|---|---|---|---|---|---|---|"]
        for r in timing:
            d, p = r.get("diffsr") or {}, r.get("torch") or {}
            label = r["name"][len("timing/"):]
            if r["status"] in (runner.NO_DEVICE, runner.SKIPPED) and not d:
                lines.append(f"| {label} | {r.get('dtype')} | {r['status']}: "
                             f"{(r.get('error') or '')[:80]} | | | | |")
                continue
            ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.2f}"
            lines.append(f"| {label} | {r.get('dtype')} | {_s(d)} | {_s(p)} | {ratio} | "
                         f"{_peak(d)} | {_peak(p)} |")
        lines.append("")

    checks = doc.get("memory_checks") or []
    if checks:
        lines += ["## diffsr's memory estimate against the measured peak", "",
                  f"CUDA context overhead (smallest peak of a tiny GAN parity run): "
                  f"{_mib(doc.get('context_overhead_bytes'))} MiB.", "",
                  "| case | estimate MiB | budget MiB | measured peak MiB | measured less context "
                  "| holds | via | diffsr's plan |", "|---|---|---|---|---|---|---|---|"]
        for c in checks:
            holds = {True: "yes", False: "**NO**", None: "-"}[c["holds"]]
            lines.append(f"| {c['case']} | {_mib(c['estimated_peak_bytes'])} | "
                         f"{_mib(c['budget_bytes'])} | {_mib(c['measured_peak_bytes'])} | "
                         f"{_mib(c.get('measured_less_context_bytes'))} | {holds} | "
                         f"{c.get('measured_via') or '-'} | {c.get('plan') or '-'} |")
        lines.append("")

    lines += ["## Steps", "", "| step | status | s | error |", "|---|---|---|---|"]
    for r in doc["steps"]:
        err = (r.get("error") or "").replace("|", "\\|").replace("\n", " ")[:160]
        lines.append(f"| {r['name']} | {r['status']} | {r['seconds']:.1f} | {err} |")
    counts = {}
    for r in doc["steps"]:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines += ["", "Totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), ""]
    return "\n".join(lines)


def write(out_dir, doc):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".gpu-check.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(out_dir / "gpu-check.json")
    tmp = out_dir / ".gpu-check.md.tmp"
    tmp.write_text(markdown(doc))
    tmp.replace(out_dir / "gpu-check.md")


def now():
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")
