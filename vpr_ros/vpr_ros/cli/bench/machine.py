"""What every benchmark record says about the machine it ran on (CPU model, cores, Python, numpy)."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import numpy as np

__all__ = ["cpu_model", "machine_base"]


def cpu_model() -> str:
    """``lscpu``'s model name (e.g. "AMD EPYC ..."), else what Python's platform module knows."""
    try:
        return next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
            if line.startswith("Model name"))
    except (StopIteration, OSError):
        return platform.processor() or platform.machine()


def machine_base() -> dict[str, Any]:
    """CPU model, cores, Python and numpy versions; each benchmark adds its own libraries."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__}
