"""The machine a run happened on, and the wall and CPU time of its stages."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import torch

__all__ = ["Stage", "machine_info"]


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads and version, Python, and the 1-minute load average now."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        load: float | None = round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        load = None
    return {
        "cpu": cpu, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__), "python": platform.python_version(), "load_avg_1min": load,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


class Stage:
    """Times a stage (wall and process CPU seconds) into ``timings[name]``; prints a line when it ends."""

    def __init__(self, timings: dict[str, dict[str, float]], name: str, verbose: bool) -> None:
        self.timings, self.name, self.verbose = timings, name, verbose
        self.note = ""

    def __enter__(self) -> Stage:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        self.timings[self.name] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
        if self.verbose and exc[0] is None:
            print(f"[fcam] {self.name}: {self.note}{' ' if self.note else ''}({wall:.1f} s)", flush=True)
