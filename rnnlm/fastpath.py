"""The cells' fast path: float32 recurrences on a CPU through rnnlm's C loops (`fused.c`, via `rnnlm.fused`).

The same equations as `rnnlm.reference`, with the same interface, so `rnnlm.cells` picks one or the other per call:

- A layer's whole sequence is one C call each way (`lstm_forward`, `gru_forward`, `rnn_forward` and the LSTM's and
  GRU's backward): every step's recurrent product h_{t-1} W_hh^T and its pointwise half together, panel by panel of 8
  units, the threads meeting once per step. A step's product is small (a 1x128 LSTM's 32x128 @ 128x512), and MKL
  runs it well below the machine's speed; the C loops keep each weight loaded for several rows.
- Inference of a single step at any batch (sampling), or of a few steps (STEP_MAX_STEPS) at a batch of up to
  STEP_MAX_BATCH rows, runs each step of the whole stack as one C call that reads every weight once per block of rows (`step_stack`): at
  batch 1 a step is matrix-vector products whose time is reading the weights, and a dozen PyTorch calls per layer
  around them cost more than the arithmetic; at a larger batch one step's input projection is too small a product
  for MKL to run at speed.

W_hh is packed into the C loops' panels (rnnlm_pack, the layouts of `fused.pack_panels` and `fused.pack_by_unit`) on
every training call (it changes every step); inference keeps its packed copies until a parameter changes (`_panels`,
and `cached` for `step_stack`).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from rnnlm import fused
from rnnlm.reference import GATES, LayerGrads, Recurrence, history, split_biases

STEP_MAX_BATCH = 8
STEP_MAX_STEPS = 4
"""Inference of a sequence of up to STEP_MAX_STEPS steps at batches up to STEP_MAX_BATCH runs each step of the stack
as one C call (`step_stack`), as inference of a single step does at any batch; a longer sequence is faster through
the whole-sequence loops, its input projection one product (README "Speed", the step-path crossover)."""
_T = TypeVar("_T")


def _kernels() -> fused.Kernels:
    k = fused.kernels()
    assert k is not None, "rnnlm.cells chose the fast path without the kernels"
    return k


def _dense(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().contiguous()


# Keyed by the weight itself, where `cached` keys on the stack: the loops (the `Recurrence` interface) see tensors.
_PACKED: dict[tuple[int, int, bool], tuple[Any, int, int, Tensor]] = {}


def _pack(w_hh: Tensor, gates: int, bf16: bool, backward: bool = False) -> Tensor:
    """W_hh in the forward loops' panels, or the backward loops' if `backward`, in bfloat16 pairs if `bf16`. The
    backward packs its own rather than the forward keeping both: no W_hh-sized tensor saved for backward."""
    packed = _kernels().pack(w=w_hh.detach().contiguous(), gates=gates, forward=not backward, backward=backward)
    return fused.pack_pairs(packed[backward]) if bf16 else packed[backward]


def _panels(w_hh: Tensor, gates: int, keep: bool, bf16: bool = False) -> Tensor:
    """W_hh in the C loops' panels (in bfloat16 pairs if `bf16`). Training packs it on every call (it changes every
    step); inference (evaluation, a sequence past the one-step kernel's reach) keeps the packed copy until the
    weight changes in place (its version counter), or is freed, or `forget_packed` drops it."""
    if keep or w_hh.is_inference():  # an inference tensor has no version counter to key a copy on
        return _pack(w_hh, gates, bf16)
    key = (id(w_hh), gates, bf16)
    hit = _PACKED.get(key)
    if hit is not None and hit[0]() is w_hh and hit[1:3] == (w_hh._version, w_hh.data_ptr()):
        return hit[3]
    packed = _pack(w_hh, gates, bf16)
    _PACKED[key] = (weakref.ref(w_hh, lambda _: _PACKED.pop(key, None)), w_hh._version, w_hh.data_ptr(), packed)
    return packed


def forget_packed(params: list[Tensor]) -> None:
    """Drop the packed copies of these weights (after a write through `.data`, which bumps no version)."""
    for p in params:
        for gates in set(GATES.values()):
            for bf16 in (False, True):
                _PACKED.pop((id(p), gates, bf16), None)


def lstm_forward(xg: Tensor, w_hh: Tensor, bias: Tensor | None, h0: Tensor, c0: Tensor, keep: bool,
                 bf16: bool = False) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    steps, batch, hidden = xg.shape[0], xg.shape[1], h0.shape[-1]
    hs, out = history(xg, h0)
    gates = xg.new_empty(steps, batch, 4 * hidden) if keep else None
    c = xg.new_empty(steps if keep else 2, batch, hidden)  # without autograd, steps take turns in two slots
    tanh_c = torch.empty_like(c) if keep else None
    c0 = c0.contiguous()
    _kernels().lstm_sequence(h=out, c=c, gates=gates, tanh_c=tanh_c, xg=xg.contiguous(), bias=_dense(bias),
                             panels=_panels(w_hh, 4, keep, bf16), h0=hs[0], c0=c0)
    if not keep:
        return hs, c[(steps - 1) % 2], ()
    return hs, c[-1].clone(), (c0, gates, c, tanh_c)


def lstm_backward(w_hh: Tensor, hs: Tensor, saved: tuple[Tensor, ...], grad_out: Tensor, grad_hn: Tensor,
                  grad_cn: Tensor, bf16: bool = False) -> LayerGrads:
    c0, gates, c, tanh_c = saved
    dc = grad_cn.clone(memory_format=torch.contiguous_format)
    d_gates = torch.empty_like(gates)
    _kernels().lstm_backward_sequence(d_gates=d_gates, dc=dc, back=_pack(w_hh, 4, bf16, backward=True), gates=gates,
                                      c0=c0, c=c, tanh_c=tanh_c, grad_h=grad_out.contiguous(),
                                      grad_hn=grad_hn.contiguous())
    return LayerGrads(d_gates, d_gates, None, dc)


def gru_forward(xg: Tensor, w_hh: Tensor, bias: Tensor, h0: Tensor, c0: None, keep: bool,
                bf16: bool = False) -> tuple[Tensor, None, tuple[Tensor, ...]]:
    steps, batch, hidden = xg.shape[0], xg.shape[1], h0.shape[-1]
    hs, out = history(xg, h0)
    gates, hh = (xg.new_empty(steps, batch, 3 * hidden), xg.new_empty(steps, batch, 3 * hidden)) if keep else (None,
                                                                                                            None)
    _kernels().gru_sequence(h=out, hh=hh, gates=gates, xg=xg.contiguous(), b_hh=_dense(bias),
                            panels=_panels(w_hh, 3, keep, bf16), h0=hs[0])
    return hs, None, (gates, hh) if keep else ()


def gru_backward(w_hh: Tensor, hs: Tensor, saved: tuple[Tensor, ...], grad_out: Tensor, grad_hn: Tensor,
                 grad_cn: None, bf16: bool = False) -> LayerGrads:
    gates, hh = saved
    grad_h = grad_out.clone(memory_format=torch.contiguous_format)  # gains the direct path z * dh_{t+1}
    d_x, d_hh = torch.empty_like(hh), torch.empty_like(hh)
    grad_h0 = torch.zeros_like(hs[0])
    _kernels().gru_backward_sequence(d_x=d_x, d_hh=d_hh, grad_h0=grad_h0, grad_h=grad_h,
                                     back=_pack(w_hh, 3, bf16, backward=True), gates=gates, hh=hh, h0=hs[0],
                                     h=hs[1:], grad_hn=grad_hn.contiguous())
    return LayerGrads(d_x, d_hh, grad_h0, None)


def rnn_forward(xg: Tensor, w_hh: Tensor, bias: None, h0: Tensor, c0: None, keep: bool, relu: bool = False,
                bf16: bool = False) -> tuple[Tensor, None, tuple[Tensor, ...]]:
    hs, out = history(xg, h0)
    _kernels().rnn_sequence(h=out, xg=xg.contiguous(), panels=_panels(w_hh, 1, keep, bf16), h0=hs[0], relu=relu)
    return hs, None, ()


def rnn_backward(w_hh: Tensor, hs: Tensor, saved: tuple[Tensor, ...], grad_out: Tensor, grad_hn: Tensor,
                 grad_cn: None, relu: bool = False, bf16: bool = False) -> LayerGrads:
    out = hs[1:]
    d_pre = torch.empty_like(out)
    _kernels().rnn_backward_sequence(d_pre=d_pre, back=_pack(w_hh, 1, bf16, backward=True), h=out,
                                     grad_h=grad_out.contiguous(), grad_hn=grad_hn.contiguous(), relu=relu)
    return LayerGrads(d_pre, d_pre, None, None)


CELLS = {"RNN_TANH": Recurrence(rnn_forward, rnn_backward),
         "RNN_RELU": Recurrence(functools.partial(rnn_forward, relu=True), functools.partial(rnn_backward, relu=True)),
         "LSTM": Recurrence(lstm_forward, lstm_backward), "GRU": Recurrence(gru_forward, gru_backward)}


def _in_float32(forward: Callable[..., Any]) -> Callable[..., Any]:
    """`forward` with W_hh's products in bfloat16, given float32 inputs: under bf16 autocast the input projection
    comes as bfloat16, and so does a state carried from an earlier call; the gates and states stay float32."""
    def run(xg: Tensor, w_hh: Tensor, bias: Tensor | None, h0: Tensor, c0: Tensor | None, keep: bool) -> Any:
        return forward(xg.float(), w_hh, bias, h0.float(), None if c0 is None else c0.float(), keep, bf16=True)
    return run


BF16_CELLS = {mode: Recurrence(_in_float32(cell.forward), functools.partial(cell.backward, bf16=True), torch.bfloat16)
              for mode, cell in CELLS.items()}
"""The same loops with W_hh's products in bfloat16 (fused.c, "bfloat16 products"), for bf16 autocast; the products
around them (W_hh's and h0's gradients) in bfloat16 too."""


# ---- one step of the whole stack, for sampling ----------------------------------------------------------------------


def step_stack(stack: nn.Module, inp: Tensor, h0: Tensor, c0: Tensor | None,
               projected: bool) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
    """The stack without autograd, each step one C call (rnnlm_step) that reads every layer's packed weights once
    per block of rows, W_ih's with W_hh's, and runs the pointwise half on the gates while they are in registers.

    inp (T, B, in) float32, or layer 0's input projection (T, B, G*H) if `projected`; h0, c0 (L, B, H). Returns the
    output (T, B, H) and the state (L, B, H), fresh tensors."""
    steps = inp.shape[0]
    weights = cached(stack, ("step", projected), lambda: step_weights(stack, projected))
    states = inp.new_empty(steps, *h0.shape)  # every layer's h after each step
    c_n = None if c0 is None else c0.clone(memory_format=torch.contiguous_format)  # updated in place
    h_prev, inp, kernels = h0.contiguous(), inp.contiguous(), _kernels()
    for t in range(steps):
        kernels.step(h=states[t], c=c_n, weights=weights, x=inp[t] if projected else None,
                     v0=None if projected else inp[t], h_prev=h_prev, mode=stack.mode)
        h_prev = states[t]
    h_n = states[-1] if steps == 1 else states[-1].clone()  # not a view keeping every step's states alive
    # The output is a copy even where the last layer's states are contiguous (one layer): an in-place op on it must
    # not change the state the next step starts from, as with torch.nn.
    output = states[:, -1].clone(memory_format=torch.contiguous_format)
    return output, (h_n if c_n is None else (h_n, c_n))


def step_weights(stack: Any, projected: bool) -> fused.StepWeights:
    """Every layer's weights and biases in rnnlm_step's layout (see fused.c): panels of 8 units, (P, K1 + H, G, 8),
    and biases (P, S, G, 8); units past H are zero. If `projected` (layer 0 is given its input projection, which
    has b_ih) layer 0's panels have no W_ih part (K1 = 0) and its biases no b_ih."""
    gates, hidden = GATES[stack.mode], stack.hidden_size
    pack = functools.partial(fused.pack_panels, gates=gates, hidden=hidden)
    tensors = []
    for layer in range(stack.num_layers):
        w_ih, w_hh, b_ih, b_hh = (None if p is None else p.detach().float() for p in stack.layer_params(layer))
        raw = layer > 0 or not projected
        outside, inside = split_biases(stack.mode, b_ih if raw else None, b_hh, w_hh)
        zeros = w_hh.new_zeros(w_hh.shape[0])
        panels = torch.cat((pack(w_ih), pack(w_hh)), 1) if raw else pack(w_hh)
        if stack.mode == "GRU":  # both, apart: b_hh inside r * (W_hn h + b_hn) as in the whole-sequence loop
            bias = torch.stack((pack(zeros if outside is None else outside), pack(inside)), 1)
        else:  # one of them, the sum of the layer's biases
            bias = pack(next((b for b in (outside, inside) if b is not None), zeros)).unsqueeze(1)
        tensors += [panels.contiguous(), bias.contiguous()]
    return fused.StepWeights(tensors, gates, hidden, 0 if projected else stack.input_size)


def cached(stack: nn.Module, variant: object, make: Callable[[], _T]) -> _T:
    """make(), a function of the stack's parameters, kept until they change: the key holds every parameter object and
    its version counter, which in-place updates (the optimizer's, load_state_dict's, any op under no_grad) bump.
    Writes through `p.data` bypass version counters, as they bypass autograd: after such a write, call the stack's
    `clear_inference_cache()`. The cache lives in the module's __dict__, which copies and pickles leave out
    (`rnnlm.cells`)."""
    params = [p for p in stack._parameters.values() if p is not None]
    if any(p.is_inference() for p in params):  # no version counters to key a cache on
        return make()
    key = [(p, p._version, p.data_ptr(), p.device, p.dtype) for p in params]
    cache = stack.__dict__.setdefault("_inference_cache", {})
    hit = cache.get(variant)
    if hit is None or len(hit[0]) != len(key) or any(
            a[0] is not b[0] or a[1:] != b[1:] for a, b in zip(hit[0], key, strict=True)):
        hit = cache[variant] = (key, make())
    return hit[1]
