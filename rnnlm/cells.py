"""The three recurrences of the seeds, written from their equations, drop-in compatible with torch.nn.

    vanilla  h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)            (or relu)
    LSTM     i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
             c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)
    GRU      r, z = sigmoid(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h_{t-1} + b_h{r,z})
             n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn));   h_t = (1 - z_t) * n_t + z_t * h_{t-1}

`RNN`, `LSTM` and `GRU` take torch.nn's constructor arguments, parameter names, shapes, gate order and init, so a
torch.nn state dict loads into them and gives the same outputs, states and gradients. None of torch's fused recurrent
kernels is used: they are the reference in the tests and the baseline in `bench/speed.py`, never the implementation.

Where the time goes, and what each layer therefore does:
- The input projection W_ih x_t + b_ih of all T steps is one matrix product before the loop (the model can even hand
  it in ready-made through `forward_projected`, as a column lookup for one-hot input).
- Only h_{t-1} W_hh^T is left inside the loop: one matrix product per step into a preallocated buffer, followed by
  a few in-place pointwise ops. The product is `addmm`, or, for float32 layers of 256+ units on a CPU, oneDNN's
  linear with W_hh reordered once per sequence into its blocked layout (`_Linear`), 1.3-1.6x faster per step.
- Training runs each layer through a `torch.autograd.Function` with a hand-written backward through time. Autograd
  would record ~10 tiny nodes per step; ours runs 2-5 ops per step backwards, computes every derivative factor that
  does not depend on the incoming gradient for all steps at once, and gets dW_hh as ONE matrix product over all T*B
  rows (dgates^T @ h_prev) instead of T small ones.
- Without autograd (evaluation, sampling) the same step code writes into reusable scratch buffers and nothing is
  saved, so a one-character step costs a handful of kernel launches per layer.
- On a CPU in float32 the pointwise half of every LSTM and GRU step, forward and backward, is one C loop
  (`fused.py`); the PyTorch ops below are the same equations for everything else (CUDA, bfloat16, float64, no C
  compiler).
- The C code does each step's product too, where it beats MKL and oneDNN at it (a step's product is small: a 1x128
  LSTM's 32x128 @ 128x512 runs at ~60 GFLOP/s through MKL on the development machine): a layer of up to
  SEQUENCE_MAX_HIDDEN units runs a whole sequence in one C call, each step's product and pointwise half done together
  panel by panel (the LSTM and the GRU forward and backward, the RNN forward); and inference at a batch of up to
  STEP_MAX_BATCH rows (sampling) runs each step of the whole stack as one C call that reads every weight once
  (`_step_stack`). Under torch.compile the PyTorch ops run (`fused.kernels`).
- The LSTM's biases are added inside its recurrence, not by a pass over the (T, B, 4H) projection of their own.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlm import fused

Mode = Literal["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]
_GATES: dict[str, int] = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
_T = TypeVar("_T")


def _per_step(buf: Tensor, steps: int) -> Sequence[Tensor]:
    """Per-step views of `buf` (T, ...) when it keeps every step, or the same scratch view T times when it is (1, ...)."""
    views = buf.unbind(0)
    return views if len(views) == steps else views * steps


def _dense(*buffers: Tensor) -> bool:
    """Whether the C kernels can walk these buffers row by row (they are row-major, as every buffer rnnlm makes is)."""
    return all(b.is_contiguous() for b in buffers)


def _pointers(buf: Tensor, steps: int) -> list[int]:
    """Addresses of buf[0], ..., buf[T-1] of a contiguous (T, ...) buffer, or T times buf[0] of a (1, ...) scratch:
    what the C kernels take, without making T tensor views."""
    base = buf.data_ptr()
    if buf.shape[0] != steps:
        return [base] * steps
    step = buf.stride(0) * buf.element_size()
    return [base + t * step for t in range(steps)]


STEP_MAX_BATCH = 8
"""Inference at batches up to this size runs each step of the stack as one C call (`_Recurrent._step_stack`)."""
_STEP_KIND = {"RNN_TANH": 0, "RNN_RELU": 1, "LSTM": 2, "GRU": 3}

SEQUENCE_MAX_HIDDEN = 1024
"""Layers up to this width run whole sequences through one C call: the LSTM's and the GRU's forward and backward
passes (rnnlm_lstm_sequence, rnnlm_gru_sequence and their backward), the RNN's forward (rnnlm_rnn_sequence), and
evaluation the same forwards; wider ones go one step at a time around oneDNN's product (see `_LSTMLayer`,
`_GRULayer`, `_RNNLayer`). Timed on the development machine at T=64, C loops / per-step path, forward and backward:
LSTM at batch 32 1.23x and 1.12x at 512 units, 1.20x and 1.00x at 768, 1.23x and 1.03x at 1024, at batch 64 and 512
units 1.02x and 1.03x; GRU 1.38x and 1.07x at 128 units (batch 64), 1.48x and 1.15x at 384, 1.27x and 1.16x at 512
(batch 64), 1.19x and 1.09x at 1024; the RNN's forward 1.4x-1.9x. Wider layers were not timed."""

PACK_MIN_SIZE = 256
"""Layers at least this wide (in and out) run their per-step products through a packed oneDNN weight (`_Linear`)."""


def _sequence_kernels(xg: Tensor, w_hh: Tensor, *more: Tensor) -> fused.Kernels | None:
    """The C kernels if a layer's whole sequence can run in one call: its input projection xg dense, the layer at most
    SEQUENCE_MAX_HIDDEN wide, and its weights on the CPU in xg's dtype (else the PyTorch path raises on the mismatch,
    as torch.nn does)."""
    fits = _dense(xg) and w_hh.shape[-1] <= SEQUENCE_MAX_HIDDEN
    if not fits or any(w.device.type != "cpu" or w.dtype != xg.dtype for w in (w_hh, *more)):
        return None
    return fused.kernels(xg)


