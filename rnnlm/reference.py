"""Each cell's equations as PyTorch ops, forward and backward through time: the readable reference.

    vanilla  h_t = tanh(x_t + W_hh h_{t-1})                                   (or relu)
    LSTM     i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (x_t + W_hh h_{t-1})
             c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)
    GRU      r, z = sigmoid(x_{r,z} + (W_hh h_{t-1} + b_hh)_{r,z});   n_t = tanh(x_n + r * (W_hh h_{t-1} + b_hh)_n)
             h_t = (1 - z) * n_t + z * h_{t-1}

x_t is the layer's input projection W_ih x_t with the biases that add to it (`split_biases`). This is the
path on CUDA (under autocast too), for float16, bfloat16 and float64 parameters, and on a CPU without rnnlm's C
loops (`rnnlm.fastpath`, the same equations, faster); tests hold both to torch.nn.

A layer is two functions, the interface the fast path implements too:
- `forward(xg, w_hh, bias, h0, c0, keep)` -> (hs, c_n or None, saved): hs (T + 1, B, H) is h0 then every step's
  h_t (`history`), so the layer's output is hs[1:] and what each step read is hs[:-1]; `bias` is what the recurrence
  adds itself (the LSTM's sum of biases, the GRU's b_hh); with `keep` (training) every step's activations are kept
  in `saved` for the backward pass, else one step's scratch buffers are reused and nothing is saved.
- `backward(w_hh, hs, saved, grad_out, grad_hn, grad_cn)` -> `LayerGrads` (grad_hn and the LSTM's grad_cn are
  tensors, zeros for a final state nothing used: autograd makes them so): the gradient of every step's
  recurrent pre-activation (from which `rnnlm.cells` gets W_hh's, the bias's and h0's with one product each), and
  the input projection's. Autograd would record ~10 nodes per step; this computes every factor that does not depend
  on the incoming gradient for all steps at once, then walks back with 2-5 ops per step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor


class LayerGrads(NamedTuple):
    d_x: Tensor
    """(T, B, G*H): the gradient of the input projection xg."""
    d_rec: Tensor
    """(T, B, G*H): the gradient of each step's W_hh h_{t-1} + bias; d_x itself except in the GRU."""
    d_h0: Tensor | None
    """(B, H): a part of h0's gradient that bypasses W_hh (the GRU's z * dh_0), or None."""
    d_c0: Tensor | None
    """(B, H): the LSTM's c0 gradient."""


class Recurrence(NamedTuple):
    forward: Callable[..., tuple[Tensor, Tensor | None, tuple[Tensor, ...]]]
    backward: Callable[..., LayerGrads]
    products_dtype: torch.dtype | None = None
    """The dtype of the products `rnnlm.cells` runs around the loop (W_hh's and h0's gradients); None: the tensors'."""


