"""Write benchmark results into sections of docs/BENCHMARKS.md, with the machine described."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEach section is written by the script it names; rerun it to refresh.\n"


def machine() -> str:
    """One line describing the machine and software."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def update_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of docs/BENCHMARKS.md with ``body``."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    block = f"<!-- begin {name} -->\n{body.rstrip()}\n<!-- end {name} -->"
    pattern = re.compile(
        rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->", re.S
    )
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    BENCHMARKS.parent.mkdir(parents=True, exist_ok=True)
    BENCHMARKS.write_text(text)
