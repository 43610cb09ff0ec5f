"""What every benchmark's results file states first: the machine, its load, the software."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions(packages: tuple[str, ...]) -> str:
    """``Python x, package y, ...`` for those of ``packages`` that are installed, and SQLite's version."""
    import sqlite3
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}"]
    for package in packages:
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    parts.append(f"SQLite {sqlite3.sqlite_version}")
    return ", ".join(parts)
