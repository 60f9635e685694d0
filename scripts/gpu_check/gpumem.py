"""GPU presence and peak GPU memory of a child process, from NVML (pynvml) or nvidia-smi.

`probe()` says whether a GPU is there and how it was seen. A `Poller` samples, in a thread,
every ~20 ms with NVML (~200 ms with nvidia-smi, which starts a process each time);
`Poller.before_start()` reads the baseline, `attach(pid)` starts sampling, `stop()` ends it:

- `process_peak_bytes`: the largest `usedGpuMemory` NVML (or nvidia-smi --query-compute-apps)
  reported for the child or any of its descendants; None when the driver never listed them
  (a sandbox whose process ids the driver does not see, or no GPU);
- `device_peak_delta_bytes`: the device's used memory at its highest minus what it was before
  the child started: the fallback, valid while nothing else uses the GPU (true on the lent
  machine, where the check runs its steps one at a time).

Without pynvml and nvidia-smi, everything is None and nothing fails.
"""

import os
import shutil
import subprocess
import threading
import time

_nvml = None  # the pynvml module once nvmlInit succeeded, else False


def _nvml_module():
    global _nvml
    if _nvml is None:
        try:
            import pynvml  # noqa: PLC0415 (optional)

            pynvml.nvmlInit()
            _nvml = pynvml
        except Exception:  # noqa: BLE001 (missing module, no driver, no device: all "absent")
            _nvml = False
    return _nvml or None


def _smi(args, timeout=10):
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout,
                           check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def probe():
    """{"present": bool, "via": "nvml"|"nvidia-smi"|None, "gpus": [...], "reason": str}."""
    nvml = _nvml_module()
    if nvml is not None:
        try:
            gpus = []
            for i in range(nvml.nvmlDeviceGetCount()):
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                name = nvml.nvmlDeviceGetName(h)
                mem = nvml.nvmlDeviceGetMemoryInfo(h)
                gpus.append({"index": i, "name": name if isinstance(name, str) else name.decode(),
                             "total_bytes": int(mem.total)})
            driver = nvml.nvmlSystemGetDriverVersion()
            cuda = nvml.nvmlSystemGetCudaDriverVersion()
            info = {"present": bool(gpus), "via": "nvml", "gpus": gpus,
                    "driver": driver if isinstance(driver, str) else driver.decode(),
                    "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}"}
            if not gpus:
                info["reason"] = "NVML lists no GPU"
            return info
        except Exception as e:  # noqa: BLE001
            nvml_error = f"NVML: {e}"
    else:
        nvml_error = "NVML: pynvml missing or nvmlInit failed"
    out = _smi(["--query-gpu=index,name,memory.total,driver_version",
                "--format=csv,noheader,nounits"])
    if out is None:
        reason = nvml_error + ("; nvidia-smi failed" if shutil.which("nvidia-smi")
                               else "; no nvidia-smi")
        return {"present": False, "via": None, "gpus": [], "reason": reason}
    gpus = []
    driver = None
    for line in out.strip().splitlines():
        idx, name, total, driver = [s.strip() for s in line.split(",")]
        gpus.append({"index": int(idx), "name": name, "total_bytes": int(total) << 20})
    return {"present": bool(gpus), "via": "nvidia-smi", "gpus": gpus, "driver": driver,
            "reason": None if gpus else "nvidia-smi lists no GPU"}


def _descendants(pid):
    """pid and every process below it, from /proc/<pid>/task/*/children."""
    found = [pid]
    i = 0
    while i < len(found):
        p = found[i]
        i += 1
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    found.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return set(found)


class Poller:
    """Samples GPU memory while `pid` runs; `stop()` ends it and fills the peaks."""

    def __init__(self, pid, gpu_index=0, interval_s=0.02):
        self.pid = pid
        self.gpu_index = gpu_index
        self.interval_s = interval_s
        self.process_peak_bytes = None
        self.device_peak_delta_bytes = None
        self.via = None
        self.samples = 0
        self._stop = threading.Event()
        self._baseline = None
        self._device_peak = None
        self._thread = None

    @classmethod
    def before_start(cls, **kw):
        """A poller that has read the device's used memory, before the child exists."""
        poller = cls(None, **kw)
        if _nvml_module() is not None:
            poller.via = "nvml"
        elif shutil.which("nvidia-smi"):
            poller.via = "nvidia-smi"
            poller.interval_s = max(poller.interval_s, 0.2)
        else:
            return poller
        poller._baseline = poller._device_used()
        return poller

    def attach(self, pid):
        """Starts sampling the process `pid` (and its descendants)."""
        self.pid = pid
        if self.via is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _device_used(self):
        if self.via == "nvml":
            try:
                h = _nvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
                return int(_nvml.nvmlDeviceGetMemoryInfo(h).used)
            except Exception:  # noqa: BLE001
                return None
        out = _smi([f"--id={self.gpu_index}", "--query-gpu=memory.used",
                    "--format=csv,noheader,nounits"], timeout=5)
        try:
            return int(out.strip()) << 20
        except (AttributeError, ValueError):
            return None

    def _process_used(self, pids):
        """Bytes the driver reports for any of `pids`, or None if it lists none of them."""
        total = None
        if self.via == "nvml":
            try:
                h = _nvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
                procs = list(_nvml.nvmlDeviceGetComputeRunningProcesses(h))
            except Exception:  # noqa: BLE001
                return None
            for p in procs:
                if p.pid in pids and p.usedGpuMemory is not None:
                    total = (total or 0) + int(p.usedGpuMemory)
            return total
        out = _smi(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                   timeout=5)
        for line in (out or "").strip().splitlines():
            parts = [s.strip() for s in line.split(",")]
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                if int(parts[0]) in pids:
                    total = (total or 0) + (int(parts[1]) << 20)
        return total

    def _sample(self):
        pids = _descendants(self.pid)
        used = self._process_used(pids)
        if used is not None:
            self.process_peak_bytes = max(self.process_peak_bytes or 0, used)
        dev = self._device_used()
        if dev is not None:
            self._device_peak = max(self._device_peak or 0, dev)
        self.samples += 1

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def stop(self):
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
        if self._baseline is not None and self._device_peak is not None:
            self.device_peak_delta_bytes = max(0, self._device_peak - self._baseline)
        return self

    def record(self):
        return {"via": self.via, "samples": self.samples,
                "process_peak_bytes": self.process_peak_bytes,
                "device_peak_delta_bytes": self.device_peak_delta_bytes}


def peak_of(record):
    """The best peak a record holds: the process's own, else the device-level delta."""
    if not record:
        return None
    if record.get("process_peak_bytes") is not None:
        return record["process_peak_bytes"]
    return record.get("device_peak_delta_bytes")


def wait_idle(seconds=0.2):
    """Gives the driver a moment to release a finished process's memory before the next."""
    time.sleep(seconds)