def _sum_or_none(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """a + b where both are given; the one given; None when neither is (a layer without bias)."""
    return b if a is None else (a if b is None else a + b)


def _panels(t: Tensor, gates: int, hidden: int) -> Tensor:
    """A weight (G*H, K) or bias (G*H,) in the C kernels' panels of 8 units: (P, K, G, 8) or (P, G, 8), P = ceil(H / 8),
    contiguous, zero past unit H. Panel p holds units 8p..8p+7 of every gate, so that one pass over it yields all the
    gates of those units (`fused.c`)."""
    units = -(-hidden // 8) * 8
    padded = t.new_zeros(gates, units, *t.shape[1:])
    padded[:, :hidden] = t.unflatten(0, (gates, hidden))
    padded = padded.unflatten(1, (units // 8, 8))  # (G, P, 8, *rest)
    return padded.permute(1, *range(3, padded.dim()), 0, 2).contiguous()


class _StepWeights:
    """A stack's weights packed for the C step (`_Recurrent._make_step_weights`), and the array of their addresses
    that rnnlm_step takes."""

    def __init__(self, tensors: list[Tensor]) -> None:
        self.tensors = tensors  # keeps the memory the addresses point to
        self.pointers = (ctypes.c_void_p * len(tensors))(*(t.data_ptr() for t in tensors))


class _Linear:
    """out = add + x @ W^T for one weight used at every step of a sequence: the recurrence's matrix product.

    addmm hands MKL the weight afresh on every call. On a CPU with oneDNN, a float32 weight reordered once into
    oneDNN's blocked layout runs the same product 1.3-1.6x faster at batch 32-128 and 256-512 units, 1.2x at batch 1,
    and the reorder (0.1-0.3 ms) pays for itself within a few steps; below 256 units addmm is as fast or faster
    (each product timed alone on the 2-core development machine; `bench/speed.py` shows the effect on whole steps).
    Everywhere else (CUDA, float64, bf16, small layers, a torch
    without oneDNN) this is addmm. `contiguous` stores W^T densely for addmm, which MKL's matrix-vector path prefers.
    """

    def __init__(self, weight: Tensor, contiguous: bool = False) -> None:
        weight = weight.detach()  # (out, in)
        self.packed = (torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
                       if min(weight.shape) >= PACK_MIN_SIZE and _can_pack(weight) else None)
        self.weight_t = weight.t().contiguous() if contiguous and self.packed is None else weight.t()  # (in, out)

    def __call__(self, add: Tensor, x: Tensor, out: Tensor) -> Tensor:
        """add (B, out) or (out,), x (B, in) -> out (B, out), which may be `add` itself."""
        if self.packed is None:
            return torch.addmm(add, x, self.weight_t, out=out)
        return torch.add(add, torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], ""), out=out)

    def product(self, x: Tensor, scratch: Tensor) -> Tensor:
        """x (B, in) @ W^T, contiguous (B, out): written into `scratch` by addmm's path; a new tensor from oneDNN,
        whose linear has no out= form."""
        if self.packed is None:
            return torch.mm(x, self.weight_t, out=scratch)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")


def _can_pack(weight: Tensor) -> bool:
    return weight.device.type == "cpu" and weight.dtype == torch.float32 and _onednn_linear_works()


@functools.cache
def _onednn_linear_works() -> bool:
    """oneDNN's packed linear is a private op of torch's CPU build: use it only if it is there and agrees with mm."""
    try:
        w, x = torch.arange(32.0).reshape(8, 4).sin(), torch.arange(12.0).reshape(3, 4).cos()  # no RNG draws
        y = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(w, None), None, "none", [],
                                               "")
        return torch.backends.mkldnn.is_available() and torch.allclose(y, x @ w.t(), rtol=1e-4, atol=1e-5)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


# ---------------------------------------------------------------------------------------------------------------------
# Forward recurrences. Each writes step t into views of caller-owned buffers: with (T, ...) buffers every step is kept
# for the backward pass; with (1, ...) buffers the same scratch memory is reused and only the outputs survive.
# ---------------------------------------------------------------------------------------------------------------------


def _rnn_recurrence(xg: Tensor, h0: Tensor, by_w_hh: _Linear, relu: bool, out: Tensor) -> None:
    """xg (T, B, H) already holds W_ih x_t + b_ih + b_hh; by_w_hh multiplies by W_hh^T; writes h_t into out (T, B, H)."""
    h_prev = h0
    for x_t, h_t in zip(xg.unbind(0), out.unbind(0)):
        by_w_hh(x_t, h_prev, out=h_t)  # (B, H)
        if relu:
            h_t.relu_()
        else:
            h_t.tanh_()
        h_prev = h_t


def _lstm_recurrence(xg: Tensor, h0: Tensor, c0: Tensor, by_w_hh: _Linear, gates: Tensor, c: Tensor, tanh_c: Tensor,
                     out: Tensor, bias: Tensor | None = None) -> None:
    """xg (T, B, 4H) holds W_ih x_t + b_ih + b_hh, or W_ih x_t with the biases' sum in `bias` (4H), gates in torch's
    order i, f, g, o; by_w_hh multiplies by W_hh^T.

    gates (T|1, B, 4H) receives the activated gates; c and tanh_c (T|1, B, H) the cell state and its tanh;
    out (T, B, H) the hidden states. With (1, ...) buffers c must already hold c0 and is updated in place.
    """
    steps, hidden = xg.shape[0], h0.shape[-1]
    keeps_steps, c0 = c.shape[0] == steps, c0.contiguous()
    kernels = fused.kernels(xg) if _dense(xg, gates, c, tanh_c, out) else None
    if kernels is not None:  # the same step with its pointwise half (and the adds of x_t and bias) in one C loop
        batch = xg.shape[1]
        bias = xg.new_zeros(4 * hidden) if bias is None else bias.contiguous()
        xs, gs, cs, tcs, hs = (_pointers(a, steps) for a in (xg, gates, c, tanh_c, out))
        c_prevs = [c0.data_ptr(), *cs[:-1]] if keeps_steps else cs
        scratch, h_views, h_prev = xg.new_empty(batch, 4 * hidden), out.unbind(0), h0
        for t in range(steps):
            hw = by_w_hh.product(h_prev, scratch)  # (B, 4H)
            kernels.lstm_forward(batch, hidden, xs[t], bias.data_ptr(), hw.data_ptr(), gs[t], c_prevs[t], cs[t],
                                 tcs[t], hs[t])
            h_prev = h_views[t]
        return
    if bias is not None:
        xg = xg + bias
    g_all = _per_step(gates, steps)
    cs, tcs = _per_step(c, steps), _per_step(tanh_c, steps)
    # The cell state read at step t: c0, then the previous step's (kept) or the same buffer (scratch, updated in place).
    c_prevs = (c0, *cs[:-1]) if keeps_steps else cs
    sig_if = _per_step(gates[..., : 2 * hidden], steps)  # i and f are adjacent: one sigmoid
    i_g = _per_step(gates[..., :hidden], steps)
    f_g = _per_step(gates[..., hidden : 2 * hidden], steps)
    tanh_g = _per_step(gates[..., 2 * hidden : 3 * hidden], steps)
    o_g = _per_step(gates[..., 3 * hidden :], steps)
    h_prev = h0
    for t, (x_t, h_t) in enumerate(zip(xg.unbind(0), out.unbind(0))):
        by_w_hh(x_t, h_prev, out=g_all[t])  # (B, 4H)
        sig_if[t].sigmoid_()
        tanh_g[t].tanh_()
        o_g[t].sigmoid_()
        torch.mul(f_g[t], c_prevs[t], out=cs[t])  # f * c_{t-1}
        cs[t].addcmul_(i_g[t], tanh_g[t])  # + i * g
        torch.tanh(cs[t], out=tcs[t])
        torch.mul(o_g[t], tcs[t], out=h_t)  # h_t = o * tanh(c_t)
        h_prev = h_t


def _gru_recurrence(xg: Tensor, h0: Tensor, by_w_hh: _Linear, b_hh: Tensor, gates: Tensor, hh: Tensor,
                    out: Tensor) -> None:
    """xg (T, B, 3H) holds W_ih x_t + b_ih; by_w_hh multiplies by W_hh^T.

    gates (T|1, B, 3H) receives the activated r, z, n; hh (T|1, B, 3H) the raw W_hh h_{t-1} + b_hh (its n part is
    needed for the gradient of r); out (T, B, H) the hidden states.
    """
    steps, hidden = xg.shape[0], h0.shape[-1]
    hhs = _per_step(hh, steps)
    kernels = fused.kernels(xg) if _dense(xg, gates, hh, out) else None
    if kernels is not None:  # the same step with its pointwise half (and the add of b_hh) in one C loop
        batch, h_prev, b_hh = xg.shape[1], h0.contiguous(), b_hh.contiguous()
        xs, gs, hh_ptrs, hs = (_pointers(a, steps) for a in (xg, gates, hh, out))
        h_views = out.unbind(0)
        for t in range(steps):
            hw = by_w_hh.product(h_prev, hhs[t])  # (B, 3H)
            kernels.gru_forward(batch, hidden, xs[t], hw.data_ptr(), b_hh.data_ptr(), hh_ptrs[t], h_prev.data_ptr(),
                                gs[t], hs[t])
            h_prev = h_views[t]
        return
    rz = _per_step(gates[..., : 2 * hidden], steps)
    n = _per_step(gates[..., 2 * hidden :], steps)
    r = _per_step(gates[..., :hidden], steps)
    z = _per_step(gates[..., hidden : 2 * hidden], steps)
    hh_rz = _per_step(hh[..., : 2 * hidden], steps)
    hh_n = _per_step(hh[..., 2 * hidden :], steps)
    x_rz = xg[..., : 2 * hidden].unbind(0)
    x_n = xg[..., 2 * hidden :].unbind(0)
    h_prev = h0
    for t, h_t in enumerate(out.unbind(0)):
        by_w_hh(b_hh, h_prev, out=hhs[t])  # (B, 3H)
        torch.add(x_rz[t], hh_rz[t], out=rz[t]).sigmoid_()
        torch.addcmul(x_n[t], r[t], hh_n[t], out=n[t]).tanh_()  # n = tanh(x_n + r * hh_n)
        torch.lerp(n[t], h_prev, z[t], out=h_t)  # n + z * (h_prev - n) = (1 - z) * n + z * h_prev
        h_prev = h_t


# ---------------------------------------------------------------------------------------------------------------------
# Training: one autograd Function per layer with a hand-written backward through time.
# ---------------------------------------------------------------------------------------------------------------------


def _shifted(first: Tensor, seq: Tensor) -> Tensor:
    """(first, seq[0], ..., seq[T-2]): the value each step read from the previous step. (T, B, H)"""
    return torch.cat((first.unsqueeze(0), seq[:-1]), 0)


def _grad_w_hh(d_pre: Tensor, h0: Tensor, out: Tensor) -> Tensor:
    """The gradient of W_hh, sum over t of d_pre_t^T h_{t-1}: one product over the (T-1)*B rows of steps 1.. (views of
    the saved outputs, no copy) added to step 0's with h0. d_pre (T, B, G*H), h0 (B, H), out (T, B, H) -> (G*H, H)."""
    first = d_pre[0].t() @ h0
    if d_pre.shape[0] == 1:
        return first
    return torch.addmm(first, d_pre[1:].flatten(0, 1).t(), out[:-1].flatten(0, 1))


def _add_grad_at_end(grad_out: Tensor, grad_last: Tensor) -> Tensor:
    """The gradient reaching h_t from above, plus the final state's gradient at the last step. (T, B, H)"""
    grad = grad_out.clone(memory_format=torch.contiguous_format)
    grad[-1] += grad_last
    return grad


class _RNNLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xg: Tensor, h0: Tensor, w_hh: Tensor, relu: bool) -> tuple[Tensor, Tensor]:
        steps, batch, hidden = xg.shape[0], xg.shape[1], h0.shape[-1]
        out = xg.new_empty(steps, batch, hidden)  # (T, B, H)
        kernels = _sequence_kernels(xg, w_hh)
        if kernels is not None:  # the whole sequence in one C call: each step's product and activation together
            h0c, panels = h0.contiguous(), _panels(w_hh.detach(), 1, hidden)
            kernels.rnn_sequence(steps, batch, hidden, relu, xg.data_ptr(), panels.data_ptr(), h0c.data_ptr(),
                                 out.data_ptr())
        else:
            _rnn_recurrence(xg, h0, _Linear(w_hh), relu, out)
        ctx.relu = relu
        ctx.save_for_backward(h0, w_hh, out)
        return out, out[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor, grad_hn: Tensor):
        h0, w_hh, out = ctx.saved_tensors
        # d act / d pre-activation, for all steps at once. (T, B, H)
        slope = (out > 0).to(out.dtype) if ctx.relu else 1 - out * out
        grad_h = _add_grad_at_end(grad_out, grad_hn)  # (T, B, H), accumulates the recurrent part in place
        d_pre = torch.empty_like(out)  # (T, B, H)
        gh, dp, sl = grad_h.unbind(0), d_pre.unbind(0), slope.unbind(0)
        back = _Linear(w_hh.t())  # multiplies by W_hh
        for t in range(len(gh) - 1, 0, -1):
            torch.mul(gh[t], sl[t], out=dp[t])
            back(gh[t - 1], dp[t], out=gh[t - 1])  # dh_{t-1} += d_pre_t @ W_hh
        torch.mul(gh[0], sl[0], out=dp[0])
        grad_h0 = dp[0] @ w_hh if ctx.needs_input_grad[1] else None
        grad_w = _grad_w_hh(d_pre, h0, out) if ctx.needs_input_grad[2] else None
        return d_pre, grad_h0, grad_w, None


