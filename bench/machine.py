"""The machine a benchmark ran on, for the line that records its command."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_description() -> str:
    """The CPU's model name and its widest vector and int8 dot-product instructions (from ``/proc/cpuinfo``).

    Int8's gain over fp32 depends on them: with VNNI an int8 multiply-add is one instruction, without
    it (AVX2 only) two, which caps the gain near 2x.
    """
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in info.splitlines():  # the first processor's fields
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = " ".join(fields.get("model name", platform.machine()).split())
    flags = set(fields.get("flags", "").split())
    if not flags:  # not an x86 CPU
        return name
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    vnni = "VNNI" if flags & {"avx512_vnni", "avx_vnni"} else "no VNNI"
    amx = ", AMX" if "amx_int8" in flags else ""
    return f"{name}, {vector}, {vnni}{amx}"
