"""Writes one benchmark's section of BENCHMARKS.md, leaving the other sections alone."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import sys
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
_HEADER = (
    "# Benchmarks\n\n"
    "Each section is written by the script it names; re-run the command to refresh it.\n"
    "Figures from a 2-core shared machine move from run to run: each comparison is measured\n"
    "against a reference in the same run.\n"
)


def machine_description() -> str:
    """CPU model, core count and memory of this machine, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024**2:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}"


def write_section(name: str, body_markdown: str, command: str | None = None) -> None:
    """Replaces (or appends) the section ``name`` of BENCHMARKS.md.

    The section records the command that produced it, the machine and the date.
    """
    command = command or "python " + " ".join(shlex.quote(a) for a in sys.argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- bench:{name} -->\n"
        f"## {name}\n\n"
        f"- Command: `{command}`\n"
        f"- Machine: {machine_description()}\n"
        f"- Date: {stamp}\n\n"
        f"{body_markdown.strip()}\n"
        f"<!-- /bench:{name} -->\n"
    )
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else _HEADER
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n", re.S
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    BENCHMARKS_MD.write_text(text)