class _LSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xg: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor,
                bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """xg (T, B, 4H) the input projection; bias (4H) what it still lacks of b_ih + b_hh, or None."""
        steps, batch, hidden = xg.shape[0], xg.shape[1], h0.shape[-1]
        gates = xg.new_empty(steps, batch, 4 * hidden)
        c, tanh_c, out = (xg.new_empty(steps, batch, hidden) for _ in range(3))
        kernels = _sequence_kernels(xg, w_hh)
        if kernels is not None:  # the whole sequence in one C call: each step's product and pointwise half together
            h0c, c0c, panels = h0.contiguous(), c0.contiguous(), _panels(w_hh.detach(), 4, hidden)
            bias = None if bias is None else bias.contiguous()
            kernels.lstm_sequence(steps, batch, hidden, xg.data_ptr(), None if bias is None else bias.data_ptr(),
                                  panels.data_ptr(), h0c.data_ptr(), c0c.data_ptr(), gates.data_ptr(), c.data_ptr(),
                                  tanh_c.data_ptr(), out.data_ptr())
        else:
            _lstm_recurrence(xg, h0, c0, _Linear(w_hh), gates, c, tanh_c, out, bias)
        ctx.save_for_backward(h0, c0, w_hh, gates, c, tanh_c, out)
        return out, out[-1].clone(), c[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor, grad_hn: Tensor, grad_cn: Tensor):
        h0, c0, w_hh, gates, c, tanh_c, out = ctx.saved_tensors
        dc = grad_cn.clone(memory_format=torch.contiguous_format)  # (B, H), carried backwards in place
        d_gates = torch.empty_like(gates)  # (T, B, 4H)
        kernels = fused.kernels(gates)
        steps, batch, hidden = gates.shape[0], gates.shape[1], h0.shape[-1]
        if kernels is not None and hidden <= SEQUENCE_MAX_HIDDEN:  # the whole sequence in one C call, as the forward
            grad_out, c0, grad_hn = grad_out.contiguous(), c0.contiguous(), grad_hn.contiguous()
            by_unit = _panels(w_hh.t(), 1, hidden)  # (P, 4H, 1, 8): W_hh's columns 8q..8q+7 in panel q
            kernels.lstm_backward_sequence(steps, batch, hidden, by_unit.data_ptr(), gates.data_ptr(), c0.data_ptr(),
                                           c.data_ptr(), tanh_c.data_ptr(), grad_out.data_ptr(), grad_hn.data_ptr(),
                                           dc.data_ptr(), d_gates.data_ptr())
        elif kernels is not None:  # the step below in one C loop; the product through oneDNN's packed W_hh
            grad_out, c0 = grad_out.contiguous(), c0.contiguous()
            gh, gs, tcs, dgs, cs = (_pointers(a, steps) for a in (grad_out, gates, tanh_c, d_gates, c))
            c_prevs, dg_views = [c0.data_ptr(), *cs[:-1]], d_gates.unbind(0)
            rec, scratch = grad_hn.contiguous(), dc.new_empty(batch, hidden)  # what reaches h_t through W_hh
            back = _Linear(w_hh.t())  # multiplies by W_hh
            for t in range(steps - 1, -1, -1):
                kernels.lstm_backward(batch, hidden, gs[t], c_prevs[t], tcs[t], gh[t], rec.data_ptr(), dc.data_ptr(),
                                      dgs[t])
                if t > 0:
                    rec = back.product(dg_views[t], scratch)  # d_gates_t @ W_hh, reaching h_{t-1}
        else:
            grad_h = _add_grad_at_end(grad_out, grad_hn)  # (T, B, H), accumulates the recurrent part in place
            _lstm_backward_steps(gates, c0, c, tanh_c, grad_h, dc, d_gates, _Linear(w_hh.t()))  # by W_hh
        grad_h0 = d_gates[0] @ w_hh if ctx.needs_input_grad[1] else None
        grad_w = _grad_w_hh(d_gates, h0, out) if ctx.needs_input_grad[3] else None
        grad_b = d_gates.sum((0, 1)) if ctx.needs_input_grad[4] else None
        return d_gates, grad_h0, dc, grad_w, grad_b