def split_biases(mode: str, b_ih: Tensor | None, b_hh: Tensor | None,
                 w_hh: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """A layer's biases as (added to its input projection, added by the recurrence itself). The vanilla RNN's two
    biases add up before the loop; the LSTM's too, but its loop adds them on its way (no pass over the (T, B, 4H)
    projection of their own); the GRU's b_hh stays inside, where r multiplies W_hn h + b_hn."""
    if mode == "GRU":
        return b_ih, w_hh.new_zeros(w_hh.shape[0]) if b_hh is None else b_hh
    both = b_ih if b_hh is None else (b_hh if b_ih is None else b_ih + b_hh)
    return (None, both) if mode == "LSTM" else (both, None)


def _steps(buf: Tensor, steps: int) -> list[Tensor]:
    """Per-step views of a (T, ...) buffer kept for the backward pass, or its one (1, ...) scratch view T times."""
    views = list(buf.unbind(0))
    return views if len(views) == steps else views * steps


def history(xg: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """A layer's states hs (T + 1, B, H) with h0 in slot 0, and the view hs[1:] its loop writes h_t into. Kept whole,
    the h_{t-1} of every step is one view, hs[:-1]: W_hh's gradient is one product over all steps, with no copy."""
    hs = xg.new_empty(xg.shape[0] + 1, xg.shape[1], h0.shape[-1])
    hs[0] = h0
    return hs, hs[1:]


def _shifted(first: Tensor, seq: Tensor) -> Tensor:
    """(first, seq[0], ..., seq[T-2]): the value each step read from the previous step. (T, B, H)"""
    return torch.cat((first.unsqueeze(0), seq[:-1]), 0)


def _grad_from_above(grad_out: Tensor, grad_hn: Tensor) -> Tensor:
    """The gradient reaching each h_t from above, plus the final state's at the last step; a fresh (T, B, H) buffer
    that the backward loops add the recurrent part to."""
    grad = grad_out.clone(memory_format=torch.contiguous_format)
    grad[-1] += grad_hn
    return grad


# ---- vanilla RNN -----------------------------------------------------------------------------------------------------


def rnn_forward(xg: Tensor, w_hh: Tensor, bias: None, h0: Tensor, c0: None, keep: bool,
                relu: bool = False) -> tuple[Tensor, None, tuple[Tensor, ...]]:
    hs, out = history(xg, h0)
    h_prev = h0
    for x_t, h_t in zip(xg.unbind(0), out.unbind(0)):
        torch.addmm(x_t, h_prev, w_hh.t(), out=h_t)
        h_t.relu_() if relu else h_t.tanh_()
        h_prev = h_t
    return hs, None, ()


def rnn_backward(w_hh: Tensor, hs: Tensor, saved: tuple[Tensor, ...], grad_out: Tensor, grad_hn: Tensor,
                 grad_cn: None, relu: bool = False) -> LayerGrads:
    out = hs[1:]
    slope = (out > 0).to(out.dtype) if relu else 1 - out * out  # d h_t / d pre-activation, all steps at once
    grad_h = _grad_from_above(grad_out, grad_hn)
    d_pre = torch.empty_like(out)  # (T, B, H)
    gh, dp, sl = grad_h.unbind(0), d_pre.unbind(0), slope.unbind(0)
    for t in range(len(gh) - 1, -1, -1):
        torch.mul(gh[t], sl[t], out=dp[t])
        if t > 0:
            torch.addmm(gh[t - 1], dp[t], w_hh, out=gh[t - 1])  # dh_{t-1} += d_pre_t W_hh
    return LayerGrads(d_pre, d_pre, None, None)


# ---- LSTM ------------------------------------------------------------------------------------------------------------


def lstm_forward(xg: Tensor, w_hh: Tensor, bias: Tensor | None, h0: Tensor, c0: Tensor,
                 keep: bool) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """saved: c0, and every step's activated gates (T, B, 4H), c_t and tanh(c_t) (T, B, H)."""
    steps, batch, hidden = xg.shape[0], xg.shape[1], h0.shape[-1]
    kept = steps if keep else 1
    gates = xg.new_empty(kept, batch, 4 * hidden)
    c, tanh_c = xg.new_empty(kept, batch, hidden), xg.new_empty(kept, batch, hidden)
    hs, out = history(xg, h0)
    if bias is not None:
        xg = xg + bias
    g_t, c_t, tc_t = _steps(gates, steps), _steps(c, steps), _steps(tanh_c, steps)
    h_prev, c_prev = h0, c0
    for t in range(steps):
        torch.addmm(xg[t], h_prev, w_hh.t(), out=g_t[t])  # (B, 4H)
        i, f, g, o = g_t[t].chunk(4, -1)
        g_t[t][:, : 2 * hidden].sigmoid_()  # i and f are adjacent: one sigmoid
        g.tanh_()
        o.sigmoid_()
        torch.mul(f, c_prev, out=c_t[t])  # f * c_{t-1}
        c_t[t].addcmul_(i, g)  # + i * g
        torch.tanh(c_t[t], out=tc_t[t])
        torch.mul(o, tc_t[t], out=out[t])  # h_t = o * tanh(c_t)
        h_prev, c_prev = out[t], c_t[t]
    return hs, c_prev.clone() if keep else c_prev, (c0, gates, c, tanh_c) if keep else ()


def lstm_backward(w_hh: Tensor, hs: Tensor, saved: tuple[Tensor, ...], grad_out: Tensor, grad_hn: Tensor,
                  grad_cn: Tensor) -> LayerGrads:
    c0, gates, c, tanh_c = saved
    hidden = c0.shape[-1]
    i, f, g, o = gates.chunk(4, dim=-1)  # each (T, B, H)
    # Everything that does not depend on the incoming gradient, for all steps at once:
    #   dc_t   += dh_t * o (1 - tanh^2 c_t)
    #   d o = dh_t * tanh c_t o(1-o);   d(i,f,g) = dc_t * (g i(1-i), c_{t-1} f(1-f), i (1-g^2))
    dc_from_dh = o * (1 - tanh_c * tanh_c)  # (T, B, H)
    factors = torch.cat((g * i * (1 - i), _shifted(c0, c) * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)),
                        -1)  # (T, B, 4H)
    grad_h = _grad_from_above(grad_out, grad_hn)
    dc = grad_cn.clone(memory_format=torch.contiguous_format)  # (B, H)
    d_gates = torch.empty_like(gates)  # (T, B, 4H)
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
            torch.addmm(gh[t - 1], dg[t], w_hh, out=gh[t - 1])  # dh_{t-1} += d_gates_t W_hh
    return LayerGrads(d_gates, d_gates, None, dc)


# ---- GRU -------------------------------------------------------------------------------------------------------------


def gru_forward(xg: Tensor, w_hh: Tensor, bias: Tensor, h0: Tensor, c0: None,
                keep: bool) -> tuple[Tensor, None, tuple[Tensor, ...]]:
    """bias is b_hh; saved: every step's gates r, z, n and hh = W_hh h_{t-1} + b_hh (T, B, 3H) (its n part is needed
    for the gradient of r)."""
    steps, batch, hidden = xg.shape[0], xg.shape[1], h0.shape[-1]
    kept = steps if keep else 1
    gates, hh = xg.new_empty(kept, batch, 3 * hidden), xg.new_empty(kept, batch, 3 * hidden)
    hs, out = history(xg, h0)
    g_t, hh_t = _steps(gates, steps), _steps(hh, steps)
    h_prev = h0
    for t in range(steps):
        torch.addmm(bias, h_prev, w_hh.t(), out=hh_t[t])  # (B, 3H)
        x_rz, x_n = xg[t, :, : 2 * hidden], xg[t, :, 2 * hidden :]
        rz, n = g_t[t][:, : 2 * hidden], g_t[t][:, 2 * hidden :]
        torch.add(x_rz, hh_t[t][:, : 2 * hidden], out=rz).sigmoid_()
        torch.addcmul(x_n, rz[:, :hidden], hh_t[t][:, 2 * hidden :], out=n).tanh_()  # n = tanh(x_n + r * hh_n)
        torch.lerp(n, h_prev, rz[:, hidden:], out=out[t])  # n + z (h_{t-1} - n) = (1 - z) n + z h_{t-1}
        h_prev = out[t]
    return hs, None, (gates, hh) if keep else ()


def gru_backward(w_hh: Tensor, hs: Tensor, saved: tuple[Tensor, ...], grad_out: Tensor, grad_hn: Tensor,
                 grad_cn: None) -> LayerGrads:
    gates, hh = saved
    hidden = hs.shape[-1]
    r, z, n = gates.chunk(3, dim=-1)  # each (T, B, H)
    hh_n = hh[..., 2 * hidden :]
    # d pre_n = dh (1-z)(1-n^2);  d pre_z = dh (h_{t-1} - n) z(1-z);  d pre_r = d pre_n * hh_n * r(1-r).
    # The recurrent product sees the n part times r (it sits inside r * (W_hn h + b_hn)).
    dn = (1 - z) * (1 - n * n)
    dr = dn * hh_n * r * (1 - r)
    dz = (hs[:-1] - n) * z * (1 - z)
    factors_hh = torch.cat((dr, dz, dn * r), -1)  # (T, B, 3H)
    grad_h = _grad_from_above(grad_out, grad_hn)
    d_hh = torch.empty_like(hh)  # (T, B, 3H)
    gh, gh_rows, zz = grad_h.unbind(0), grad_h.unsqueeze(2).unbind(0), z.unbind(0)  # gh_rows: (B, 1, H) views
    dhh_v, fac_v = d_hh.unflatten(-1, (3, hidden)).unbind(0), factors_hh.unflatten(-1, (3, hidden)).unbind(0)
    for t in range(len(gh) - 1, -1, -1):
        torch.mul(gh_rows[t], fac_v[t], out=dhh_v[t])
        if t > 0:  # the direct path z * dh, then through W_hh
            torch.addmm(gh[t - 1].addcmul_(gh[t], zz[t]), d_hh[t], w_hh, out=gh[t - 1])
    d_x = torch.cat((d_hh[..., : 2 * hidden], grad_h * dn), -1)  # (T, B, 3H)
    return LayerGrads(d_x, d_hh, gh[0] * zz[0], None)


def rnn(relu: bool) -> Recurrence:
    return Recurrence(functools.partial(rnn_forward, relu=relu), functools.partial(rnn_backward, relu=relu))


GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
"""Gates each recurrence computes: W_ih and W_hh have GATES x hidden rows, in torch.nn's gate order."""

CELLS = {"RNN_TANH": rnn(False), "RNN_RELU": rnn(True), "LSTM": Recurrence(lstm_forward, lstm_backward),
         "GRU": Recurrence(gru_forward, gru_backward)}
