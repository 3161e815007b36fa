"""Devices and precision: what `train.device` and `train.precision` resolve to, and what they refuse."""

from __future__ import annotations

import pytest
import torch

from rnnlm import device
from rnnlm.config import load_config
from rnnlm.errors import RnnlmError


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch, capsys, native):
    monkeypatch.setattr(device, "native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    auto = load_config(None, ["train.precision=auto"])
    assert device.precision(auto, cpu) == ("bf16" if native else "fp32")
    with device.autocast(auto, cpu):
        product = torch.ones(4, 4) @ torch.ones(4, 4)
    assert product.dtype == (torch.bfloat16 if native else torch.float32)
    # bf16 asked for by name is obeyed either way, with a warning where it is emulated
    device.check_precision(load_config(None, ["train.precision=bf16"]), cpu)
    assert ("bf16 is emulated and far slower than fp32" in capsys.readouterr().err) is not native


def test_a_device_name_that_is_not_one_is_refused_with_the_choices():
    with pytest.raises(RnnlmError, match=r"^--device=gpu: not a device; use one of auto, cpu, cuda, cuda:N$"):
        device.resolve_device("gpu", option="--device")
    assert device.resolve_device("cpu") == torch.device("cpu")


def test_bf16_on_a_gpu_that_only_emulates_it_is_refused(monkeypatch):
    """A V100 holds bfloat16 tensors (torch's default answer counts emulation) but computes them slowly: asking for
    bf16 there is refused, as `auto` would not pick it."""
    import contextlib

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla V100-SXM2-16GB")
    gpu = torch.device("cuda:0")
    assert device.precision(load_config(None, ["train.precision=auto"]), gpu) == "fp32"
    with pytest.raises(RnnlmError, match=r"^train.precision=bf16: Tesla V100-SXM2-16GB has no bfloat16; use fp16 or"):
        device.check_precision(load_config(None, ["train.precision=bf16"]), gpu)
