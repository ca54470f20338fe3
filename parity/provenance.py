"""Where a parity run's numbers came from: versions, machine, inputs (read without importing torch or paddle)."""
from __future__ import annotations

import datetime
import importlib.metadata
import platform
import sys
from pathlib import Path
from typing import Dict

__all__ = ["package_versions", "cpu_name", "base_provenance"]

_PACKAGES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "paddlepaddle": "paddlepaddle",
    "grad-cam": "grad-cam",
    "numpy": "numpy",
    "opencv": "opencv-python-headless",
}


def package_versions() -> Dict[str, str]:
    versions = {"python": platform.python_version()}
    for label, dist in _PACKAGES.items():
        try:
            versions[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[label] = "not installed"
    return versions


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def base_provenance() -> Dict:
    import os

    data = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    data.update(package_versions())
    data["platform"] = platform.platform()
    data["cpu"] = f"{cpu_name()} ({os.cpu_count()} cores)"
    data["command"] = " ".join(["python -m parity"] + sys.argv[1:])
    return data

