"""Which device a run uses and what it can do there: device names, autocast precision, torch.compile.

Each check fails before any training time is spent, with a message that names the setting and what to use instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil

import torch

from rnnlm.config import Config
from rnnlm.console import say
from rnnlm.errors import RnnlmError


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """auto, cpu, cuda or cuda:N -> a device this machine has; `option` names where `name` came from
    (the config key, or a command's --device) in the message when it is not one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (name in ("cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise RnnlmError(f"{option}={name}: not a device; use one of auto, cpu, cuda, cuda:N")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RnnlmError(f"{option}={name}: this machine has no CUDA device; use {option}=cpu (or auto)")
        index = int(name[5:]) if name.startswith("cuda:") else 0
        if index >= torch.cuda.device_count():
            raise RnnlmError(f"{option}={name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device(name)


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A host tensor on `device`. To a GPU it goes through pinned memory without waiting: a copy from pageable
    memory waits for the GPU to finish all the work queued before it."""
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 itself. A CPU without AVX-512 BF16 or AMX emulates it, and a
    bf16 training step there ran about 80x slower than fp32 (a 1x512 LSTM on a 2-core AVX2 EPYC)."""
    if device.type == "cuda":
        with torch.cuda.device(device):  # not emulated: Ampere and later
            try:
                return torch.cuda.is_bf16_supported(including_emulation=False)
            except TypeError:  # a torch from before the argument, whose answer was already "natively"
                return torch.cuda.is_bf16_supported()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's, present since torch 2.1
    return device.type == "cpu" and any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def precision(cfg: Config, device: torch.device) -> str:
    """`train.precision` with `auto` resolved for `device`: bf16 where it is native, else fp32."""
    if cfg.train.precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return cfg.train.precision


def autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    chosen = precision(cfg, device)
    if chosen == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if chosen == "bf16" else torch.float16)


def check_precision(cfg: Config, device: torch.device) -> None:
    if cfg.train.precision == "fp16" and device.type != "cuda":
        raise RnnlmError("train.precision=fp16 needs a CUDA device; on a CPU use train.precision=auto, bf16 or fp32")
    if cfg.train.precision == "bf16" and device.type == "cuda" and not native_bf16(device):
        raise RnnlmError(f"train.precision=bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp16 or fp32")
    if cfg.train.precision == "bf16" and device.type == "cpu" and not native_bf16(device):
        say("warning: train.precision=bf16: this CPU has no native bfloat16 (AVX-512 BF16 or AMX), so bf16 is "
            "emulated and far slower than fp32; use train.precision=auto (or fp32)")


def check_compile(cfg: Config, device: torch.device) -> None:
    """torch.compile needs a C++ compiler on a CPU and triton on CUDA, and windows of one length."""
    if not cfg.train.compile:
        return
    if cfg.data.records == "pad":
        raise RnnlmError("train.compile needs minibatches of one shape; data.records=pad pads each batch to its own "
                         "longest record; use data.records=pack or train.compile=false")
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise RnnlmError("train.compile on a CPU needs a C++ compiler (g++ or clang++), which this machine lacks; "
                         "install one or set train.compile=false")
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise RnnlmError("train.compile on CUDA needs the triton package (pip install triton); "
                         "or set train.compile=false")
