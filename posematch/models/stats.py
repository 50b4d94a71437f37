"""Parameter and GFLOP counts of a model, as the official HRNet code counts them.

GFLOPs follow ``get_model_summary`` in ``deep-high-resolution-net.pytorch/lib/utils/utils.py``, which
produced the numbers of the HRNet README and the SimpleBaseline tables:
- only convolution and linear layers, multiply-accumulates (GFLOPs = GMACs);
- a conv (transposed ones included) costs ``weight.numel() * output pixels``: for a stride-2
  transposed conv that is 4x its true MACs, kept because the published numbers include it;
- a linear layer costs ``output.numel() * in_features``;
- G = 2**30, batch 1.
``true_macs=True`` counts transposed convs by their input pixels (their actual MACs), G = 1e9.
A model built on the meta device is counted without memory or arithmetic.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of parameters (BN running statistics excluded, as the published counts)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int, width: int, true_macs: bool = False) -> int:
    """Multiply-accumulates of the conv and linear layers for one (1, 3, height, width) image.

    Official convention by default (see module docstring); ``true_macs`` counts transposed convs by
    their input pixels. Runs the forward on the device of the model's parameters.
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        elif true_macs and isinstance(module, nn.ConvTranspose2d | nn.ConvTranspose1d):
            total += module.weight.numel() * math.prod(inputs[0].shape[2:])
        else:  # a conv of `convs`: its weight is a parameter, not a submodule
            total += cast(torch.Tensor, module.weight).numel() * math.prod(output.shape[2:])

    convs = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, convs)]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, height, width, device=device))
    finally:
        for h in handles:
            h.remove()
    return total


def gflops(model: nn.Module, height: int, width: int, true_macs: bool = False) -> float:
    """GFLOPs (= GMACs) as published: G = 2**30 (official counter), or 1e9 with ``true_macs``."""
    return count_macs(model, height, width, true_macs) / (1e9 if true_macs else 2**30)
