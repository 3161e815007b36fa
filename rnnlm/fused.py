"""The pointwise half of each recurrent step as one C loop (`fused.c`), compiled on first use, for float32 on a CPU.

Why: after its matrix product, an LSTM step is sigmoid, tanh, two products and a sum over the gates, and its backward
step a dozen more; as PyTorch ops each is a kernel launch and a pass over memory (about 800 launches per training step
of a 1x128 LSTM, and at 2x512 arrays that no longer fit in cache). One C loop per step does all of it in registers.
The large matrix products stay in PyTorch (MKL / oneDNN); the recurrent ones, small per step, which MKL runs below
the machine's speed or which only read weights (sampling at batch 1), are done in the same C loops as the pointwise
half: a whole sequence of a layer (forward and backward for the LSTM and GRU, forward for the RNN), and one
inference step of a whole stack (`cells.py` says when).

How: `kernels()` compiles `fused.c` with the system's C compiler (`$CC`, else `cc`) for this machine's CPU
(`-march=native`), caches the library under `$XDG_CACHE_HOME/rnnlm` (else `~/.cache/rnnlm`), keyed by the source,
the flags, the compiler and the CPU, and loads it with ctypes: no torch headers, no build step at install, about a
second the first time and nothing after. Then it checks the library against torch on a small input.

When the kernels are not used, the recurrences run the same equations as PyTorch ops (`cells.py`), which is also what
runs on CUDA, in bfloat16 and in float64: no compiler, a compile that fails (a one-time warning says why), a library
that disagrees with torch (a warning too), or RNNLM_FUSED=0 in the environment. The tests run both paths against
torch.nn.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("fused.c")
# -fno-trapping-math lets the compiler turn the activations' clamps into vector selects; it changes no result.
FLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-fPIC", "-shared")
# Tried first: rows split over threads. The library then needs libgomp.so.1, which torch's CPU build has loaded
# already, so both share one OpenMP runtime and one thread pool.
OPENMP = ("-fopenmp",)

_INT, _PTR = ctypes.c_int64, ctypes.c_void_p
_SIGNATURES = {
    "rnnlm_sigmoid": (_INT, _PTR, _PTR, _INT),
    "rnnlm_tanh": (_INT, _PTR, _PTR, _INT),
    "rnnlm_activations": (_INT, _PTR, _PTR, _INT),
    "rnnlm_lstm_forward": (_INT, _INT, *[_PTR] * 8),
    "rnnlm_lstm_backward": (_INT, _INT, *[_PTR] * 7),
    "rnnlm_gru_forward": (_INT, _INT, *[_PTR] * 7),
    "rnnlm_gru_backward": (_INT, _INT, *[_PTR] * 8),
    "rnnlm_step": (*[_INT] * 5, *[_PTR] * 6),
    "rnnlm_lstm_sequence": (*[_INT] * 3, *[_PTR] * 9),
    "rnnlm_lstm_backward_sequence": (*[_INT] * 3, *[_PTR] * 9),
    "rnnlm_gru_sequence": (*[_INT] * 3, *[_PTR] * 7),
    "rnnlm_gru_backward_sequence": (*[_INT] * 3, *[_PTR] * 10),
    "rnnlm_rnn_sequence": (*[_INT] * 4, *[_PTR] * 4),
}


class Kernels:
    """The compiled functions; arguments are sizes and data pointers (`Tensor.data_ptr()`) of contiguous float32."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, None
        self.sigmoid, self.tanh, self.activations = lib.rnnlm_sigmoid, lib.rnnlm_tanh, lib.rnnlm_activations
        self.lstm_forward, self.lstm_backward = lib.rnnlm_lstm_forward, lib.rnnlm_lstm_backward
        self.gru_forward, self.gru_backward = lib.rnnlm_gru_forward, lib.rnnlm_gru_backward
        self.step, self.lstm_sequence = lib.rnnlm_step, lib.rnnlm_lstm_sequence
        self.lstm_backward_sequence, self.gru_sequence = lib.rnnlm_lstm_backward_sequence, lib.rnnlm_gru_sequence
        self.gru_backward_sequence, self.rnn_sequence = lib.rnnlm_gru_backward_sequence, lib.rnnlm_rnn_sequence


