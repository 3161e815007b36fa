"""The C kernels behind float32 CPU recurrences (rnnlm/fused.c): built here, equal to torch.nn with and without them,
and a machine that cannot build them still trains, on the PyTorch path."""

from __future__ import annotations

import collections
import copy
import os
import pickle
import shutil
import stat
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from rnnlm import cells, fastpath, fused, runtime
from helpers import KINDS, flat_state, initial_state, make_pair

F32 = {"rtol": 2e-5, "atol": 2e-6}  # float32 rounding over a few steps, against torch.nn in float64


@pytest.fixture(params=["fused", "pytorch"])
def path(request, monkeypatch) -> str:
    """Each test runs once through the C kernels and once with RNNLM_FUSED=0 (PyTorch ops only)."""
    if request.param == "pytorch":
        monkeypatch.setenv("RNNLM_FUSED", "0")
    else:
        monkeypatch.delenv("RNNLM_FUSED", raising=False)
        if fused.kernels(torch.zeros(1)) is None:
            pytest.skip("no C compiler here: the PyTorch path is the one that runs")
    return request.param


@pytest.fixture
def kernel_calls(monkeypatch) -> collections.Counter:
    """Counts calls of the C kernels that also do products (rnnlm_step, rnnlm_lstm_sequence and rnnlm_gru_sequence
    and rnnlm_rnn_sequence, and their backward passes), so that a test knows which path ran."""
    calls: collections.Counter = collections.Counter()
    lib = fused.kernels(torch.zeros(1))
    if lib is not None:
        for name in ("step", "lstm_sequence", "lstm_backward_sequence", "gru_sequence", "gru_backward_sequence",
                     "rnn_sequence", "rnn_backward_sequence"):
            real = getattr(lib, name)
            monkeypatch.setattr(lib, name, lambda name=name, real=real, **args: (calls.update([name]), real(**args))[1])
    return calls


def assert_matches(ref: nn.Module, ours: nn.Module, results, xf, x, hidden: int = 64) -> None:
    """Each (ours, torch.nn's) result, the input's gradient and every parameter's gradient, to float32 rounding.

    A gradient is a sum over hidden units, steps and rows whose terms partly cancel, so an entry's float32 error
    follows the size of the terms summed, not the entry's own size: each tensor is held to F32's rtol of its largest
    entry (a normwise bound), and past 64 units the absolute floor grows like the square root of the sums' length."""
    def close(a: torch.Tensor, b: torch.Tensor, name: str = "") -> None:
        atol = max(F32["atol"] * max(1.0, (hidden / 64) ** 0.5), F32["rtol"] * float(b.detach().abs().max()))
        torch.testing.assert_close(a.double(), b.detach(), rtol=F32["rtol"], atol=atol,
                                   msg=(lambda m: f"{name}: {m}") if name else None)

    for a, b in results:
        close(a, b)
    close(xf.grad, x.grad, "input")
    for (name, p_r), p_o in zip(ref.named_parameters(), ours.parameters(), strict=True):
        close(p_o.grad, p_r.grad, name)


def test_kernels_are_built_where_there_is_a_compiler() -> None:
    """A silent fallback would cost every CPU user the speed: where cc exists (and always in CI) they must load."""
    if not (os.environ.get("CI") or shutil.which(os.environ.get("CC") or "cc")):
        pytest.skip("no C compiler on this machine")
    assert fused.kernels(torch.zeros(1)) is not None
    assert fused.kernels(torch.zeros(1, dtype=torch.float64)) is None  # float64 and bf16 take the PyTorch path
    assert fused.kernels(torch.zeros(1, dtype=torch.bfloat16)) is None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hidden, batch", [(13, 5), (64, 1), (100, 10), (20, 3), (36, 8), (131, 2)])
