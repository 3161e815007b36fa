"""The machine a benchmark ran on, as each of bench/'s scripts prints it above its table: the CPU and the vector
instructions that decide which kernels run (AVX2, AVX-512, bf16), cores, threads, Python, torch and its libraries."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    import torch

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags")))
    except (OSError, StopIteration):
        pass
    vector = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512 BF16"),
                                      ("amx_tile", "AMX")) if flag in flags] or ["no AVX2"]
    libraries = [line.strip() for line in torch.__config__.parallel_info().splitlines()
                 if "backend" in line or "MKL-DNN" in line or "Math Kernel" in line]
    return (f"{cpu} ({', '.join(vector)}), {os.cpu_count()} cores, {torch.get_num_threads()} threads; "
            f"Python {platform.python_version()}, torch {torch.__version__}; " + "; ".join(libraries))
