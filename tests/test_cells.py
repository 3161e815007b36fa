"""rnnlm's cells against torch.nn's, in float64: outputs, final states and every gradient, on every fast path.

The fast paths are: the training path (a custom autograd Function per layer with a hand-written backward), the
no-autograd path (evaluation, and T=1 sampling steps), and `forward_projected` (the model's one-hot column lookup).
"""

from __future__ import annotations


import pytest
import torch
from torch import Tensor, nn

from helpers import KINDS, flat_state, initial_state, make_pair
from rnnlm import cells, reference

TOL = {"rtol": 1e-10, "atol": 1e-10}


def leaf(state, requires_grad: bool):
    return tuple(s.clone().requires_grad_(requires_grad) for s in flat_state(state))


def as_hx(kind: str, states: tuple[Tensor, ...]):
    return states if kind == "lstm" else states[0]


def run_both(ref: nn.Module, ours: nn.Module, kind: str, x: Tensor, hx) -> None:
    """Forward both, backward a loss touching the output and every final state, compare all of it."""
    results = []
    for module in (ref, ours):
        module.zero_grad()
        xi = x.clone().requires_grad_(True)
        hi = None if hx is None else leaf(hx, True)
        out, state = module(xi, None if hi is None else as_hx(kind, hi))
        # Fixed random weights on every output so no gradient is trivially symmetric.
        g = torch.Generator().manual_seed(1)
        loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
        for s in flat_state(state):
            loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
        loss.backward()
        grads = [xi.grad] + ([] if hi is None else [h.grad for h in hi])
        grads += [p.grad for p in module.parameters()]
        results.append((out, flat_state(state), grads))
    (out_r, st_r, gr_r), (out_o, st_o, gr_o) = results
    torch.testing.assert_close(out_o, out_r, **TOL)
    for a, b in zip(st_o, st_r, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    names = ["input"] + (["h0", "c0"][: len(gr_r) - 1 - len(list(ref.parameters()))]) + [n for n, _ in
                                                                                         ref.named_parameters()]
    for name, a, b in zip(names, gr_o, gr_r, strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, name=name: f"gradient of {name}: {m}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layers,batch,with_state", [(1, 1, False), (2, 3, True), (3, 4, False), (2, 1, True)])
def test_training_path_matches_torch(kind: str, layers: int, batch: int, with_state: bool) -> None:
    ref, ours = make_pair(kind, 5, 7, layers)
    x = torch.randn(6, batch, 5, dtype=torch.float64)
    run_both(ref, ours, kind, x, initial_state(kind, layers, batch, 7) if with_state else None)


@pytest.mark.parametrize("kind", KINDS)
def test_no_bias_and_batch_first_match_torch(kind: str) -> None:
    ref, ours = make_pair(kind, 4, 6, 2, bias=False, batch_first=True)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    x = torch.randn(3, 5, 4, dtype=torch.float64)  # (B, T, in)
    run_both(ref, ours, kind, x, initial_state(kind, 2, 3, 6))


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_input_matches_torch(kind: str) -> None:
    ref, ours = make_pair(kind, 4, 6, 2)
    x = torch.randn(5, 4, dtype=torch.float64)  # (T, in)
    run_both(ref, ours, kind, x, initial_state(kind, 2, None, 6))
    run_both(ref, ours, kind, x, None)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", [1, 2])
def test_single_step_under_inference_mode_matches_torch(kind: str, batch: int) -> None:
    """The sampling path: T=1 at a time, state carried, no autograd, through forward and forward_projected."""
    ref, ours = make_pair(kind, 5, 8, 2)
    x = torch.randn(7, batch, 5, dtype=torch.float64)
    state_r = state_o = state_p = initial_state(kind, 2, batch, 8)
    with torch.inference_mode():
        for t in range(x.shape[0]):
            out_r, state_r = ref(x[t : t + 1], state_r)
            out_o, state_o = ours(x[t : t + 1], state_o)
            xproj = x[t : t + 1] @ ours.weight_ih_l0.t() + ours.bias_ih_l0  # (1, B, G*H)
            out_p, state_p = ours.forward_projected(xproj, state_p)
            torch.testing.assert_close(out_o, out_r, **TOL)
            torch.testing.assert_close(out_p, out_r, **TOL)
            for a, b, c in zip(flat_state(state_o), flat_state(state_p), flat_state(state_r), strict=True):
                torch.testing.assert_close(a, c, **TOL)
                torch.testing.assert_close(b, c, **TOL)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", [1, 4])
def test_no_grad_sequence_matches_torch(kind: str, batch: int) -> None:
    """Evaluation: a whole sequence without autograd goes through the scratch-buffer path."""
    ref, ours = make_pair(kind, 5, 8, 3)
    x = torch.randn(9, batch, 5, dtype=torch.float64)
    hx = initial_state(kind, 3, batch, 8)
    with torch.no_grad():
        out_r, st_r = ref(x, hx)
        out_o, st_o = ours(x, hx)
    assert not out_o.requires_grad
    torch.testing.assert_close(out_o, out_r, **TOL)
    for a, b in zip(flat_state(st_o), flat_state(st_r), strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_inference_path_follows_weight_updates(kind: str) -> None:
    """The no-grad path keeps transposed weight copies; an optimizer step or a state dict load must refresh them."""
    ref, ours = make_pair(kind, 5, 8, 2)
    x = torch.randn(3, 2, 5, dtype=torch.float64)
    with torch.no_grad():
        ours(x)
    opt = torch.optim.SGD(ours.parameters(), lr=0.5)
    ours(x)[0].sum().backward()
    opt.step()
    ref.load_state_dict(ours.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(ours(x)[0], ref(x)[0], **TOL)
        ours.load_state_dict(make_pair(kind, 5, 8, 2)[0].state_dict())
        torch.testing.assert_close(ours(x)[0], make_pair(kind, 5, 8, 2)[0](x)[0], **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_projected_gradients_reach_w_ih_through_a_lookup(kind: str) -> None:
    """The model's one-hot path: xproj = W_ih^T[tokens] + b_ih, equal to a dense one-hot forward, gradients too."""
    vocab, hidden = 6, 5
    ref, ours = make_pair(kind, vocab, hidden, 2)
    tokens = torch.randint(vocab, (4, 3))  # (T, B)
    onehot = nn.functional.one_hot(tokens, vocab).double()
    out_r, st_r = ref(onehot)
    xproj = ours.weight_ih_l0.t()[tokens] + ours.bias_ih_l0  # (T, B, G*H)
    out_o, st_o = ours.forward_projected(xproj)
    g = torch.randn(out_r.shape, dtype=torch.float64)
    (out_r * g).sum().backward()
    (out_o * g).sum().backward()
    torch.testing.assert_close(out_o, out_r, **TOL)
    for (name, p_r), p_o in zip(ref.named_parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(p_o.grad, p_r.grad, **TOL, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("kind", KINDS)
def test_custom_backward_passes_gradcheck(kind: str) -> None:
    """Finite differences against the reference's hand-written backward through time, every input at once."""
    torch.manual_seed(0)
    steps, batch, hidden = 4, 2, 3
    mode = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU"}[kind]
    gates = {"lstm": 4, "gru": 3}.get(kind, 1)
    d = {"dtype": torch.float64, "requires_grad": True}
    xg = torch.randn(steps, batch, gates * hidden, **d)
    h0, c0 = torch.randn(batch, hidden, **d), torch.randn(batch, hidden, **d)
    w_hh, b_hh = torch.randn(gates * hidden, hidden, **d) * 0.5, torch.randn(gates * hidden, **d)
    bias = None if kind.startswith("rnn") else b_hh
    cell = reference.CELLS[mode]

    def layer(*args):
        return [t for t in cells._Layer.apply(cell, *args) if t is not None]

    assert torch.autograd.gradcheck(layer, (xg, w_hh, bias, h0, c0 if kind == "lstm" else None))


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_only_in_training_and_eval_matches_torch(kind: str) -> None:
    ref, ours = make_pair(kind, 5, 16, 3, dropout=0.5)
    x = torch.randn(6, 4, 5, dtype=torch.float64)
    ours.train()
    torch.manual_seed(3)
    out_a, _ = ours(x)
    torch.manual_seed(4)
    out_b, _ = ours(x)
    assert not torch.allclose(out_a, out_b)
    ref.eval()
    ours.eval()
    out_o, _ = ours(x)
    out_r, _ = ref(x)
    torch.testing.assert_close(out_o, out_r, **TOL)
    assert not torch.allclose(out_a, out_o)


@pytest.mark.parametrize("kind", KINDS)
def test_default_init_matches_torch_bounds(kind: str) -> None:
    ref, ours = make_pair(kind, 5, 25, 2)
    ours.reset_parameters()
    for (name, p_r), (name_o, p_o) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        assert name == name_o and p_o.shape == p_r.shape
        assert p_o.abs().max() <= 1 / 5 and p_o.abs().max() > 0.15  # uniform(-1/sqrt(H), 1/sqrt(H))


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_bf16_autocast_runs_and_stays_close(kind: str) -> None:
    ref, ours = make_pair(kind, 8, 16, 2)
    ours.float()
    x = torch.randn(5, 3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = ours(x)
        out.float().sum().backward()
        with torch.inference_mode():
            out_inf, _ = ours(x[:1])
    assert out.dtype == torch.bfloat16 and out_inf.dtype == torch.bfloat16
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in ours.parameters())
    out32, _ = ours(x)
    torch.testing.assert_close(out.float(), out32, rtol=0.05, atol=0.05)


def test_rejects_what_it_does_not_implement() -> None:
    with pytest.raises(ValueError, match="unidirectional"):
        cells.LSTM(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match="proj_size"):
        cells.LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="nonlinearity"):
        cells.RNN(3, 4, nonlinearity="sigmoid")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model_dtype", [torch.float64, torch.float32])  # the PyTorch-ops path, the C loops
@pytest.mark.parametrize("grad", [True, False])
def test_a_hidden_state_of_another_dtype_or_device_is_refused(kind: str, model_dtype: torch.dtype,
                                                              grad: bool) -> None:
    """As torch.nn refuses them, rather than copying the state into the loop's dtype or onto its device; for the LSTM
    either state of the pair."""
    ours = make_pair(kind, 5, 7, 1)[1].to(model_dtype)
    x = torch.randn(4, 2, 5, dtype=model_dtype)
    other = torch.float32 if model_dtype == torch.float64 else torch.float64
    right = tuple(s.to(model_dtype) for s in flat_state(initial_state(kind, 1, 2, 7)))
    for which in range(len(right)):
        for wrong, message in ((right[which].to(other), "hidden state is torch.float"),
                               (right[which].to("meta"), "hidden state is on meta")):
            states = right[:which] + (wrong,) + right[which + 1:]
            with torch.set_grad_enabled(grad), pytest.raises(ValueError, match=message):
                ours(x, as_hx(kind, states))
    ours(x, as_hx(kind, right))  # and the right ones are taken


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_sequence_is_refused(kind: str) -> None:
    ours = make_pair(kind, 5, 7, 1)[1].float()
    for grad, batch in ((True, 2), (False, 2), (False, 9)):  # the training loops, the step kernel, the no-grad loops
        with torch.set_grad_enabled(grad), pytest.raises(ValueError, match="at least one step"):
            ours(torch.randn(0, batch, 5))


def test_no_torch_recurrent_kernels_in_the_package() -> None:
    """The fused kernels are the reference, never the implementation: no code under rnnlm/ names them (comments and
    docstrings may)."""
    import ast
    import pathlib

    import rnnlm

    banned_attrs = {"RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "lstm", "gru", "rnn_tanh", "rnn_relu",
                    "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell", "_VF", "_VariableFunctions",
                    "mkldnn_rnn_layer", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell"}
    torch_modules = {"torch", "nn", "torch.nn", "torch._C", "_C", "F", "functional", "torch.nn.functional"}
    for path in pathlib.Path(rnnlm.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in banned_attrs:
                owner = ast.unparse(node.value)
                assert owner.split(".")[-1] not in torch_modules and "torch" not in owner, \
                    f"{path.name}:{node.lineno} uses {owner}.{node.attr}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch"):
                names = {alias.name for alias in node.names}
                assert not names & banned_attrs, f"{path.name}:{node.lineno} imports {names & banned_attrs}"