def test_float32_training_matches_torch(kind: str, hidden: int, batch: int, path: str, kernel_calls) -> None:
    """Outputs, final states and the gradients of the input, the initial states and the parameters. 13 units: rows
    that end mid-vector. The LSTM and the GRU run whole sequences in one C call each way (rnnlm_lstm_sequence,
    rnnlm_gru_sequence, rnnlm_rnn_sequence and their backward passes). The batches leave every remainder of the C loops' row
    blocks (the LSTM's rows in threes, the GRU's in fours, the backward passes' and the RNN's in sixes); 100 units
    run the C loops on two threads (conftest sets one for every other test), with an odd number of panels (the loops
    in sixes take panels in pairs)."""
    if hidden == 100 and path == "fused":  # the C loops' OpenMP split (they share torch's OpenMP runtime and setting)
        torch.set_num_threads(2)
    ref, ours = make_pair(kind, 5, hidden, 2)
    ours.float()
    x, hx = torch.randn(7, batch, 5, dtype=torch.float64), initial_state(kind, 2, batch, hidden)
    hx = tuple(s.requires_grad_(True) for s in hx) if kind == "lstm" else hx.requires_grad_(True)
    out_r, st_r = ref(x.requires_grad_(True), hx)
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (out_r, *flat_state(st_r))]
    sum((t * w).sum() for t, w in zip((out_r, *flat_state(st_r)), weights)).backward()
    xf = x.detach().float().requires_grad_(True)
    hf = tuple(s.detach().float().requires_grad_(True) for s in flat_state(hx))
    out_o, st_o = ours(xf, hf if kind == "lstm" else hf[0])
    sum((t * w.float()).sum() for t, w in zip((out_o, *flat_state(st_o)), weights)).backward()
    state_grads = [(s_o.grad, s_r.grad) for s_o, s_r in zip(hf, flat_state(hx), strict=True)]
    assert_matches(ref, ours, [*zip((out_o, *flat_state(st_o)), (out_r, *flat_state(st_r)), strict=True),
                               *state_grads], xf, x, hidden)
    whole = path == "fused"
    assert kernel_calls["lstm_sequence"] == kernel_calls["lstm_backward_sequence"] == (2 if whole and kind == "lstm"
                                                                                       else 0)  # two layers
    assert kernel_calls["gru_sequence"] == kernel_calls["gru_backward_sequence"] == (2 if whole and kind == "gru"
                                                                                     else 0)
    assert kernel_calls["rnn_sequence"] == kernel_calls["rnn_backward_sequence"] == (2 if whole and kind.startswith("rnn")
                                                                                     else 0)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_batch_first_without_bias_matches_torch(kind: str, path: str) -> None:
    """batch_first input reaches the kernels transposed (made contiguous first); no bias means zero addends, in training
    and in evaluation (5 steps at a batch past STEP_MAX_BATCH, so whole sequences rather than the one-step kernel)."""
    ref, ours = make_pair(kind, 4, 9, 2, batch_first=True, bias=False)
    ours.float()
    x = torch.randn(3, 5, 4, dtype=torch.float64)  # (B, T, in)
    out_r, _ = ref(x.requires_grad_(True))
    out_r.pow(2).sum().backward()
    xf = x.detach().float().requires_grad_(True)
    out_o, _ = ours(xf)
    out_o.pow(2).sum().backward()
    assert_matches(ref, ours, [(out_o, out_r)], xf, x)
    wide = torch.randn(fastpath.STEP_MAX_BATCH + 1, 5, 4, dtype=torch.float64)
    with torch.inference_mode():
        torch.testing.assert_close(ours(wide.float())[0].double(), ref(wide)[0], **F32)


