"""Builds gpu-check/, everything the GPU machine needs for the check, here (stdlib only; run
by `scripts/gpu-check.sh pack`, which builds the binary first):

    gpu-check/run.sh            the entry point there (scripts/gpu_check/run.sh)
    gpu-check/py/               the driver and its modules (scripts/gpu_check/*.py)
    gpu-check/bin/diffsr.xz     the binary, xz-compressed (or bin/diffsr where that saves little)
    gpu-check/inputs/           16-bit versions of the fixture images the cases use
    gpu-check/refs/             the CPU f32 outputs of every parity case, made here by the
                                same binary with --device cpu
    gpu-check/configs/          full-size x4 UNet, VAE and text encoder configs (random models
                                are built there from them); configs-tiny/: the tiny fixture's,
                                for the CPU self-test
    gpu-check/wheels/           wheels the GPU machine's image lacks (diffusers==0.42.1)
    gpu-check/manifest.json     cases, tolerances, every file's hash and size (the fixtures
                                it uses too), the binary, git commit, date, sizes

Then checks that the pack plus the working tree that travels with it (tracked files and
untracked files git does not ignore) stay under the device tool's 64 MiB, and prints the
command to give the device tool.
"""

import argparse
import datetime
import hashlib
import json
import lzma
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cases  # noqa: E402
import elf  # noqa: E402
import png  # noqa: E402
import runner  # noqa: E402

LIMIT = 64 << 20
DIFFUSERS = "diffusers==0.42.1"  # the fixtures' pin (tests/fixtures/tiny-x4-upscaler)
PIP_PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64"]
TIMEOUT_S = 570  # for the device tool's run: the driver's 480 s deadline plus set-up


def say(msg):
    print(f"[gpu-check pack] {msg}", file=sys.stderr, flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git(root, *args):
    r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=False)
    return r.stdout.decode(errors="replace") if r.returncode == 0 else None


def travelling_bytes(root, pack):
    """Bytes of what the device tool sends besides carried paths: tracked files and untracked
    files git does not ignore (the pack itself is ignored: /gpu-check/ in .gitignore)."""
    total = 0
    names = (git(root, "ls-files", "-z") or "").split("\0")
    names += (git(root, "ls-files", "-z", "--others", "--exclude-standard") or "").split("\0")
    for name in filter(None, names):
        p = root / name
        if p.is_file() and not p.is_symlink() and pack not in p.parents:
            total += p.stat().st_size
    return total


