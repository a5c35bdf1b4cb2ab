"""Host facts for the ``/api/v1/system`` endpoints: CPU, memory, GPUs (via nvidia-smi,
never torch), as the response records of segloop.api.schemas. Used by
segloop.api.routes_system only.

Imports psutil, the standard library and segloop.api.schemas; must not import engines, torch,
the job store, the worker or the web UI.
"""

from __future__ import annotations

import shutil
import subprocess

from .schemas import GpuOut, HostOut

__all__ = ["gpu_info", "host_info"]


def gpu_info() -> list[GpuOut]:
    """One record per NVIDIA GPU (name, memory MiB, utilisation %), [] when none or no driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total,memory.used,utilization.gpu",
             "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5,
            check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5:
            idx, name, total, used, util = parts
            gpus.append(GpuOut(index=int(idx), name=name, memory_total_mib=float(total),
                               memory_used_mib=float(used), utilization_percent=float(util)))
    return gpus


def host_info() -> HostOut:
    """CPU count and load, memory, this process's memory."""
    import psutil

    vm = psutil.virtual_memory()
    proc = psutil.Process()
    return HostOut(
        cpu_count=psutil.cpu_count(),
        cpu_percent=psutil.cpu_percent(interval=None),
        load_average=list(psutil.getloadavg()),
        memory_total_bytes=vm.total,
        memory_available_bytes=vm.available,
        memory_percent=vm.percent,
        process_rss_bytes=proc.memory_info().rss,
    )