@pytest.mark.parametrize("kind", KINDS)
# Whole sequences (6 steps): the layer loops; up to STEP_MAX_STEPS steps, the one-step C kernel up to STEP_MAX_BATCH
# and the layer loops past it. Single steps: the one-step kernel at every batch, its rows in blocks of 3 (LSTM), 4 (GRU) or 6 (RNN) and what is left over: 3 x 3 + 1,
# 4 x 2 + 2, 6 + 4 at the last batch.
@pytest.mark.parametrize("batch", [1, 2, 3, 5, fastpath.STEP_MAX_BATCH + 2])
@pytest.mark.parametrize("hidden", [13, 131])
def test_float32_inference_and_sampling_steps_match_torch(kind: str, batch: int, hidden: int, path: str,
                                                          kernel_calls) -> None:
    """Evaluation (a whole sequence), sampling (one character at a time, the state carried) and the model's one-hot
    path (forward_projected), whole and a step at a time, without autograd: outputs and states. Both widths leave the C
    kernels' last panel of 8 part-filled: 13 units in two panels (the RNN's pair with a part-filled second), 131 in 17
    (an odd one out), on two threads. Three layers chain each layer's new state into the next."""
    if hidden == 131 and path == "fused":  # the one-step kernel's OpenMP split (conftest sets one thread)
        torch.set_num_threads(2)
    ref, ours = make_pair(kind, 5, hidden, 3)
    ours.float()
    x, hx = torch.randn(6, batch, 5, dtype=torch.float64), initial_state(kind, 3, batch, hidden)
    as_float = (lambda s: tuple(t.float() for t in s)) if kind == "lstm" else (lambda s: s.float())
    with torch.inference_mode():
        out_r, st_r = ref(x, hx)
        out_o, st_o = ours(x.float(), as_float(hx))
        xproj = x.float() @ ours.weight_ih_l0.t() + ours.bias_ih_l0  # (T, B, G*H), as the model's one-hot lookup
        out_p, st_p = ours.forward_projected(xproj, as_float(hx))
        for a, b, c in zip((out_o, *flat_state(st_o)), (out_p, *flat_state(st_p)), (out_r, *flat_state(st_r))):
            torch.testing.assert_close(a.double(), c, **F32)
            torch.testing.assert_close(b.double(), c, **F32)
        few = slice(0, fastpath.STEP_MAX_STEPS)  # a short prime: the one-step kernel up to STEP_MAX_BATCH
        before = collections.Counter(kernel_calls)
        (few_o, few_so), (few_r, few_sr) = ours(x[few].float(), as_float(hx)), ref(x[few], hx)
        for a, c in zip((few_o, *flat_state(few_so)), (few_r, *flat_state(few_sr)), strict=True):
            torch.testing.assert_close(a.double(), c, **F32)
        one_step = path == "fused" and batch <= fastpath.STEP_MAX_BATCH
        assert kernel_calls["step"] - before["step"] == (fastpath.STEP_MAX_STEPS if one_step else 0)
        state_r, state_o, state_p = hx, as_float(hx), as_float(hx)
        for t in range(x.shape[0]):
            step_r, state_r = ref(x[t : t + 1], state_r)
            step_o, state_o = ours(x[t : t + 1].float(), state_o)
            step_p, state_p = ours.forward_projected(xproj[t : t + 1], state_p)
            torch.testing.assert_close(step_o.double(), step_r, **F32)
            torch.testing.assert_close(step_p.double(), step_r, **F32)
        for a, b, c in zip(flat_state(state_o), flat_state(state_p), flat_state(state_r), strict=True):
            torch.testing.assert_close(a.double(), c, **F32)
            torch.testing.assert_close(b.double(), c, **F32)
    assert bool(kernel_calls["step"]) == (path == "fused")
    whole = path == "fused"  # the 6-step sequence, at any batch
    assert bool(kernel_calls["lstm_sequence"]) == (whole and kind == "lstm")
    assert bool(kernel_calls["gru_sequence"]) == (whole and kind == "gru")
    assert bool(kernel_calls["rnn_sequence"]) == (whole and kind.startswith("rnn"))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("steps", [1, 3])
def test_an_in_place_op_on_the_output_leaves_the_state_alone(kind: str, layers: int, steps: int, path: str) -> None:
    """Without autograd, as with torch.nn: the output and the final state are separate tensors, so that a caller
    scaling its output in place does not change the state its next step starts from (one layer's output is where
    its states are kept, in the one-step kernel)."""
    _, ours = make_pair(kind, 5, 12, layers)
    ours.float()
    with torch.no_grad():
        out, state = ours(torch.randn(steps, 2, 5))
        before = [s.clone() for s in flat_state(state)]
        out.mul_(0)
        for now, then in zip(flat_state(state), before, strict=True):
            torch.testing.assert_close(now, then, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("batch", [1, fastpath.STEP_MAX_BATCH + 1])
def test_packed_inference_weights_follow_weight_updates(kind: str, batch: int, path: str) -> None:
    """The C kernels read weights packed once (the one-step kernel at batch 1, the LSTM's sequence loop above
    STEP_MAX_BATCH); an optimizer step or a state dict load must repack them."""
    ref, ours = make_pair(kind, 5, 12, 2)
    ours.float()
    x = torch.randn(3, batch, 5)
    with torch.no_grad():
        ours(x)  # packs
    opt = torch.optim.SGD(ours.parameters(), lr=0.5)
    ours(x)[0].sum().backward()
    opt.step()
    ref.load_state_dict(ours.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(ours(x)[0].double(), ref(x.double())[0], **F32)
        other = make_pair(kind, 5, 12, 2)[0]
        other.load_state_dict({k: v * 2 for k, v in other.state_dict().items()})
        ours.load_state_dict(other.state_dict())
        torch.testing.assert_close(ours(x)[0].double(), other(x.double())[0], **F32)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_model_that_has_sampled_copies_and_pickles(kind: str, path: str) -> None:
    """The packed weights kept for the C kernels hold raw addresses: copies and pickles leave them out, and the copy
    packs its own (from its own weights) when it samples."""
    _, ours = make_pair(kind, 5, 12, 2)
    ours.float()
    x = torch.randn(4, 1, 5)
    with torch.no_grad():
        before = ours(x)[0]
        copied, unpickled = copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))
        for other in (copied, unpickled):
            torch.testing.assert_close(other(x)[0], before)
        copied.weight_hh_l0.mul_(0.5)
        assert not torch.allclose(copied(x)[0], before)
        torch.testing.assert_close(ours(x)[0], before)


