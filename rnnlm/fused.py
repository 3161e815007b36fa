"""The C boundary: `fused.c` compiled on first use, loaded with ctypes, and called only through typed wrappers.

Why C: a recurrent step is a small matrix product followed by a dozen pointwise operations. As PyTorch ops each is a
kernel launch and a pass over memory, and a step's product is small enough that MKL runs it below the machine's speed.
`fused.c` does each step's product and its pointwise half together, gates in registers (the cells' fast path,
`rnnlm.fastpath`, says when it runs).

How: `kernels()` compiles `fused.c` with the system's C compiler (`$CC`, else `cc`) for this machine's CPU
(`-march=native`), caches the library under `$XDG_CACHE_HOME/rnnlm` (else `~/.cache/rnnlm`), keyed by the source,
the flags, the compiler and the CPU, and loads it with ctypes: no torch headers, no build step at install, up to
half a minute the first time and nothing after. Then it checks the library's activations against torch.

The boundary is typed: each C entry point has one wrapper here (`Kernels.lstm_sequence`, ...) that takes named
tensors, checks their dtype, device, contiguity and shape against the others', and only then passes addresses. The
argument order is never written in Python: the wrappers call by parameter name, and the names and their order are
read from the C definitions in `fused.c` (`signatures`), so a wrapper and its C function cannot disagree silently.

When the kernels are not used, the cells run the same equations as PyTorch ops (`rnnlm.reference`), which is also
what runs on CUDA and for float16, bfloat16 or float64 parameters (bf16 autocast of float32 ones on a CPU runs the C
loops): no compiler, a compile that fails (a one-time warning says why), a library that disagrees with torch (a
warning too), RNNLM_FUSED=0 in the environment, or a model under torch.compile.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
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

STEP_KINDS = {"RNN_TANH": 0, "RNN_RELU": 1, "LSTM": 2, "GRU": 3}
"""rnnlm_step's `kind` of each cell (fused.c)."""

Arg = Tensor | int | None | ctypes.Array


def signatures(source: str) -> dict[str, list[tuple[str, bool]]]:
    """Each exported function of the C source, `void rnnlm_NAME(...) {`, as its parameters in order: (name, whether
    it is an integer; else a pointer)."""
    found = {}
    for name, params in re.findall(r"^void (rnnlm_\w+)\(([^)]*)\)\s*\{", source, flags=re.M):
        parsed = []
        for param in " ".join(params.split()).split(","):
            declaration = param.strip()
            parsed.append((re.findall(r"\w+", declaration)[-1], declaration.startswith("int64_t")))
        found[name] = parsed
    return found


