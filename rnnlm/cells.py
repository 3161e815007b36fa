"""The three recurrences of the seeds as modules, drop-in compatible with torch.nn, and the one place that picks how
they run.

    vanilla  h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)            (or relu)
    LSTM     i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
             c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)
    GRU      r, z = sigmoid(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h_{t-1} + b_h{r,z})
             n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn));   h_t = (1 - z_t) * n_t + z_t * h_{t-1}

`RNN`, `LSTM` and `GRU` take torch.nn's constructor arguments, parameter names, shapes, gate order and init, so a
torch.nn state dict loads into them and gives the same outputs, states and gradients. None of torch's recurrent
kernels is used: they are the reference in the tests and the baseline in `bench/speed.py`, never the implementation.

A stack runs layer by layer. Each layer's input projection W_ih x_t of all T steps is one matrix product before the
loop; the loop over time is one of two implementations of the same equations, chosen once per call (`_path`):

    "c"      rnnlm.fastpath    float32 on a CPU with rnnlm's C loops built: a whole sequence per C call each way
    "step"   rnnlm.fastpath    the same, without autograd, for a single step at any batch (sampling) or up to 4
                               steps at a batch of at most 8: one C call per step for the whole stack, W_ih's
                               product in it
    "bf16"   rnnlm.fastpath    float32 parameters under bfloat16 autocast on such a CPU: the "c" loops with W_hh's
                               products in bfloat16 and the gates and states in float32 (as autocast keeps
                               pointwise math), the input projections in bfloat16 by autocast
    "torch"  rnnlm.reference   everything else (CUDA, float16, float64, RNNLM_FUSED=0, torch.compile): the equations
                               as PyTorch ops

Training runs each layer through `_Layer`, an autograd Function whose backward through time is the path's own
(autograd would record ~10 tiny nodes per step); W_hh's, the bias's and h0's gradients then come from one product
each over all steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlm import fastpath, fused, reference
from rnnlm.reference import Recurrence, split_biases
from rnnlm.state import State, map_state

Mode = Literal["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]
Path = Literal["c", "step", "bf16", "torch"]


class _Layer(torch.autograd.Function):
    """One layer over a whole sequence with its path's hand-written backward through time."""

    @staticmethod
    def forward(ctx, cell: Recurrence, xg: Tensor, w_hh: Tensor, bias: Tensor | None, h0: Tensor,
                c0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        hs, c_n, saved = cell.forward(xg, w_hh, bias, h0, c0, True)
        ctx.cell = cell
        ctx.save_for_backward(w_hh, hs, *saved)
        # The output is a view of the saved states: an in-place op on it raises at once, as it would at backward.
        return hs[1:], hs[-1].clone(), c_n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor, grad_hn: Tensor, grad_cn: Tensor | None):
        # grad_hn (and an LSTM's grad_cn) are zeros when nothing used the final state: autograd materialises them
        w_hh, hs, *saved = ctx.saved_tensors
        g = ctx.cell.backward(w_hh, hs, tuple(saved), grad_out, grad_hn, grad_cn)
        need = ctx.needs_input_grad  # cell, xg, w_hh, bias, h0, c0
        # The products around the loop in the cell's dtype (bfloat16 for "bf16"), their results in the tensors'.
        cast = (lambda t: t) if ctx.cell.products_dtype is None else (lambda t: t.to(ctx.cell.products_dtype))
        d_rec, w = cast(g.d_rec), cast(w_hh)
        # sum over t of d_rec_t^T h_{t-1}: one product over all T * B rows, hs[:-1] being every step's h_{t-1}
        grad_w = (d_rec.flatten(0, 1).t() @ cast(hs[:-1]).flatten(0, 1)).to(w_hh.dtype) if need[2] else None
        grad_b = g.d_rec.sum((0, 1)) if need[3] else None
        grad_h0 = None
        if need[4]:  # through W_hh at step 0, and the GRU's direct path
            grad_h0 = d_rec[0] @ w if g.d_h0 is None else torch.addmm(cast(g.d_h0), d_rec[0], w)
            grad_h0 = grad_h0.to(hs.dtype)
        return None, g.d_x, grad_w, grad_b, grad_h0, g.d_c0 if need[5] else None


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
        gate_size = reference.GATES[mode] * hidden_size
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
        """Copies and pickles leave out the packed weights kept for sampling (`fastpath.cached`): they hold raw
        addresses for the C kernels, and the copy packs its own on first use."""
        state = super().__getstate__()
        state.pop("_inference_cache", None)
        return state

    def clear_inference_cache(self) -> None:
        """Drop the weight copies kept for inference; the next no-grad call makes them afresh."""
        self.__dict__.pop("_inference_cache", None)
        fastpath.forget_packed(list(self.parameters()))

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

    def layer_params(self, layer: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
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
        if inp.shape[0] == 0:  # as torch.nn: there would be no output and no final state to give
            raise ValueError("expected a sequence of at least one step, got 0 steps")
        unbatched = inp.dim() == 2
        if unbatched:
            inp, hx = inp.unsqueeze(1), map_state(lambda s: s.unsqueeze(1), hx)
        h0, c0 = self._initial_state(inp, hx)
        path = self._path(inp)
        if path == "step":
            output, state = fastpath.step_stack(self, inp, h0, c0, projected)
        else:
            output, state = self._layers(path, inp, h0, c0, projected)
        if unbatched:
            output, state = output.squeeze(1), map_state(lambda s: s.squeeze(1), state)
        return output, state

    def _path(self, inp: Tensor) -> Path:
        """Where this call runs: the C loops for float32 on a CPU when they are built (with W_hh's products in bfloat16
        under bf16 autocast), one C call per step for inference of one step, or of a few at a small batch (without
        dropout to apply), else PyTorch ops. A longer sequence keeps its input projection one big product."""
        autocast = self._autocast_dtype(inp)
        if (fused.kernels(inp) is None or autocast not in (None, torch.float32, torch.bfloat16)
                or any(p.dtype != torch.float32 or p.device.type != "cpu" for p in self._parameters.values())):
            return "torch"
        if autocast == torch.bfloat16:
            return "bf16"
        steps, batch = inp.shape[0], inp.shape[1]
        if (not torch.is_grad_enabled() and not (self.training and self.dropout > 0)
                and (steps == 1 or (steps <= fastpath.STEP_MAX_STEPS and batch <= fastpath.STEP_MAX_BATCH))):
            return "step"
        return "c"

    def _layers(self, path: Path, inp: Tensor, h0: Tensor, c0: Tensor | None,
                projected: bool) -> tuple[Tensor, State]:
        """The stack layer by layer, in the precision its path runs in."""
        if path == "bf16":  # autocast stays on for the input projections; the loops take float32 (`BF16_CELLS`)
            x, state = self._each_layer(fastpath.BF16_CELLS, inp, h0, c0, projected)
            return x.to(torch.bfloat16), map_state(lambda s: s.to(torch.bfloat16), state)  # as torch.nn's under it
        cells = fastpath.CELLS if path == "c" else reference.CELLS
        autocast = self._autocast_dtype(inp)
        if autocast is None:  # nothing cast: a model and an input of different dtypes raise, as torch.nn's do
            return self._each_layer(cells, inp, h0, c0, projected)
        # Autocast has no rule for our out= ops: cast once to its dtype and run the layers with it off (gradients flow
        # back through the casts to the float32 parameters). On CUDA the states and gate math then run in half
        # precision too, as torch.nn's cuDNN recurrences do.
        def cast(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(autocast)

        with torch.autocast(inp.device.type, enabled=False):
            return self._each_layer(cells, cast(inp), cast(h0), cast(c0), projected, cast)

    def _each_layer(self, cells: dict[str, Recurrence], x: Tensor, h0: Tensor, c0: Tensor | None, projected: bool,
                    cast: Callable[[Tensor | None], Tensor | None] = lambda t: t) -> tuple[Tensor, State]:
        """Each layer's input projection, then its loop over time: one call of its cell. `cast` is applied to each
        layer's parameters (to autocast's dtype, or none)."""
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = map(cast, self.layer_params(layer))
            if layer > 0:
                x = F.dropout(x, self.dropout, self.training)
            given = projected and layer == 0  # the caller's projection has b_ih already
            outside, inside = split_biases(self.mode, None if given else b_ih, b_hh, w_hh)
            if given:
                xg = x if outside is None else x + outside
            else:  # (T, B, G*H): the input projection of all steps in one product
                xg = F.linear(x, w_ih, outside)
            x, h, c = self._layer(cells[self.mode], xg, w_hh, inside, h0[layer], None if c0 is None else c0[layer])
            h_n.append(h)
            c_n.append(c)
        h_stack = torch.stack(h_n)  # (L, B, H)
        return x, h_stack if c0 is None else (h_stack, torch.stack(c_n))

    @staticmethod
    def _layer(cell: Recurrence, xg: Tensor, w_hh: Tensor, bias: Tensor | None, h0: Tensor,
               c0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """One layer: output (T, B, H), h_n (B, H), c_n (B, H) or None; through autograd only when a gradient is
        wanted, else with one step's scratch buffers and nothing kept."""
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (xg, w_hh, bias, h0, c0)):
            return _Layer.apply(cell, xg, w_hh, bias, h0, c0)
        hs, c_n, _ = cell.forward(xg, w_hh, bias, h0, c0, False)
        return hs[1:], hs[-1], c_n

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
            if s.device != xproj.device:
                raise ValueError(f"the hidden state is on {s.device} and the input on {xproj.device}: put both on one "
                                 "device")
            # The loops would copy a state of another dtype silently (`reference.history`); under autocast a state in
            # the autocast dtype (carried from an earlier call) is expected, and the layers cast it.
            if self._autocast_dtype(xproj) is None and s.dtype != xproj.dtype:
                raise ValueError(f"the hidden state is {s.dtype} and the input {xproj.dtype}: give both the same dtype")
        return (states[0], states[1]) if is_lstm else (states[0], None)

    @staticmethod
    def _autocast_dtype(x: Tensor) -> torch.dtype | None:
        if torch.is_autocast_enabled(x.device.type) and x.is_floating_point():
            return torch.get_autocast_dtype(x.device.type)
        return None


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