def test_the_c_kernels_leave_a_float64_or_mixed_model_alone(path: str) -> None:
    """A float64 model given float32 input raises, as torch.nn does, instead of running in float32; a float32 model
    given float64 input too."""
    for model, x in ((cells.LSTM(5, 8, 1).double(), torch.randn(3, 1, 5)),
                     (cells.GRU(5, 8, 1), torch.randn(3, 1, 5).double())):
        with torch.no_grad(), pytest.raises(RuntimeError):
            model(x)


def test_dropout_in_training_mode_still_drops_without_autograd(path: str) -> None:
    """A model left in training mode drops units between layers even under no_grad, as torch.nn does: the C step
    (which has no dropout) must not take such a call."""
    torch.manual_seed(0)
    ours = cells.LSTM(5, 16, 2, dropout=0.5)
    x = torch.randn(4, 1, 5)
    with torch.no_grad():
        dropped = ours(x)[0]
        kept = ours.eval()(x)[0]
    assert not torch.allclose(dropped, kept)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_transposed_initial_state_matches_torch(kind: str, path: str) -> None:
    """A state handed in with other strides (a transposed view) is read as values, not as memory, on both paths."""
    ref, ours = make_pair(kind, 4, 8, 1)
    ours.float()
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    states = [torch.randn(1, 8, 3, dtype=torch.float64).transpose(1, 2) for _ in range(2 if kind == "lstm" else 1)]
    hx_r = tuple(states) if kind == "lstm" else states[0]
    hx_o = tuple(s.float() for s in states) if kind == "lstm" else states[0].float()
    assert not flat_state(hx_o)[0].is_contiguous()
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            out_r, st_r = ref(x, hx_r)
            out_o, st_o = ours(x.float(), hx_o)
        for a, b in zip((out_o, *flat_state(st_o)), (out_r, *flat_state(st_r)), strict=True):
            torch.testing.assert_close(a.double(), b.detach(), **F32)


@pytest.mark.parametrize("tanh_of", [0, 0xFFF], ids=["sigmoid", "tanh"])
def test_activations_match_torch_over_the_whole_range(tanh_of: int) -> None:
    """sigmoid and tanh of the C loops (12 vectors at a time), from deep saturation through 0 (relative error there)
    to inf and nan."""
    kernels = fused.kernels(torch.zeros(1))
    if kernels is None:
        pytest.skip("no C compiler here")
    x = torch.cat([torch.linspace(-120, 120, 200_001), torch.logspace(-30, 1, 2_000), -torch.logspace(-30, 1, 2_000),
                   torch.tensor([0.0, float("inf"), -float("inf"), float("nan")])])
    y = torch.empty_like(x)
    kernels.activations(y=y, x=x, tanh_of=tanh_of)
    expected = (torch.tanh if tanh_of else torch.sigmoid)(x.double())
    torch.testing.assert_close(y.double(), expected, rtol=3e-7, atol=1e-37, equal_nan=True)


