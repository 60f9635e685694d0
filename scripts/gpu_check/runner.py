"""Running the check's commands so that none can hang it: a deadline for the whole check
(`Budget`) and `run()`, which starts one command in a process group of its own, samples its
GPU memory, and on timeout kills the whole group (SIGTERM, then SIGKILL 3 s later).

Every step of the check ends in a record (a dict) with at least
`{"name", "status", "seconds", "error"}`, status one of ok, failed, timeout, skipped,
"no device"; `Log` writes one line a step to stderr and to the log file.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gpumem

OK, FAILED, TIMEOUT, SKIPPED, NO_DEVICE = "ok", "failed", "timeout", "skipped", "no device"
TAIL_CHARS = 4000


class Budget:
    """The check's overall deadline, and what is left of it for one step."""

    def __init__(self, total_s, reserve_s=15.0):
        self.start = time.monotonic()
        self.total_s = total_s
        self.reserve_s = reserve_s  # kept back for writing the reports

    def elapsed(self):
        return time.monotonic() - self.start

    def left(self):
        return self.total_s - self.reserve_s - self.elapsed()

    def timeout_for(self, wanted_s, minimum_s):
        """The step's timeout: what it wants, cut to what is left; None if under minimum_s."""
        left = self.left()
        if left < minimum_s:
            return None
        return min(wanted_s, left)


class Log:
    """One line a step on stderr and in `path` (appended, flushed at once)."""

    def __init__(self, path=None):
        self.path = Path(path) if path else None

    def __call__(self, msg):
        line = f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}"
        print(line, file=sys.stderr, flush=True)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line + "\n")


def tail(text, n=TAIL_CHARS):
    text = text or ""
    return text if len(text) <= n else "…" + text[-n:]


def _kill_group(proc):
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run(argv, timeout_s, workdir, env=None, poll_gpu=False, label="cmd", stdin_text=None):
    """Runs argv with a timeout; returns {"argv", "rc", "status", "seconds", "stdout",
    "stderr", "gpu_memory", "error"}. stdout/stderr go through files in workdir, so a chatty
    command cannot block on a full pipe; status is ok (rc 0), failed or timeout."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out_path = workdir / f"{label}.stdout"
    err_path = workdir / f"{label}.stderr"
    record = {"argv": [str(a) for a in argv], "rc": None, "status": FAILED, "seconds": 0.0,
              "stdout": "", "stderr": "", "gpu_memory": None, "error": None}
    t0 = time.monotonic()
    poller = gpumem.Poller.before_start() if poll_gpu else None
    with open(out_path, "w") as out, open(err_path, "w") as err:
        try:
            proc = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=err,
                                    stdin=subprocess.PIPE if stdin_text is not None
                                    else subprocess.DEVNULL,
                                    env=env, cwd=str(workdir), start_new_session=True)
        except OSError as e:
            record["error"] = f"could not start {argv[0]}: {e}"
            return record
        if poller is not None:
            poller.attach(proc.pid)
        try:
            if stdin_text is not None:
                proc.communicate(stdin_text.encode(), timeout=timeout_s)
            else:
                proc.wait(timeout=timeout_s)
            record["rc"] = proc.returncode
            record["status"] = OK if proc.returncode == 0 else FAILED
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            record["status"] = TIMEOUT
            record["error"] = f"timed out after {timeout_s:.0f} s (process group killed)"
        finally:
            # A child may leave grandchildren behind in its group: end them too.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if poller is not None:
                record["gpu_memory"] = poller.stop().record()
    record["seconds"] = round(time.monotonic() - t0, 3)
    record["stdout"] = out_path.read_text(errors="replace")
    record["stderr"] = err_path.read_text(errors="replace")
    if record["status"] == FAILED and record["error"] is None:
        record["error"] = f"exit {record['rc']}: {message(record['stderr'])}"[:2000]
    return record


def message(stderr):
    """The line of a failed command's stderr that says why: diffsr's (and clap's) `error:`
    line, else the last line (a Python traceback's exception)."""
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors[0] if errors else lines[-1]) if lines else "(no message)"


def step(name, status, seconds=0.0, error=None, **fields):
    """A step's record."""
    return {"name": name, "status": status, "seconds": round(seconds, 3), "error": error,
            **fields}