def _lstm_backward_steps(gates: Tensor, c0: Tensor, c: Tensor, tanh_c: Tensor, grad_h: Tensor, dc: Tensor,
                         d_gates: Tensor, back: _Linear) -> None:
    """The LSTM's backward through time as PyTorch ops: fills d_gates (T, B, 4H), leaves dc_{-1} in dc (B, H)."""
    hidden = c0.shape[-1]
    i, f, g, o = gates.chunk(4, dim=-1)  # each (T, B, H)
    # Everything that does not depend on the incoming gradient, for all steps at once:
    #   dc_t   += dh_t * o (1 - tanh^2 c_t)
    #   d o = dh_t * tanh c_t o(1-o);   d(i,f,g) = dc_t * (g i(1-i), c_{t-1} f(1-f), i (1-g^2))
    dc_from_dh = o * (1 - tanh_c * tanh_c)  # (T, B, H)
    factors = torch.cat((g * i * (1 - i), _shifted(c0, c) * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)),
                        -1)  # (T, B, 4H)
    dc_rows = dc.unsqueeze(1)  # (B, 1, H) view of dc, broadcast over the i, f, g factors
    gh, dcdh, ff = grad_h.unbind(0), dc_from_dh.unbind(0), f.unbind(0)
    dg_ifg = d_gates[..., : 3 * hidden].unflatten(-1, (3, hidden)).unbind(0)  # (B, 3, H) views
    fac_ifg = factors[..., : 3 * hidden].unflatten(-1, (3, hidden)).unbind(0)
    dg_o, fac_o, dg = d_gates[..., 3 * hidden :].unbind(0), factors[..., 3 * hidden :].unbind(0), d_gates.unbind(0)
    for t in range(len(gh) - 1, -1, -1):
        dc.addcmul_(gh[t], dcdh[t])
        torch.mul(dc_rows, fac_ifg[t], out=dg_ifg[t])
        torch.mul(gh[t], fac_o[t], out=dg_o[t])
        dc.mul_(ff[t])  # now dc_{t-1}
        if t > 0:
            back(gh[t - 1], dg[t], out=gh[t - 1])  # dh_{t-1} += d_gates_t @ W_hh