def tree_bytes(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def text_encoder_config(root):
    """The x4 text encoder's config, from the one place the project keeps it."""
    src = root / "benches/common/random_model.rs"
    m = re.search(r'X4_TEXT_ENCODER_CONFIG: &str = r#"(.*?)"#;', src.read_text(), re.S)
    if not m:
        raise SystemExit(f"{src}: X4_TEXT_ENCODER_CONFIG not found")
    json.loads(m.group(1))
    return m.group(1)


def pack_binary(binary, pack):
    """xz (Python's lzma: run.sh unpacks it with the same module there): the CUDA binary's
    63 MiB, mostly candle's PTX, become ~9.6 MiB (gzip -9: 17.6) in ~25 s."""
    (pack / "bin").mkdir()
    raw = binary.read_bytes()
    say(f"compressing {binary} ({len(raw) / 2**20:.1f} MiB) with xz")
    packed = lzma.compress(raw, preset=6)
    info = {"source": str(binary), "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    if len(packed) < 0.9 * len(raw):
        (pack / "bin/diffsr.xz").write_bytes(packed)
        info.update(file="gpu-check/bin/diffsr.xz", packed_bytes=len(packed))
    else:
        shutil.copy2(binary, pack / "bin/diffsr")
        info.update(file="gpu-check/bin/diffsr", packed_bytes=len(raw))
    try:
        info["needs"] = elf.needs(binary)
    except (OSError, ValueError) as e:
        info["needs"] = {"error": str(e)}
    r = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30,
                       check=False)
    info["version"] = r.stdout.strip() or r.stderr.strip()
    say(f"binary {binary}: {len(raw) / 2**20:.1f} MiB, packed {info['packed_bytes'] / 2**20:.1f}"
        f" MiB; {info['version']}; needs GLIBC {info['needs'].get('max_glibc')}")
    return info


def make_inputs(root, all_cases):
    done = set()
    for case in all_cases:
        for job in case["jobs"]:
            if job["input"] in done:
                continue
            out = root / job["input"]
            out.parent.mkdir(parents=True, exist_ok=True)
            png.write(out, png.to_16bit(png.read_stdlib(root / job["source"])))
            done.add(job["input"])
    say(f"{len(done)} 16-bit inputs")


def make_references(root, binary, all_cases):
    """Runs every case on the CPU in f32 with the packed binary; the outputs are the refs."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-refs-") as tmp:
        for case in all_cases:
            work = Path(tmp) / case["id"].replace("/", "-")
            argv = cases.command(binary, root, case, "cpu", "f32", work)
            r = runner.run(argv, 600, work, label="run")
            if r["status"] != runner.OK:
                raise SystemExit(f"the CPU reference of {case['id']} failed ({r['error']}):\n"
                                 f"{' '.join(r['argv'])}\n{runner.tail(r['stderr'], 3000)}")
            for job in case["jobs"]:
                out = cases.output_path(case, job, work)
                if not out.exists():
                    raise SystemExit(f"the CPU run of {case['id']} wrote no {out.name}")
                ref = root / job["ref"]
                ref.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(out, ref)
            case["cpu_seconds"] = r["seconds"]
            say(f"reference {case['id']}: {len(case['jobs'])} outputs in {r['seconds']:.1f} s")


def fetch_wheels(pack, cache):
    """diffusers (the GPU image has torch, transformers, huggingface_hub, safetensors,
    requests, filelock, numpy, Pillow and regex; on Python 3.12 diffusers does not import
    importlib_metadata). Cached; a failed download leaves the torch references skipped."""
    cache.mkdir(parents=True, exist_ok=True)
    name = DIFFUSERS.replace("==", "-")
    have = sorted(cache.glob(f"{name}-*.whl"))
    if not have:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *PIP_PLATFORM, "-d",
               str(cache), DIFFUSERS]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        have = sorted(cache.glob(f"{name}-*.whl"))
        if r.returncode != 0 or not have:
            say(f"WARNING: could not download {DIFFUSERS} ({r.stderr.strip()[-300:]}); the "
                "diffusers references will be skipped there")
            return []
    (pack / "wheels").mkdir()
    shutil.copy2(have[0], pack / "wheels" / have[0].name)
    say(f"wheel {have[0].name} ({have[0].stat().st_size / 2**20:.1f} MiB)")
    return [have[0].name]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(HERE.parents[1]))
    p.add_argument("--binary", required=True)
    p.add_argument("--wheel-cache", default=str(Path.home() / ".cache/diffsr-gpu-check/wheels"))
    p.add_argument("--no-wheels", action="store_true")
    a = p.parse_args()
    root = Path(a.root).resolve()
    pack = root / "gpu-check"
    binary = Path(a.binary).resolve()
    if not binary.is_file():
        raise SystemExit(f"no binary at {binary}")
    if pack.exists():
        shutil.rmtree(pack)
    pack.mkdir()

    manifest = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "git_commit": (git(root, "rev-parse", "HEAD") or "?").strip(),
        "git_dirty": bool((git(root, "status", "--porcelain", "--untracked-files=no") or "")
                          .strip()),
        "tolerance": cases.TOLERANCE}
    manifest["binary"] = pack_binary(binary, pack)

    (pack / "py").mkdir()
    for f in sorted(HERE.glob("*.py")):
        if f.name != "pack.py":
            shutil.copy2(f, pack / "py" / f.name)
    shutil.copy2(HERE / "run.sh", pack / "run.sh")
    (pack / "run.sh").chmod(0o755)

    configs = pack / "configs"
    configs.mkdir()
    for name in ("unet_config.json", "vae_config.json"):
        shutil.copy2(root / "assets/x4-upscaler" / name, configs / name)
    (configs / "text_encoder_config.json").write_text(text_encoder_config(root))
    tiny = pack / "configs-tiny"
    tiny.mkdir()
    for part in ("unet", "vae", "text_encoder"):
        shutil.copy2(root / cases.X4_MODEL / part / "config.json", tiny / f"{part}_config.json")

    all_cases = cases.all_cases(root)
    make_inputs(root, all_cases)
    make_references(root, binary, all_cases)
    manifest["cases"] = all_cases
    manifest["wheels"] = [] if a.no_wheels else fetch_wheels(pack, Path(a.wheel_cache))

    files = {}
    for f in sorted(pack.rglob("*")):
        if f.is_file():
            files[str(f.relative_to(root))] = f
    fixture_files = set()
    for case in all_cases:
        for rel in cases.referenced_files(case):
            path = root / rel
            found = sorted(path.rglob("*")) if path.is_dir() else [path]
            fixture_files.update(str(x.relative_to(root)) for x in found if x.is_file())
    fixture_files.update(str(x.relative_to(root)) for x in
                         (root / cases.X4_MODEL).rglob("*") if x.is_file())
    for rel in sorted(fixture_files):
        files[rel] = root / rel
    manifest["files"] = {rel: {"sha256": sha256(f), "bytes": f.stat().st_size}
                         for rel, f in files.items()}

    pack_bytes = tree_bytes(pack)
    tree = travelling_bytes(root, pack)
    manifest["sizes"] = {"pack_bytes": pack_bytes, "working_tree_bytes": tree,
                         "total_bytes": pack_bytes + tree, "limit_bytes": LIMIT}
    (pack / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = tree_bytes(pack) + tree

    parts = {d.name: tree_bytes(d) if d.is_dir() else d.stat().st_size for d in pack.iterdir()}
    say("pack contents: " + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in
                                      sorted(parts.items(), key=lambda kv: -kv[1])))
    say(f"size: pack {tree_bytes(pack) / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB"
        f" = {total / 2**20:.1f} MiB of the device tool's {LIMIT >> 20} MiB")
    if total >= LIMIT:
        raise SystemExit(f"too large: {total / 2**20:.1f} MiB >= {LIMIT >> 20} MiB")
    print(f'run(command="bash gpu-check/run.sh", carry=["gpu-check"], timeout_s={TIMEOUT_S})')
    return 0


if __name__ == "__main__":
    sys.exit(main())
