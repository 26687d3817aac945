"""What the machine can give plugins, and what active plugins already claim."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psutil


@dataclass(frozen=True)
class Capacity:
    memory_mb: int
    cpu_cores: float
    gpus: int


@lru_cache(maxsize=1)
def detect_gpus() -> int:
    """Number of NVIDIA GPUs: NVML when the `pynvml` module is there, else `nvidia-smi -L`."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML library, no driver: fall back to the CLI
        pass
    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    if out.returncode != 0:
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def machine_capacity(
    memory_mb: int | None = None, cpu_cores: float | None = None, gpus: int | None = None
) -> Capacity:
    """The machine's capacity, each figure capped by the setting when one is given."""
    real_mem = int(psutil.virtual_memory().total // (1024 * 1024))
    real_cpu = float(psutil.cpu_count(logical=True) or 1)
    real_gpu = detect_gpus() if gpus is None or gpus > 0 else 0
    return Capacity(
        memory_mb=min(real_mem, memory_mb) if memory_mb is not None else real_mem,
        cpu_cores=min(real_cpu, cpu_cores) if cpu_cores is not None else real_cpu,
        gpus=min(real_gpu, gpus) if gpus is not None else real_gpu,
    )


def resource_shortfall(
    capacity: Capacity, claimed: list[dict[str, Any]], need: dict[str, Any]
) -> dict[str, Any] | None:
    """None when `need` fits beside `claimed` on one replica; else the figures that show it
    does not. Memory and GPUs add up; CPU cores are a minimum."""
    used_mem = sum(int(c.get("min_memory_mb") or 0) for c in claimed)
    used_cpu = sum(float(c.get("min_cpu_cores") or 0) for c in claimed)
    used_gpu = sum(1 for c in claimed if c.get("gpu_required"))
    short: dict[str, Any] = {}
    need_mem = int(need.get("min_memory_mb") or 0)
    need_cpu = float(need.get("min_cpu_cores") or 0)
    need_gpu = 1 if need.get("gpu_required") else 0
    if need_mem > capacity.memory_mb - used_mem:
        short["memory_mb"] = {
            "required": need_mem,
            "available": max(capacity.memory_mb - used_mem, 0),
            "capacity": capacity.memory_mb,
            "claimed_by_active_plugins": used_mem,
        }
    # CPU cores are a minimum the replica must have, not a claim that adds up: plugins share
    # CPU time (three plugins that each ask for one core run on a two-core machine).
    if need_cpu > capacity.cpu_cores + 1e-9:
        short["cpu_cores"] = {
            "required": need_cpu,
            "available": capacity.cpu_cores,
            "capacity": capacity.cpu_cores,
            "claimed_by_active_plugins": round(used_cpu, 3),
        }
    if need_gpu > capacity.gpus - used_gpu:
        short["gpus"] = {
            "required": need_gpu,
            "available": max(capacity.gpus - used_gpu, 0),
            "capacity": capacity.gpus,
            "claimed_by_active_plugins": used_gpu,
        }
    return short or None