class _GRULayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xg: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor]:
        steps, batch, hidden = xg.shape[0], xg.shape[1], h0.shape[-1]
        gates = xg.new_empty(steps, batch, 3 * hidden)
        hh = xg.new_empty(steps, batch, 3 * hidden)
        out = xg.new_empty(steps, batch, hidden)
        kernels = _sequence_kernels(xg, w_hh, b_hh)
        if kernels is not None:  # the whole sequence in one C call: each step's product and pointwise half together
            h0c, b_hhc, panels = h0.contiguous(), b_hh.detach().contiguous(), _panels(w_hh.detach(), 3, hidden)
            kernels.gru_sequence(steps, batch, hidden, xg.data_ptr(), b_hhc.data_ptr(), panels.data_ptr(),
                                 h0c.data_ptr(), hh.data_ptr(), gates.data_ptr(), out.data_ptr())
        else:
            _gru_recurrence(xg, h0, _Linear(w_hh), b_hh, gates, hh, out)
        ctx.save_for_backward(h0, w_hh, gates, hh, out)
        return out, out[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor, grad_hn: Tensor):
        h0, w_hh, gates, hh, out = ctx.saved_tensors
        kernels = fused.kernels(gates)
        if kernels is not None:
            return _gru_backward_fused(ctx, kernels, h0, w_hh, gates, hh, out, grad_out, grad_hn)
        hidden = h0.shape[-1]
        r, z, n = gates.chunk(3, dim=-1)  # each (T, B, H)
        hh_n = hh[..., 2 * hidden :]
        # d pre_n = dh (1-z)(1-n^2);  d pre_z = dh (h_{t-1} - n) z(1-z);  d pre_r = d pre_n * hh_n * r(1-r).
        # The recurrent matmul sees the n part times r (it sits inside r * (W_hn h + b_hn)).
        dn = (1 - z) * (1 - n * n)
        dr = dn * hh_n * r * (1 - r)
        dz = (_shifted(h0, out) - n) * z * (1 - z)
        factors_hh = torch.cat((dr, dz, dn * r), -1)  # (T, B, 3H)
        grad_h = _add_grad_at_end(grad_out, grad_hn)  # (T, B, H), accumulates the recurrent part in place
        d_hh = torch.empty_like(hh)  # (T, B, 3H)
        gh, gh_rows, zz = grad_h.unbind(0), grad_h.unsqueeze(2).unbind(0), z.unbind(0)  # gh_rows: (B, 1, H) views
        dhh_v, fac_v = d_hh.unflatten(-1, (3, hidden)).unbind(0), factors_hh.unflatten(-1, (3, hidden)).unbind(0)
        dhh = d_hh.unbind(0)
        back = _Linear(w_hh.t())  # multiplies by W_hh
        for t in range(len(gh) - 1, 0, -1):
            torch.mul(gh_rows[t], fac_v[t], out=dhh_v[t])
            back(gh[t - 1].addcmul_(gh[t], zz[t]), dhh[t], out=gh[t - 1])  # direct path z * dh, then through W_hh
        torch.mul(gh_rows[0], fac_v[0], out=dhh_v[0])
        grad_h0 = torch.addmm(gh[0] * zz[0], dhh[0], w_hh) if ctx.needs_input_grad[1] else None
        grad_x = torch.cat((d_hh[..., : 2 * hidden], grad_h * dn), -1)  # (T, B, 3H)
        grad_w = _grad_w_hh(d_hh, h0, out) if ctx.needs_input_grad[2] else None
        grad_b = d_hh.sum((0, 1)) if ctx.needs_input_grad[3] else None
        return grad_x, grad_h0, grad_w, grad_b


def _gru_backward_fused(ctx, kernels: fused.Kernels, h0: Tensor, w_hh: Tensor, gates: Tensor, hh: Tensor, out: Tensor,
                        grad_out: Tensor, grad_hn: Tensor) -> tuple[Tensor | None, ...]:
    """_GRULayer.backward through the C kernels (`fused.c`): the whole sequence in one call up to SEQUENCE_MAX_HIDDEN
    units (rnnlm_gru_backward_sequence), else each step's pointwise half in one call (rnnlm_gru_backward)."""
    batch, hidden = gates.shape[1], h0.shape[-1]
    grad_h = grad_out.clone(memory_format=torch.contiguous_format)  # (T, B, H), gains the direct path z * dh_{t+1}
    grad_x, d_hh = torch.empty_like(hh), torch.empty_like(hh)  # (T, B, 3H): of W_ih x + b_ih, of W_hh h + b_hh
    grad_h0 = torch.zeros_like(h0, memory_format=torch.contiguous_format)  # (B, H)
    steps, h0, grad_hn = gates.shape[0], h0.contiguous(), grad_hn.contiguous()
    if hidden <= SEQUENCE_MAX_HIDDEN:  # the whole sequence in one C call, as the forward
        by_unit = _panels(w_hh.t(), 1, hidden)  # (P, 3H, 1, 8): W_hh's columns 8q..8q+7 in panel q
        kernels.gru_backward_sequence(steps, batch, hidden, by_unit.data_ptr(), gates.data_ptr(), hh.data_ptr(),
                                      h0.data_ptr(), out.data_ptr(), grad_h.data_ptr(), grad_hn.data_ptr(),
                                      grad_h0.data_ptr(), grad_x.data_ptr(), d_hh.data_ptr())
    else:  # the step below in one C loop; the product through oneDNN's packed W_hh
        gh, gx, dhh, gs, hhs, hs = (_pointers(a, steps) for a in (grad_h, grad_x, d_hh, gates, hh, out))
        h_prevs, gh_prevs, dhh_views = [h0.data_ptr(), *hs[:-1]], [grad_h0.data_ptr(), *gh[:-1]], d_hh.unbind(0)
        back = _Linear(w_hh.t())  # multiplies by W_hh
        rec, scratch = grad_hn, grad_h0.new_empty(batch, hidden)  # what reaches h_t through W_hh
        for t in range(steps - 1, -1, -1):
            kernels.gru_backward(batch, hidden, gs[t], hhs[t], h_prevs[t], gh[t], rec.data_ptr(), gx[t], dhh[t],
                                 gh_prevs[t])
            if t > 0:
                rec = back.product(dhh_views[t], scratch)  # d_hh_t @ W_hh, reaching h_{t-1}
    grad_h0 = torch.addmm(grad_h0, d_hh[0], w_hh) if ctx.needs_input_grad[1] else None
    grad_w = _grad_w_hh(d_hh, h0, out) if ctx.needs_input_grad[2] else None
    grad_b = d_hh.sum((0, 1)) if ctx.needs_input_grad[3] else None
    return grad_x, grad_h0, grad_w, grad_b


# ---------------------------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------------------------

State = Tensor | tuple[Tensor, Tensor]


