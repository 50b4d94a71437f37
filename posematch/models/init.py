"""The official SimpleBaseline / HRNet weight initialisation, shared by backbones and heads.

Convolutions (plain and transposed): weights normal(0, 0.001), biases 0; BatchNorm: weight 1, bias 0.
"""

from __future__ import annotations

from torch import nn


def init_conv_bn_(m: nn.Module) -> bool:
    """Initialise ``m`` in place if it is a convolution or BatchNorm; True when it was one."""
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(m.weight, std=0.001)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
        return True
    if isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
        return True
    return False


def init_official_(module: nn.Module) -> None:
    """``init_conv_bn_`` on every submodule, in module order."""
    for m in module.modules():
        init_conv_bn_(m)
