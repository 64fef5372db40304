"""BENCHMARKS.md: every bench script owns one `## ` section and replaces only that one."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BENCHMARKS = REPO / "BENCHMARKS.md"


def machine() -> str:
    """CPUs, kernel, architecture and CPU model, for the line under a section's heading."""
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, {platform.machine()}"
            + (f", {model}" if model else ""))


def write_section(section: str, path: Path = BENCHMARKS) -> Path:
    """Replaces the section whose heading is `section`'s first line (up to the next `## ` heading) with
    `section`, or appends it; the rest of the file is kept."""
    heading = section.split("\n", 1)[0]
    section = section.rstrip("\n") + "\n"
    if path.exists():
        text = path.read_text()
    else:
        text = ("# Benchmarks\n\nMeasurements of Mailflow, each section written by the script it names; "
                "rerun the script to refresh its section.\n\n")
    start = text.find(heading + "\n")
    if start < 0 and text.endswith(heading):
        start = len(text) - len(heading)
    if start >= 0:
        m = re.compile(r"^## ", re.M).search(text, start + len(heading))
        text = text[:start] + section + ("\n" + text[m.start():] if m else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
    return path
