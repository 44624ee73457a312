"""The machine a run happens on, for the record: its CPU's name.

In the core because the bench records it beside every timing and the convert side names the training
machine with it.
"""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            fields.setdefault(key.strip().lower(), val.strip())
        # x86: "model name"; Raspberry Pi: "Model" (the board) beats "Hardware" (the SoC)
        cpu = fields.get("model name") or (fields.get("model") if not fields.get("model", "").isdigit() else None) \
            or fields.get("hardware") or cpu
    except OSError:
        pass
    return cpu