@pytest.mark.parametrize("tanh_of", [0x444, 0xF00, 0x5A3])
def test_activations_of_a_row_block_match_torch_and_one_kind_at_a_time(tanh_of: int) -> None:
    """The sequence loops activate up to 12 vectors together, sigmoid or tanh by a bit mask (the LSTM's rows: every
    fourth a tanh): each vector's values are torch's, and the very ones a block of a single kind gives."""
    kernels = fused.kernels(torch.zeros(1))
    if kernels is None:
        pytest.skip("no C compiler here")
    x = torch.cat([torch.linspace(-100, 100, 96 * 500), torch.logspace(-30, 1, 95), torch.tensor([float("nan")])])
    y = torch.empty_like(x)
    kernels.activations(y=y, x=x, tanh_of=tanh_of)
    is_tanh = torch.tensor([tanh_of >> (k // 8 % 12) & 1 == 1 for k in range(x.numel())])
    expected = torch.where(is_tanh, torch.tanh(x.double()), torch.sigmoid(x.double()))
    torch.testing.assert_close(y.double(), expected, rtol=3e-7, atol=1e-37, equal_nan=True)
    alone_sigmoid, alone_tanh = torch.empty_like(x), torch.empty_like(x)
    kernels.activations(y=alone_sigmoid, x=x, tanh_of=0)
    kernels.activations(y=alone_tanh, x=x, tanh_of=0xFFF)
    assert torch.equal(y[:-1], torch.where(is_tanh, alone_tanh, alone_sigmoid)[:-1])


def test_every_c_entry_point_has_one_typed_wrapper_with_outputs_first_and_sizes_last() -> None:
    """The wrappers call fused.c by parameter name, read from its definitions: each exported function has a wrapper,
    and its signature lists pointers (outputs first, by the C comments) before the integer sizes and flags."""
    c_functions = fused.signatures(fused.SOURCE.read_text())
    wrappers = {name for name in vars(fused.Kernels) if not name.startswith("_")}
    assert {name.removeprefix("rnnlm_") for name in c_functions} == wrappers
    for name, params in c_functions.items():
        kinds = [is_int for _, is_int in params]
        assert kinds == sorted(kinds), f"{name}: an integer before a pointer: {params}"


def test_a_wrong_argument_is_refused_before_any_address_is_passed() -> None:
    """A swapped, misshapen, non-contiguous or wrongly typed tensor is an error, never a call into C."""
    kernels = fused.kernels(torch.zeros(1))
    if kernels is None:
        pytest.skip("no C compiler here")
    steps, batch, hidden = 3, 2, 8
    h, xg, h0 = torch.empty(steps, batch, hidden), torch.randn(steps, batch, hidden), torch.zeros(batch, hidden)
    panels = fused.pack_panels(torch.randn(hidden, hidden), 1, hidden)
    good = {"h": h, "xg": xg, "panels": panels, "h0": h0, "relu": False}
    kernels.rnn_sequence(**good)
    for bad, message in ((dict(h0=xg), "h0 has shape"), (dict(panels=h0), "panels has shape"),
                         (dict(xg=xg.double()), "xg must be a contiguous float32"),
                         (dict(xg=xg.transpose(0, 1).contiguous().transpose(0, 1)), "not contiguous"),
                         (dict(h0=None), "h0 is required")):
        with pytest.raises(ValueError, match=message):
            kernels.rnn_sequence(**{**good, **bad})
    wide = torch.randn(steps, batch, 3 * hidden)  # a GRU's b_hh is read at every step: NULL was a segfault
    gru = {"h": h, "hh": None, "gates": None, "xg": wide, "panels": fused.pack_panels(torch.randn(3 * hidden, hidden),
                                                                                     3, hidden), "h0": h0}
    kernels.gru_sequence(**gru, b_hh=torch.zeros(3 * hidden))  # hh and gates: NULL without autograd
    with pytest.raises(ValueError, match="gru_sequence: b_hh is required"):
        kernels.gru_sequence(**gru, b_hh=None)
    with pytest.raises(TypeError, match="rnnlm_rnn_sequence"):
        kernels._call("rnnlm_rnn_sequence", h=h, xg=xg, panels=panels, h_prev=h0, relu=0, T=steps, B=batch, H=hidden)


def _fake_compiler(tmp_path: Path, script: str) -> str:
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\n" + script)
    cc.chmod(cc.stat().st_mode | stat.S_IEXEC)
    return str(cc)


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """No cached library and no loaded one: the next fused.kernels() builds from scratch in tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RNNLM_FUSED", raising=False)
    fused._load.cache_clear()
    yield
    fused._load.cache_clear()


def test_a_compiler_that_fails_means_the_pytorch_path_and_one_warning(tmp_path, monkeypatch, fresh_build) -> None:
    monkeypatch.setenv("CC", _fake_compiler(tmp_path, "echo 'fused.c:1: error: no vectors today' >&2; exit 1"))
    with pytest.warns(UserWarning, match="could not build.*no vectors today"):
        assert fused.kernels(torch.zeros(1)) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fused.kernels(torch.zeros(1)) is None  # decided once per process
    ref, ours = make_pair("lstm", 3, 4, 1)  # and the cells still train, on the PyTorch path
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, _ = ours.float()(x.float())
    out.sum().backward()
    torch.testing.assert_close(out.double(), ref(x)[0].detach(), **F32)
    assert all(p.grad is not None for p in ours.parameters())


def test_no_compiler_is_quiet(tmp_path, monkeypatch, fresh_build) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fused.kernels(torch.zeros(1)) is None


def test_a_library_is_built_once_and_reused(tmp_path, monkeypatch) -> None:
    """Into an empty cache, through a compiler that logs its calls and hands over the library this machine already
    built (a real compile of -O3 -march=native takes half a minute; kernels_are_built tests that)."""
    compiler = shutil.which(os.environ.get("CC") or "cc")
    if not compiler:
        pytest.skip("no C compiler here")
    real = fused._build(compiler)
    calls = tmp_path / "calls"
    script = f'echo "$@" >> {calls}\nwhile [ "$1" != "-o" ]; do shift; done\ncp {real} "$2"\n'
    monkeypatch.setenv("CC", _fake_compiler(tmp_path, script))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RNNLM_FUSED", raising=False)
    fused._load.cache_clear()
    try:
        assert fused.kernels(torch.zeros(1)) is not None
    finally:
        fused._load.cache_clear()
    built = list((tmp_path / "cache" / "rnnlm").glob("fused-*.so"))
    assert len(built) == 1 and not list((tmp_path / "cache" / "rnnlm").glob("*.tmp"))  # no half-written leftovers
    first = built[0].stat().st_mtime_ns
    assert fused._build(os.environ["CC"]) == built[0] and built[0].stat().st_mtime_ns == first
    assert len(calls.read_text().splitlines()) == 1  # compiled once, then found in the cache


def test_keep_freed_memory_takes_on_glibc() -> None:
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("a glibc malloc setting")
    assert runtime.keep_freed_memory()


def test_the_model_trains_the_same_with_and_without_kernels(monkeypatch) -> None:
    """Ten Adam steps of a small LSTM model end at the same loss either way (same equations, float32 rounding)."""
    if fused.kernels(torch.zeros(1)) is None:
        pytest.skip("no C compiler here")

    def run() -> float:
        torch.manual_seed(0)
        model = nn.ModuleDict({"rnn": cells.LSTM(8, 32, 2), "out": nn.Linear(32, 8)})
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        x = torch.randn(20, 4, 8)
        target = torch.randint(8, (20, 4))
        for _ in range(10):
            out, _ = model["rnn"](x)
            loss = nn.functional.cross_entropy(model["out"](out).flatten(0, 1), target.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss.item()

    with_kernels = run()
    monkeypatch.setenv("RNNLM_FUSED", "0")
    assert run() == pytest.approx(with_kernels, rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "gru"])  # the RNN's compiled training: tests/test_train.py
def test_compiled_model_matches_eager(kind: str) -> None:
    """Under torch.compile the C kernels stand aside (a traced graph has no addresses to give them; traced into,
    they computed garbage), so a compiled model gives the eager model's outputs and gradients."""
    torch.manual_seed(0)
    eager = {"lstm": cells.LSTM, "gru": cells.GRU}[kind](5, 8, 1)
    twin = copy.deepcopy(eager)
    x = torch.randn(4, 3, 5)
    out_e, _ = eager(x)
    out_c, _ = torch.compile(twin, dynamic=False)(x)
    out_e.square().sum().backward()
    out_c.square().sum().backward()
    torch.testing.assert_close(out_c, out_e)
    for p_c, p_e in zip(twin.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p_c.grad, p_e.grad)


@pytest.mark.parametrize("gates,hidden", [(4, 13), (3, 24), (1, 40)])
def test_the_threaded_packing_writes_the_layouts_the_loops_read(gates: int, hidden: int) -> None:
    """rnnlm_pack (every training call) against the readable layouts, with units past the last panel's zero."""
    kernels = fused.kernels(torch.zeros(1))
    if kernels is None:
        pytest.skip("no C compiler here")
    w = torch.randn(gates * hidden, hidden)
    panels, back = kernels.pack(w=w, gates=gates, forward=True, backward=True)
    assert torch.equal(panels, fused.pack_panels(w, gates, hidden))
    assert torch.equal(back, fused.pack_by_unit(w))
    assert kernels.pack(w=w, gates=gates, forward=False, backward=True)[0] is None