def kernels(like: Tensor) -> Kernels | None:
    """The fused kernels if they can serve tensors like `like` (float32 on a CPU) and are enabled and built.

    Never under torch.compile: the kernels take raw addresses, which a traced graph does not have (Dynamo traced
    into the ctypes calls and the model computed garbage), so a compiled model runs the PyTorch ops, which the
    compiler fuses itself."""
    if like.device.type != "cpu" or like.dtype != torch.float32 or os.environ.get("RNNLM_FUSED") == "0":
        return None
    if torch.compiler.is_compiling():
        return None
    return _load()


@functools.cache
def _load() -> Kernels | None:
    compiler = shutil.which(os.environ.get("CC") or "cc")
    if compiler is None:
        return None  # the PyTorch path; README "Speed" says what a compiler buys
    try:
        lib = Kernels(ctypes.CDLL(str(_build(compiler))))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:  # RuntimeError: no home folder for the cache
        warnings.warn(f"rnnlm: could not build its fused CPU kernels, so training runs the slower PyTorch path: {e}",
                      stacklevel=3)
        return None
    if not _agrees_with_torch(lib):
        warnings.warn(f"rnnlm: the fused CPU kernels built by {compiler} disagree with torch, so they are not used",
                      stacklevel=3)
        return None
    return lib


def _build(compiler: str) -> Path:
    """The library for this source, flags, compiler and CPU, compiled unless already cached."""
    source = SOURCE.read_bytes()
    parts = [source, " ".join(FLAGS + OPENMP).encode(), compiler.encode(), _cpu_id()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnnlm"
    target = cache / f"fused-{key[:20]}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    # Compile to a private name, then rename: processes starting together (torchrun) never load a half-written file.
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=target.stem, suffix=".tmp")
    os.close(fd)
    try:
        # A compiler without OpenMP builds serial loops; one that does not know -march=native, portable ones.
        portable = tuple(f for f in FLAGS if f != "-march=native")
        for flags in (FLAGS + OPENMP, FLAGS, portable):
            done = subprocess.run([compiler, *flags, "-o", tmp, str(SOURCE)], capture_output=True, text=True,
                                  timeout=120)
            if done.returncode == 0:
                break
        else:
            raise OSError(f"{Path(compiler).name} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _cpu_id() -> bytes:
    """What -march=native depends on: the CPU's model and feature flags (Linux), else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags", "Features"))})).encode()
    except OSError:
        return f"{platform.machine()} {platform.processor()}".encode()


def _agrees_with_torch(lib: Kernels) -> bool:
    """A compiler that miscompiles the loops must not train models: compare with torch on a range of inputs."""
    x = torch.linspace(-30, 30, 4001)
    y = torch.empty_like(x)
    for fn, ref in ((lib.sigmoid, torch.sigmoid), (lib.tanh, torch.tanh)):
        for vector in (0, 1):
            fn(x.numel(), x.data_ptr(), y.data_ptr(), vector)
            if not torch.allclose(y, ref(x), rtol=1e-6, atol=1e-7):
                return False
    return True


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory torch frees for the next training step, instead of returning it to the OS.

    Every training step allocates the same large buffers (an LSTM layer's gates alone are T*B*4H floats: 52 MB at
    2x512, B=64, T=100) and frees them after the backward pass. By default glibc serves blocks over 128 KB (over
    32 MB, always) with fresh mappings and unmaps them on free, so each step faults its buffers in again page by page,
    zero-filled by the kernel. Measured on the 2-core machine: the C loops of one 2x512 LSTM layer's forward pass take
    46 ms on fresh pages and 16 ms on reused ones; a 1x128 LSTM's forward pass spends 3 of its 10 ms faulting in two
    4 MB arrays. Allocating from the heap and never trimming it keeps the process at
    its peak resident size, which a training process reaches on its first step anyway. `rnnlm train` calls this on a
    CPU; it is a process-wide setting, so a library user opts in. Returns whether the setting took (glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