class _Recurrent(nn.Module):
    """A stack of one kind of recurrent layer with torch.nn's parameters, init and calling convention."""

    def __init__(self, mode: Mode, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if bidirectional:
            raise ValueError("rnnlm cells are unidirectional: a language model reads left to right")
        if proj_size:
            raise ValueError("rnnlm's LSTM has no projection (proj_size must be 0)")
        if num_layers < 1 or hidden_size < 1 or input_size < 1:
            raise ValueError(f"input_size, hidden_size and num_layers must be positive, got "
                             f"{input_size}, {hidden_size}, {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        gate_size = _GATES[mode] * hidden_size
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(gate_size, layer_input, **factory)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(gate_size, hidden_size, **factory)))
            if bias:
                self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(gate_size, **factory)))
                self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(gate_size, **factory)))
        self.reset_parameters()

    def __getstate__(self) -> dict:
        """Copies and pickles leave out the packed weights kept for inference (`_cached`): they hold raw addresses
        for the C kernels, and the copy packs its own on first use."""
        state = super().__getstate__()
        state.pop("_inference_cache", None)
        return state

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s

    def _layer_params(self, layer: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """(W_ih, W_hh, b_ih, b_hh) of one layer; the biases are None without bias."""
        get = self._parameters.get
        return (get(f"weight_ih_l{layer}"), get(f"weight_hh_l{layer}"), get(f"bias_ih_l{layer}"),
                get(f"bias_hh_l{layer}"))

    # -- calling convention ------------------------------------------------------------------------------------------

    def forward(self, input: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        """input (T, B, in), or (B, T, in) with batch_first, or unbatched (T, in) -> output like input with H features,
        and the final state ((num_layers, B, H), or an (h, c) pair for LSTM; without B when unbatched)."""
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(self).__name__} expects 2-D (unbatched) or 3-D input, got {input.dim()}-D")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"input has {input.shape[-1]} features, expected input_size={self.input_size}")
        if self.batch_first and input.dim() == 3:
            input = input.transpose(0, 1)
        output, state = self._stack(input, hx, projected=False)
        if self.batch_first and input.dim() == 3:
            output = output.transpose(0, 1)
        return output, state

    def forward_projected(self, xproj: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        """Run the stack on layer 0's input projection xproj = x_t @ W_ih^T + b_ih computed by the caller.

        xproj is time-major (T, B, G*H) (or unbatched (T, G*H)) whatever batch_first says, and so is the output; the
        model passes a column lookup of W_ih for one-hot input here instead of a dense product. Gradients flow into
        xproj.
        """
        return self._stack(xproj, hx, projected=True)

    def _stack(self, inp: Tensor, hx: State | None, projected: bool) -> tuple[Tensor, State]:
        """The stack on time-major input (T, B, in) or (T, in), or on layer 0's input projection if `projected`."""
        unbatched = inp.dim() == 2
        if unbatched:
            inp = inp.unsqueeze(1)
            if hx is not None:
                hx = tuple(s.unsqueeze(1) for s in hx) if isinstance(hx, tuple) else hx.unsqueeze(1)
        h0, c0 = self._initial_state(inp, hx)
        kernels = self._step_kernels(inp)
        if kernels is not None:
            output, state = self._step_stack(kernels, inp, h0, c0, projected)
        else:
            b_ih = None
            if not projected:  # (T, B, G*H): the input projection of all steps in one product
                w_ih, _, b_ih, _ = self._layer_params(0)
                if self.mode == "LSTM":  # b_ih is added later, with b_hh, by the recurrence's C loop
                    inp = torch.matmul(inp, w_ih.t())
                else:
                    inp, b_ih = F.linear(inp, w_ih, b_ih), None
            output, state = self._layers(inp, h0, c0, b_ih)
        if unbatched:
            output = output.squeeze(1)
            state = tuple(s.squeeze(1) for s in state) if isinstance(state, tuple) else state.squeeze(1)
        return output, state

    def _layers(self, xproj: Tensor, h0: Tensor, c0: Tensor | None, b_ih: Tensor | None) -> tuple[Tensor, State]:
        """The stack on layer 0's input projection (T, B, G*H), layer by layer: training, and inference that the C
        step (`_step_stack`) does not serve. b_ih is layer 0's, if xproj does not include it yet: the biases of a
        layer are added once, together (in the LSTM's C loop, at no extra cost)."""
        compute_dtype = self._compute_dtype(xproj)
        # Autocast has no rule for our out= ops, so cast once to the autocast dtype here and run the layers with
        # autocast off; gradients flow back through the casts to the fp32 parameters.
        autocast_off = (torch.autocast(xproj.device.type, enabled=False) if compute_dtype != xproj.dtype
                        else contextlib.nullcontext())
        with autocast_off:
            layer_input = xproj
            h_n, c_n = [], []
            for layer in range(self.num_layers):
                if layer > 0:
                    layer_input = F.dropout(layer_input, self.dropout, self.training)
                layer_input, h, c = self._run_layer(layer, layer_input, h0[layer], None if c0 is None else c0[layer],
                                                    compute_dtype, b_ih if layer == 0 else None)
                h_n.append(h)
                c_n.append(c)
        h_stack = torch.stack(h_n)  # (L, B, H)
        return layer_input, (h_stack if c0 is None else (h_stack, torch.stack(c_n)))

    def _initial_state(self, xproj: Tensor, hx: State | None) -> tuple[Tensor, Tensor | None]:
        """(h0, c0), each (L, B, H); c0 is None except for LSTM."""
        shape = (self.num_layers, xproj.shape[1], self.hidden_size)
        is_lstm = self.mode == "LSTM"
        if hx is None:
            zeros = xproj.new_zeros(shape)
            return zeros, (zeros if is_lstm else None)
        if is_lstm != isinstance(hx, tuple):
            raise ValueError(f"{type(self).__name__} expects hx as " + ("an (h, c) tuple" if is_lstm else "a tensor"))
        states = hx if is_lstm else (hx,)
        for s in states:
            if tuple(s.shape) != shape:
                raise ValueError(f"expected hidden state of shape {shape}, got {tuple(s.shape)}")
        return (states[0], states[1]) if is_lstm else (states[0], None)

    def _compute_dtype(self, xproj: Tensor) -> torch.dtype:
        device_type = xproj.device.type
        if torch.is_autocast_enabled(device_type) and xproj.is_floating_point():
            return torch.get_autocast_dtype(device_type)
        return xproj.dtype

    # -- one layer ---------------------------------------------------------------------------------------------------

    def _run_layer(self, layer: int, inp: Tensor, h0: Tensor, c0: Tensor | None, dtype: torch.dtype,
                   b_ih0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """inp is the layer's input (T, B, in) or, for layer 0, already its projection (T, B, G*H), to which b_ih0 is
        still to be added unless None. Returns output (T, B, H), h_n (B, H), c_n (B, H) or None."""
        params = self._layer_params(layer)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (inp, h0, c0, *params)):
            return self._train_layer(layer, inp, h0, c0, dtype, b_ih0)
        return self._infer_layer(layer, inp, h0, c0, dtype, b_ih0)

    def _train_layer(self, layer: int, inp: Tensor, h0: Tensor, c0: Tensor | None, dtype: torch.dtype,
                     b_ih0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        w_ih, w_hh, b_ih, b_hh = self._layer_params(layer)
        if self.mode == "LSTM":  # the biases go into the recurrence, which adds them on its way (no pass of their own)
            xg = inp if layer == 0 else torch.matmul(inp, w_ih.to(dtype).t())  # (T, B, 4H), all steps in one product
            bias = _sum_or_none(b_ih0 if layer == 0 else b_ih, b_hh)
            return _LSTMLayer.apply(xg.to(dtype).contiguous(), h0.to(dtype), c0.to(dtype), w_hh.to(dtype),
                                    None if bias is None else bias.to(dtype))
        folded = self.mode != "GRU"  # b_hh is a plain addend except in the GRU, where r multiplies it
        if layer == 0:
            bias = _sum_or_none(b_ih0, b_hh if folded else None)
            xg = inp if bias is None else inp + bias.to(inp.dtype)
        else:
            bias = b_ih + b_hh if folded and b_ih is not None else b_ih
            # The previous layer's output is already in the compute dtype. (T, B, G*H), all steps in one product
            xg = F.linear(inp, w_ih.to(dtype), None if bias is None else bias.to(dtype))
        xg, h0, w_hh = xg.to(dtype).contiguous(), h0.to(dtype), w_hh.to(dtype)
        if self.mode == "GRU":
            b_hh = w_hh.new_zeros(w_hh.shape[0]) if b_hh is None else b_hh.to(dtype)
            out, h_n = _GRULayer.apply(xg, h0, w_hh, b_hh)
        else:
            out, h_n = _RNNLayer.apply(xg, h0, w_hh, self.mode == "RNN_RELU")
        return out, h_n, None

    def _infer_layer(self, layer: int, inp: Tensor, h0: Tensor, c0: Tensor | None, dtype: torch.dtype,
                     b_ih0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """No autograd: one step's worth of scratch buffers reused for every step, nothing saved."""
        steps, batch, hidden = inp.shape[0], inp.shape[1], self.hidden_size
        if hidden <= SEQUENCE_MAX_HIDDEN and dtype == torch.float32 and self._float32_cpu():
            kernels = fused.kernels(inp)
            if kernels is not None:
                return self._infer_sequence(kernels, layer, inp, h0, c0, b_ih0)
        ih, hh, bias_x, b_hh = self._inference_weights(layer, dtype, batch)
        gate_size = _GATES[self.mode] * hidden
        if layer == 0:
            bias_x = _sum_or_none(bias_x, b_ih0)
            xg = (inp + bias_x.to(inp.dtype) if bias_x is not None else inp).to(dtype).contiguous()  # (T, B, G*H)
        else:
            add = bias_x if bias_x is not None else inp.new_zeros(())
            xg = ih(add, inp.flatten(0, 1), out=inp.new_empty(steps * batch, gate_size)).unflatten(0, (steps, batch))
        h0 = h0.to(dtype)
        out = xg.new_empty(steps, batch, hidden)  # (T, B, H)
        if self.mode == "LSTM":
            c = c0.to(dtype).unsqueeze(0).clone(memory_format=torch.contiguous_format)  # (1, B, H), updated in place
            _lstm_recurrence(xg, h0, c[0], hh, xg.new_empty(1, batch, gate_size), c, torch.empty_like(c), out)
            return out, out[-1], c[0]
        if self.mode == "GRU":
            scratch = xg.new_empty(2, 1, batch, gate_size)
            _gru_recurrence(xg, h0, hh, b_hh, scratch[0], scratch[1], out)
        else:
            _rnn_recurrence(xg, h0, hh, self.mode == "RNN_RELU", out)
        return out, out[-1], None

    def _infer_sequence(self, kernels: fused.Kernels, layer: int, inp: Tensor, h0: Tensor, c0: Tensor | None,
                        b_ih0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """A layer without autograd (evaluation): the training forward's C loop over the whole sequence, keeping only
        each step's h (and the LSTM's two latest c)."""
        steps, batch, hidden = inp.shape[0], inp.shape[1], self.hidden_size
        w_ih, w_hh, b_ih, b_hh = (None if p is None else p.detach().float() for p in self._layer_params(layer))
        panels = self._cached(layer, "panels", lambda: _panels(w_hh, _GATES[self.mode], hidden))
        b_x = b_ih0 if layer == 0 else b_ih
        b_x = None if b_x is None else b_x.float()
        xg = inp if layer == 0 else torch.matmul(inp, w_ih.t())  # (T, B, G*H)
        if self.mode == "GRU":  # b_ih into the projection; b_hh goes inside, r * (W_hn h + b_hn)
            xg, bias = xg if b_x is None else xg + b_x, w_hh.new_zeros(3 * hidden) if b_hh is None else b_hh
        elif self.mode == "LSTM":  # the loop adds both
            bias = _sum_or_none(b_x, b_hh)
        else:  # the RNN's projection takes both
            both = _sum_or_none(b_x, b_hh)
            xg, bias = xg if both is None else xg + both, None
        xg, bias = xg.contiguous(), None if bias is None else bias.contiguous()
        h0, out = h0.float().contiguous(), xg.new_empty(steps, batch, hidden)
        if self.mode == "GRU":
            kernels.gru_sequence(steps, batch, hidden, xg.data_ptr(), bias.data_ptr(), panels.data_ptr(),
                                 h0.data_ptr(), None, None, out.data_ptr())
            return out, out[-1], None
        if self.mode != "LSTM":
            kernels.rnn_sequence(steps, batch, hidden, self.mode == "RNN_RELU", xg.data_ptr(), panels.data_ptr(),
                                 h0.data_ptr(), out.data_ptr())
            return out, out[-1], None
        c0, c = c0.float().contiguous(), xg.new_empty(2, batch, hidden)  # c: steps take turns
        kernels.lstm_sequence(steps, batch, hidden, xg.data_ptr(), None if bias is None else bias.data_ptr(),
                              panels.data_ptr(), h0.data_ptr(), c0.data_ptr(), None, c.data_ptr(), None, out.data_ptr())
        return out, out[-1], c[(steps - 1) % 2]

    def _inference_weights(self, layer: int, dtype: torch.dtype,
                           batch: int) -> tuple[_Linear | None, _Linear, Tensor | None, Tensor | None]:
        """(products by W_ih^T and W_hh^T, bias added to the input projection, b_hh for the GRU), detached, in `dtype`.

        Kept until the parameters change (`_cached`), so that a one-character step neither packs nor copies a weight.
        At batch 1 every product is a matrix-vector product, which MKL runs ~2.5x faster with W^T stored
        contiguously than as a transposed view (1x512 @ 512x2048 with cold caches); from batch 4 up the transposed view
        is 10-20% faster; so the addmm path keeps a contiguous copy at batch 1 only. Layer 0 has no W_ih product (the
        caller projected already).
        """
        contiguous = batch == 1
        return self._cached(layer, (dtype, contiguous), lambda: self._make_inference_weights(layer, dtype, contiguous))

    def _cached(self, layer: int | None, variant: object, make: Callable[[], _T]) -> _T:
        """make(), a function of the parameters of `layer` (None: of every layer), kept until they change: the key
        holds every parameter object and its version counter, which in-place updates (the optimizer's,
        load_state_dict's, any op under no_grad) bump. Writes through `p.data` bypass version counters, as they
        bypass autograd: after such a write, call `clear_inference_cache()`."""
        layers = range(self.num_layers) if layer is None else (layer,)
        params = [p for n in layers for p in self._layer_params(n) if p is not None]
        if any(p.is_inference() for p in params):  # no version counters to key a cache on
            return make()
        key = [(p, p._version, p.data_ptr(), p.device, p.dtype) for p in params]
        cache = self.__dict__.setdefault("_inference_cache", {})
        hit = cache.get((layer, variant))
        if hit is None or len(hit[0]) != len(key) or any(
                a[0] is not b[0] or a[1:] != b[1:] for a, b in zip(hit[0], key, strict=True)):
            hit = cache[layer, variant] = (key, make())
        return hit[1]

    def clear_inference_cache(self) -> None:
        """Drop the weight copies kept for inference; the next no-grad call makes them afresh."""
        self.__dict__.pop("_inference_cache", None)

    def _make_inference_weights(self, layer: int, dtype: torch.dtype,
                                contiguous: bool) -> tuple[_Linear | None, _Linear, Tensor | None, Tensor | None]:
        w_ih, w_hh, b_ih, b_hh = (None if p is None else p.detach().to(dtype) for p in self._layer_params(layer))
        ih = None if layer == 0 else _Linear(w_ih, contiguous)
        hh = _Linear(w_hh, contiguous)
        if self.mode == "GRU":
            return ih, hh, None if layer == 0 else b_ih, torch.zeros_like(w_hh[:, 0]) if b_hh is None else b_hh
        bias_x = None if b_ih is None else (b_hh if layer == 0 else b_ih + b_hh)
        return ih, hh, bias_x, None

    # -- inference at a small batch: one C call per step for the whole stack -----------------------------------------

    def _step_kernels(self, inp: Tensor) -> fused.Kernels | None:
        """The C kernels if this call is float32 inference on a CPU at a batch of at most STEP_MAX_BATCH rows (with no
        dropout to apply), else None."""
        if (inp.shape[1] > STEP_MAX_BATCH or torch.is_grad_enabled() or (self.training and self.dropout > 0)
                or torch.is_autocast_enabled(inp.device.type) or not self._float32_cpu()):
            return None
        return fused.kernels(inp)

    def _float32_cpu(self) -> bool:
        """Whether every parameter is float32 on the CPU, as the C kernels need (any other model takes the PyTorch
        path, which raises on a mismatch with the input as torch.nn does)."""
        return all(p.dtype == torch.float32 and p.device.type == "cpu" for p in self._parameters.values()
                   if p is not None)

    def _step_stack(self, kernels: fused.Kernels, inp: Tensor, h0: Tensor, c0: Tensor | None,
                    projected: bool) -> tuple[Tensor, State]:
        """The stack without autograd at a small batch: each step is one C call (`fused.c`, rnnlm_step) that reads
        every layer's packed weights once, W_ih's with W_hh's, and runs the pointwise half on the gates while they are
        in registers. Sampling is this at batch 1, where a step is matrix-vector products whose time is reading the
        weights: MKL's took 2.5x as long on the development machine, with a dozen PyTorch calls per layer around them.

        inp (T, B, in) float32, or layer 0's input projection (T, B, G*H) if `projected`; h0, c0 (L, B, H). Returns
        the output (T, B, H) and the state (L, B, H), fresh tensors."""
        steps, batch, hidden, layers = inp.shape[0], inp.shape[1], self.hidden_size, self.num_layers
        weights = self._cached(None, ("step", projected), lambda: self._make_step_weights(projected))
        states = inp.new_empty(steps, layers, batch, hidden)  # every layer's h after each step
        c_n = None if c0 is None else c0.float().clone(memory_format=torch.contiguous_format)  # updated in place
        h0 = h0.float().contiguous()
        h_prev = h0.data_ptr()
        inp = inp.contiguous()
        given, hs = _pointers(inp, steps), _pointers(states, steps)
        kind, k0, c_ptr = _STEP_KIND[self.mode], 0 if projected else inp.shape[-1], None if c_n is None else c_n.data_ptr()
        for t in range(steps):
            x, v0 = (given[t], None) if projected else (None, given[t])
            kernels.step(kind, layers, batch, hidden, k0, weights.pointers, x, v0, h_prev, c_ptr, hs[t])
            h_prev = hs[t]
        h_n = states[-1] if steps == 1 else states[-1].clone()  # not a view keeping every step's states alive
        return states[:, -1].contiguous(), (h_n if c_n is None else (h_n, c_n))

    def _make_step_weights(self, projected: bool) -> _StepWeights:
        """Every layer's weights and biases in rnnlm_step's layout (see fused.c): panels of 8 units, (P, K1 + H, G, 8),
        and biases (P, S, G, 8); units past H are zero. If `projected` (layer 0 is given its input projection, which
        has b_ih) layer 0's panels have no W_ih part (K1 = 0) and its biases no b_ih."""
        gates, hidden = _GATES[self.mode], self.hidden_size
        split = functools.partial(_panels, gates=gates, hidden=hidden)
        tensors = []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = (None if p is None else p.detach().float() for p in self._layer_params(layer))
            raw = layer > 0 or not projected
            zeros = w_hh.new_zeros(w_hh.shape[0])
            b_ih = b_ih if b_ih is not None and raw else zeros
            b_hh = zeros if b_hh is None else b_hh
            panels = torch.cat((split(w_ih), split(w_hh)), 1) if raw else split(w_hh)
            if self.mode == "GRU":  # r multiplies W_hn h + b_hn: the two biases stay apart
                bias = torch.stack((split(b_ih), split(b_hh)), 1)
            else:
                bias = split(b_ih + b_hh).unsqueeze(1)
            tensors += [panels.contiguous(), bias.contiguous()]
        return _StepWeights(tensors)


class RNN(_Recurrent):
    """Elman RNN, h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) (or relu); drop-in for torch.nn.RNN."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: Literal["tanh", "relu"] = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, 0, device, dtype)


class LSTM(_Recurrent):
    """LSTM with gates i, f, g, o in torch's order; drop-in for torch.nn.LSTM. The state is an (h, c) pair."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)


class GRU(_Recurrent):
    """GRU with gates r, z, n in torch's order (r applied after W_hn h + b_hn); drop-in for torch.nn.GRU."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
                         device, dtype)