def pack_panels(weight: Tensor, gates: int, hidden: int) -> Tensor:
    """A weight (G*H, K) or bias (G*H,) in the C loops' panels of 8 units: (P, K, G, 8) or (P, G, 8), P = ceil(H / 8),
    contiguous, zero past unit H. Panel p holds units 8p..8p+7 of every gate, so that one pass over it yields all the
    gates of those units."""
    units = -(-hidden // 8) * 8
    padded = weight.new_zeros(gates, units, *weight.shape[1:])
    padded[:, :hidden] = weight.unflatten(0, (gates, hidden))
    padded = padded.unflatten(1, (units // 8, 8))  # (G, P, 8, *rest)
    return padded.permute(1, *range(3, padded.dim()), 0, 2).contiguous()


def pack_by_unit(w_hh: Tensor) -> Tensor:
    """W_hh (G*H, H) as the backward loops read it: (P, G*H, 8), panel q holding W_hh's columns 8q..8q+7."""
    return pack_panels(w_hh.t(), 1, w_hh.shape[1]).squeeze(2)


def pack_pairs(panels: Tensor) -> Tensor:
    """Packed panels (P, K, ...) as the bfloat16 loops read them (fused.c, "bfloat16 products"): rounded to bfloat16,
    with rows k and k + 1 side by side, (P, ceil(K / 2), ..., 2); an odd K gains a row of zeros."""
    if panels.shape[1] % 2:
        panels = torch.cat((panels, panels.new_zeros(panels.shape[0], 1, *panels.shape[2:])), 1)
    return panels.to(torch.bfloat16).unflatten(1, (-1, 2)).movedim(2, -1).contiguous()


class Kernels:
    """The compiled library, one typed method per C entry point. Every tensor is float32, on the CPU, dense."""

    def __init__(self, lib: ctypes.CDLL, source: str) -> None:
        self._functions = {}
        for name, params in signatures(source).items():
            function = getattr(lib, name)
            function.argtypes = [ctypes.c_int64 if is_int else ctypes.c_void_p for _, is_int in params]
            function.restype = None
            self._functions[name] = (function, [p for p, _ in params], {p for p, _ in params})
        lib.rnnlm_native_bf16.restype = ctypes.c_int64
        self.native_bf16 = bool(lib.rnnlm_native_bf16())
        """Whether the bfloat16 products run on the CPU's own instruction (AVX-512 BF16), not in AVX2."""

    def _call(self, name: str, **args: Arg) -> None:
        function, params, names = self._functions[name]
        if args.keys() != names:  # a bug in a wrapper, never a user's mistake
            raise TypeError(f"{name}({', '.join(params)}) called with {', '.join(args)}")
        function(*(args[p].data_ptr() if isinstance(args[p], Tensor) else args[p] for p in params))

    def activations(self, *, y: Tensor, x: Tensor, tanh_of: int) -> None:
        """y = sigmoid or tanh of x (n,), in blocks of 12 vectors of 8, vector i of a block by tanh if bit i of
        tanh_of is set: as the C loops activate their gates."""
        _check("activations", y=(y, x.shape), x=(x, x.shape))
        self._call("rnnlm_activations", y=y, x=x, tanh_of=tanh_of, n=x.numel())

    def lstm_sequence(self, *, h: Tensor, c: Tensor, gates: Tensor | None, tanh_c: Tensor | None, xg: Tensor,
                      bias: Tensor | None, panels: Tensor, h0: Tensor, c0: Tensor) -> None:
        """An LSTM layer over T steps. Training keeps gates (T, B, 4H), c and tanh_c (T, B, H); inference passes
        gates and tanh_c None and c (2, B, H), the last step's cell state ending in c[(T - 1) % 2]."""
        steps, batch, hidden = h.shape
        kept = steps if gates is not None else 2
        _check("lstm_sequence", h=(h, h.shape), c=(c, (kept, batch, hidden)),
               gates=(gates, (steps, batch, 4 * hidden)), tanh_c=(tanh_c, h.shape), xg=(xg, (steps, batch, 4 * hidden)),
               bias=(bias, (4 * hidden,)), h0=(h0, (batch, hidden)), c0=(c0, (batch, hidden)),
               nullable=("gates", "tanh_c", "bias"))
        bf16 = _weights("lstm_sequence", "panels", panels, (_panels(hidden), hidden, 4, 8))
        if (gates is None) != (tanh_c is None):
            raise ValueError("lstm_sequence: gates and tanh_c are kept together (training) or not at all")
        self._call("rnnlm_lstm_sequence", h=h, c=c, gates=gates, tanh_c=tanh_c, xg=xg, bias=bias, panels=panels,
                   h0=h0, c0=c0, bf16=bf16, T=steps, B=batch, H=hidden)

    def lstm_backward_sequence(self, *, d_gates: Tensor, dc: Tensor, back: Tensor, gates: Tensor, c0: Tensor,
                               c: Tensor, tanh_c: Tensor, grad_h: Tensor, grad_hn: Tensor) -> None:
        """The LSTM layer's backward through time: d_gates (T, B, 4H); dc (B, H) from the gradient reaching c_{T-1}
        to the one reaching c0."""
        steps, batch, hidden = c.shape
        _check("lstm_backward_sequence", d_gates=(d_gates, (steps, batch, 4 * hidden)), dc=(dc, (batch, hidden)),
               gates=(gates, d_gates.shape), c0=(c0, dc.shape), c=(c, c.shape), tanh_c=(tanh_c, c.shape),
               grad_h=(grad_h, c.shape), grad_hn=(grad_hn, dc.shape))
        bf16 = _weights("lstm_backward_sequence", "back", back, (_panels(hidden), 4 * hidden, 8))
        self._call("rnnlm_lstm_backward_sequence", d_gates=d_gates, dc=dc, back=back, gates=gates, c0=c0, c=c,
                   tanh_c=tanh_c, grad_h=grad_h, grad_hn=grad_hn, bf16=bf16, T=steps, B=batch, H=hidden)

    def gru_sequence(self, *, h: Tensor, hh: Tensor | None, gates: Tensor | None, xg: Tensor, b_hh: Tensor,
                     panels: Tensor, h0: Tensor) -> None:
        """A GRU layer over T steps; training keeps hh = W_hh h + b_hh and the gates r, z, n (T, B, 3H)."""
        steps, batch, hidden = h.shape
        wide = (steps, batch, 3 * hidden)
        _check("gru_sequence", h=(h, h.shape), hh=(hh, wide), gates=(gates, wide), xg=(xg, wide),
               b_hh=(b_hh, (3 * hidden,)), h0=(h0, (batch, hidden)), nullable=("hh", "gates"))
        bf16 = _weights("gru_sequence", "panels", panels, (_panels(hidden), hidden, 3, 8))
        if (hh is None) != (gates is None):
            raise ValueError("gru_sequence: hh and gates are kept together (training) or not at all")
        self._call("rnnlm_gru_sequence", h=h, hh=hh, gates=gates, xg=xg, b_hh=b_hh, panels=panels, h0=h0, bf16=bf16,
                   T=steps, B=batch, H=hidden)

    def gru_backward_sequence(self, *, d_x: Tensor, d_hh: Tensor, grad_h0: Tensor, grad_h: Tensor, back: Tensor,
                              gates: Tensor, hh: Tensor, h0: Tensor, h: Tensor, grad_hn: Tensor) -> None:
        """The GRU layer's backward through time: d_x and d_hh (T, B, 3H); grad_h0 (B, H) gains z_0 dh_0; grad_h
        (T, B, H) gains the direct path on the way."""
        steps, batch, hidden = h.shape
        wide = (steps, batch, 3 * hidden)
        _check("gru_backward_sequence", d_x=(d_x, wide), d_hh=(d_hh, wide), grad_h0=(grad_h0, (batch, hidden)),
               grad_h=(grad_h, h.shape), gates=(gates, wide), hh=(hh, wide), h0=(h0, (batch, hidden)), h=(h, h.shape),
               grad_hn=(grad_hn, (batch, hidden)))
        bf16 = _weights("gru_backward_sequence", "back", back, (_panels(hidden), 3 * hidden, 8))
        self._call("rnnlm_gru_backward_sequence", d_x=d_x, d_hh=d_hh, grad_h0=grad_h0, grad_h=grad_h, back=back,
                   gates=gates, hh=hh, h0=h0, h=h, grad_hn=grad_hn, bf16=bf16, T=steps, B=batch, H=hidden)

    def rnn_sequence(self, *, h: Tensor, xg: Tensor, panels: Tensor, h0: Tensor, relu: bool) -> None:
        """A vanilla RNN layer over T steps: h (T, B, H) from xg (T, B, H), which holds both biases."""
        steps, batch, hidden = h.shape
        _check("rnn_sequence", h=(h, h.shape), xg=(xg, h.shape), h0=(h0, (batch, hidden)))
        bf16 = _weights("rnn_sequence", "panels", panels, (_panels(hidden), hidden, 1, 8))
        self._call("rnnlm_rnn_sequence", h=h, xg=xg, panels=panels, h0=h0, relu=int(relu), bf16=bf16, T=steps,
                   B=batch, H=hidden)

    def rnn_backward_sequence(self, *, d_pre: Tensor, back: Tensor, h: Tensor, grad_h: Tensor, grad_hn: Tensor,
                              relu: bool) -> None:
        """A vanilla RNN layer's backward through time: d_pre (T, B, H), the gradient of each pre-activation."""
        steps, batch, hidden = h.shape
        _check("rnn_backward_sequence", d_pre=(d_pre, h.shape), h=(h, h.shape), grad_h=(grad_h, h.shape),
               grad_hn=(grad_hn, (batch, hidden)))
        bf16 = _weights("rnn_backward_sequence", "back", back, (_panels(hidden), hidden, 8))
        self._call("rnnlm_rnn_backward_sequence", d_pre=d_pre, back=back, h=h, grad_h=grad_h, grad_hn=grad_hn,
                   relu=int(relu), bf16=bf16, T=steps, B=batch, H=hidden)

    def pack(self, *, w: Tensor, gates: int, forward: bool, backward: bool) -> tuple[Tensor | None, Tensor | None]:
        """W_hh (G*H, H) in the forward loops' panels (P, H, G, 8), as `pack_panels`, if `forward`, and in the
        backward loops' (P, G*H, 8), as `pack_by_unit`, if `backward`; in one threaded pass."""
        hidden = w.shape[1]
        _check("pack", w=(w, (gates * hidden, hidden)))
        panels = w.new_empty(_panels(hidden), hidden, gates, 8) if forward else None
        back = w.new_empty(_panels(hidden), gates * hidden, 8) if backward else None
        self._call("rnnlm_pack", panels=panels, back=back, w=w, G=gates, H=hidden)
        return panels, back

    def step(self, *, h: Tensor, c: Tensor | None, weights: "StepWeights", x: Tensor | None, v0: Tensor | None,
             h_prev: Tensor, mode: str) -> None:
        """One step of a whole stack of `mode` cells (a key of STEP_KINDS): h (L, B, H) from h_prev (L, B, H), c
        (L, B, H) updated in place (the LSTM);
        layer 0 reads its input projection x (B, G*H) or its input v0 (B, K0); `weights` packed and checked once
        (`StepWeights`). Sampling calls this once per character, so the per-call checks are the cheap ones."""
        layers, batch, hidden = h_prev.shape
        k0 = 0 if v0 is None else v0.shape[1]
        if (weights.layers, weights.hidden, weights.k0) != (layers, hidden, k0) or (x is None) == (v0 is None):
            raise ValueError(f"step: weights for {weights.layers}x{weights.hidden} (K0 {weights.k0}), state "
                             f"{tuple(h_prev.shape)}, K0 {k0}; and layer 0 reads x or v0 (one of them)")
        _check("step", h=(h, h_prev.shape), c=(c, h_prev.shape), x=(x, (batch, weights.gates * hidden)),
               v0=(v0, (batch, k0)), h_prev=(h_prev, h_prev.shape), nullable=("x", "v0") + ("c",) * (mode != "LSTM"))
        if _overlap(h, h_prev):
            raise ValueError("step: h must not overlap h_prev, which other panels are still reading")
        self._call("rnnlm_step", h=h, c=c, weights=weights.pointers, x=x, v0=v0, h_prev=h_prev, kind=STEP_KINDS[mode],
                   L=layers, B=batch, H=hidden, K0=k0)


class StepWeights:
    """A stack's weights as rnnlm_step reads them, each layer's panels (P, K1 + H, G, 8) and biases (P, S, G, 8),
    checked once here, with the array of their addresses (kept with the tensors it points into)."""

    def __init__(self, tensors: list[Tensor], gates: int, hidden: int, k0: int) -> None:
        per_bias = 2 if gates == 3 else 1
        shapes = {}
        for layer in range(len(tensors) // 2):
            k1 = k0 if layer == 0 else hidden
            shapes[f"weights[{2 * layer}]"] = (tensors[2 * layer], (_panels(hidden), k1 + hidden, gates, 8))
            shapes[f"weights[{2 * layer + 1}]"] = (tensors[2 * layer + 1], (_panels(hidden), per_bias, gates, 8))
        if len(tensors) % 2 or not tensors:
            raise ValueError("step: two weight tensors per layer")
        _check("step", **shapes)
        self.tensors, self.gates, self.hidden, self.k0, self.layers = tensors, gates, hidden, k0, len(tensors) // 2
        self.pointers = (ctypes.c_void_p * len(tensors))(*(t.data_ptr() for t in tensors))


def _panels(hidden: int) -> int:
    return -(-hidden // 8)


def _check(function: str, nullable: tuple[str, ...] = (),
           **named: tuple[Tensor | None, tuple[int, ...] | torch.Size]) -> None:
    """Every named tensor is a dense float32 CPU array of its expected shape, or None (C's NULL) where it is
    `nullable` (the C code reads none there); else a ValueError naming the function and the argument."""
    for name, (t, shape) in named.items():
        if t is None and name in nullable:
            continue
        if t is None:
            raise ValueError(f"{function}: {name} is required")
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"{function}: {name} must be a contiguous float32 CPU tensor, got {t.dtype} on "
                             f"{t.device}{'' if t.is_contiguous() else ', not contiguous'}")
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{function}: {name} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def _weights(function: str, name: str, t: Tensor, shape: tuple[int, ...]) -> int:
    """Packed weights, float32 panels of `shape` (P, K, ...) or their bfloat16 pairs (`pack_pairs`): 1 for pairs, 0
    for float32, else a ValueError as `_check`'s."""
    if t.dtype != torch.bfloat16:
        _check(function, **{name: (t, shape)})
        return 0
    pairs = (shape[0], -(-shape[1] // 2), *shape[2:], 2)
    if t.device.type != "cpu" or not t.is_contiguous() or tuple(t.shape) != pairs:
        raise ValueError(f"{function}: {name} in bfloat16 must be contiguous CPU pairs of shape {pairs}, got "
                         f"{tuple(t.shape)} on {t.device}")
    return 1


def _overlap(a: Tensor, b: Tensor) -> bool:
    a0, b0 = a.data_ptr(), b.data_ptr()
    return a0 < b0 + b.numel() * b.element_size() and b0 < a0 + a.numel() * a.element_size()


def kernels(like: Tensor | None = None) -> Kernels | None:
    """The kernels if they can serve tensors like `like` (float32 on a CPU; None: just whether they are enabled and
    built).

    Never under torch.compile: the kernels take raw addresses, which a traced graph does not have (a traced ctypes
    call would write through the addresses of tensors that no longer exist), so a compiled model runs the PyTorch
    ops, which the compiler fuses itself."""
    if like is not None and (like.device.type != "cpu" or like.dtype != torch.float32):
        return None
    if os.environ.get("RNNLM_FUSED") == "0" or torch.compiler.is_compiling():
        return None
    return _load()


@functools.cache
def _load() -> Kernels | None:
    compiler = shutil.which(os.environ.get("CC") or "cc")
    if compiler is None:
        return None  # the PyTorch path; README "Speed" says what a compiler buys
    try:
        lib = Kernels(ctypes.CDLL(str(_build(compiler))), SOURCE.read_text(encoding="utf-8"))
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
    if os.environ.get("LOCAL_RANK", "0") == "0":  # under torchrun, one process says it
        print("rnnlm: compiling its C kernels for this CPU, once (about half a minute)", file=sys.stderr, flush=True)
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
    for tanh_of, ref in ((0, torch.sigmoid), (0xFFF, torch.tanh)):
        lib.activations(y=y, x=x, tanh_of=tanh_of)
        if not torch.allclose(y, ref(x), rtol=1e-6, atol=1e-7):
            return False
    return True
