"""GPU speed switches decided at start-up: mixed precision, channels-last memory, torch.compile.

- `trainer.precision=auto-mixed` (trainer=gpu / ddp): bf16-mixed where the GPU supports bfloat16
  (Ampere and later), else 16-mixed (float16 with Lightning's gradient scaler); float32 without
  a CUDA GPU, with a message. Numerically sensitive ops (TCM correlation and soft-argmax, the
  sparse attention's zoom grid) disable autocast themselves and run in float32.
- `model.channels_last=true`: 4-D weights in `channels_last`, 5-D in `channels_last_3d` (NHWC
  convolutions use tensor cores); activations follow the weights' layout.
- `model.compile=true`: `nn.Module.compile()` in place, so checkpoint keys do not change.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

AUTO_MIXED = "auto-mixed"


def resolve_precision(precision: str | int | None, accelerator: str | None) -> str | int | None:
    """`auto-mixed` → bf16-mixed / 16-mixed on a CUDA GPU, 32-true otherwise; anything else as is."""
    if precision != AUTO_MIXED:
        return precision
    if accelerator in ("cpu",) or not torch.cuda.is_available():
        log.warning("trainer.precision=auto-mixed: no CUDA GPU here, training in float32 (32-true); "
                    "mixed precision is for GPUs (trainer=gpu or trainer=ddp on a GPU machine)")
        return "32-true"
    if torch.cuda.is_bf16_supported():
        log.info("trainer.precision=auto-mixed: this GPU supports bfloat16, using bf16-mixed")
        return "bf16-mixed"
    log.info("trainer.precision=auto-mixed: no bfloat16 on this GPU, using 16-mixed (float16 + gradient scaler)")
    return "16-mixed"


def to_channels_last(network: nn.Module) -> nn.Module:
    """4-D parameters/buffers to channels_last, 5-D to channels_last_3d, in place."""
    for tensor in [*network.parameters(), *network.buffers()]:
        if tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
        elif tensor.dim() == 5:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last_3d)
    return network


def apply_model_switches(network: nn.Module, compile: bool = False, channels_last: bool = False,
                         accelerator: str | None = None) -> nn.Module:
    """Apply `model.channels_last` / `model.compile` to the built network (in place)."""
    on_gpu = accelerator not in ("cpu",) and torch.cuda.is_available()
    if channels_last:
        if not on_gpu:
            log.warning("model.channels_last=true without a CUDA GPU: the layout changes but CPU convolutions "
                        "gain little; it is meant for GPU tensor cores")
        to_channels_last(network)
    if compile:
        if not on_gpu:
            log.warning("model.compile=true without a CUDA GPU: compiling for CPU (slow first steps, small "
                        "gains); it is meant for GPU training")
        network.compile()
    return network
