"""bfloat16 recurrences (train.precision bf16): the C loops' products of W_hh in bfloat16 with float32 sums, on the
CPU's own instruction where it has one (AVX-512 BF16) and in AVX2 elsewhere, as here; the same numbers either way
(fused.c, "bfloat16 products")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from rnnlm import fused
from helpers import make_pair


@pytest.fixture
def kernels(monkeypatch) -> fused.Kernels:
    monkeypatch.delenv("RNNLM_FUSED", raising=False)
    k = fused.kernels(torch.zeros(1))
    if k is None:
        pytest.skip("no C compiler here: bf16 runs on the PyTorch path")
    return k


def bf16(t: torch.Tensor) -> torch.Tensor:
    """t rounded to bfloat16, in float64 (normal numbers only: the C loops read a denormal as zero, torch keeps it)."""
    return t.to(torch.bfloat16).double()


@pytest.mark.parametrize("hidden", [13, 24])
def test_the_products_round_weights_and_rows_to_bf16_and_sum_in_float32(kernels, hidden: int) -> None:
    """A relu RNN's two steps forward and back, against float64 arithmetic on the rounded operands: float32 sums are
    all that may differ. The same steps without rounding are a bf16 step away (so the check can tell), and an odd
    number of rows (13) takes the loops' last, unpaired k."""
    torch.manual_seed(0)
    steps, batch = 2, 5
    w = torch.randn(hidden, hidden) / hidden ** 0.5
    xg, h0 = torch.randn(steps, batch, hidden), torch.randn(batch, hidden)
    h = torch.empty(steps, batch, hidden)
    panels = fused.pack_pairs(fused.pack_panels(w, 1, hidden))
    kernels.rnn_sequence(h=h, xg=xg, panels=panels, h0=h0, relu=True)
    want, exact, prev, prev_exact = [], [], h0.double(), h0.double()
    for t in range(steps):
        want.append(torch.relu(xg[t].double() + bf16(prev) @ bf16(w).t()))
        exact.append(torch.relu(xg[t].double() + prev_exact @ w.double().t()))
        prev, prev_exact = h[t].double(), exact[-1]
    torch.testing.assert_close(h.double(), torch.stack(want), rtol=1e-5, atol=1e-5)
    assert (h.double() - torch.stack(exact)).abs().max() > 1e-3

    grad_h, grad_hn, d_pre = torch.randn(steps, batch, hidden), torch.randn(batch, hidden), torch.empty_like(h)
    back = fused.pack_pairs(fused.pack_by_unit(w))
    kernels.rnn_backward_sequence(d_pre=d_pre, back=back, h=h, grad_h=grad_h, grad_hn=grad_hn, relu=True)
    slope = (h > 0).double()
    last = (grad_h[1].double() + grad_hn.double()) * slope[1]
    first = (grad_h[0].double() + bf16(d_pre[1].double()) @ bf16(w)) * slope[0]
    torch.testing.assert_close(d_pre.double(), torch.stack((first, last)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_bf16_training_matches_the_pytorch_bf16_path(kernels, monkeypatch, kind: str) -> None:
    """Under bf16 autocast each cell runs the C loops (path "bf16"), and its outputs and every gradient agree with
    float32 and with the PyTorch ops in bf16 (which round the states too) to bf16's precision."""
    model = make_pair(kind, 11, 40, 2)[1].float()
    x = torch.randn(20, 6, 11, requires_grad=True)

    def run(fused_on: bool, autocast: bool) -> list[torch.Tensor]:
        monkeypatch.setenv("RNNLM_FUSED", "1" if fused_on else "0")
        model.zero_grad()
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            assert model._path(x) == ("bf16" if fused_on and autocast else "c" if fused_on else "torch")
            out, _ = model(x)
        out.float().pow(2).sum().backward()
        return [out.detach().float(), x.grad.clone(), *(p.grad.clone() for p in model.parameters())]

    ours, fp32, torch_bf16 = run(True, True), run(True, False), run(False, True)
    for a, b, c in zip(ours, fp32, torch_bf16, strict=True):
        scale = float(b.abs().max())
        torch.testing.assert_close(a, b, rtol=0, atol=2e-2 * scale)
        torch.testing.assert_close(a, c, rtol=0, atol=3e-2 * scale)


def test_a_bf16_state_carried_into_the_next_call_is_taken(kernels) -> None:
    """Truncated BPTT hands the bfloat16 state autocast returned back to the model."""
    model = make_pair("lstm", 8, 16, 2)[1].float()
    x = torch.randn(5, 3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = model(x)
        again, _ = model(x, state)
    assert out.dtype == again.dtype == state[0].dtype == torch.bfloat16
    with torch.no_grad():
        want, _ = model(x, tuple(s.float() for s in state))
    torch.testing.assert_close(again.float(), want, rtol=0, atol=3e-2)


def test_the_native_bf16_loops_compile(tmp_path) -> None:
    """This machine may lack AVX-512 BF16, so the loops written for it cannot run here; the compiler still checks
    them and must emit the instruction."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler here")
    flags = ["-O2", "-mavx512f", "-mavx512vl", "-mavx512bf16", "-fno-trapping-math", "-fPIC", "-S"]
    done = subprocess.run([compiler, *flags, "-o", str(tmp_path / "fused.s"), str(fused.SOURCE)],
                          capture_output=True, text=True)
    if "avx512bf16" in done.stderr and done.returncode:
        pytest.skip(f"{compiler} does not know AVX-512 BF16")
    assert done.returncode == 0, done.stderr
    assert "vdpbf16ps" in (tmp_path / "fused.s").read_text()


def test_the_library_says_which_loops_it_runs(kernels) -> None:
    """-march=native compiles the native loops exactly where the CPU has AVX-512 BF16 (with AVX-512 VL)."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else ():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    if not flags:
        pytest.skip("no /proc/cpuinfo flags here")
    assert kernels.native_bf16 == ({"avx512_bf16", "avx512vl"} <= flags)


def test_float16_autocast_stays_on_the_pytorch_path(kernels) -> None:
    model = make_pair("gru", 4, 8, 1)[1].float()
    with torch.autocast("cpu", dtype=torch.float16):
        assert model._path(torch.randn(3, 2, 4)) == "torch"
