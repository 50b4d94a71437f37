"""Parameter counts and GFLOPs of every ``conf/model/*.yaml`` beside the published numbers.

GFLOPs are counted as the official HRNet code does (``get_model_summary`` in
``deep-high-resolution-net.pytorch/lib/utils/utils.py``), which produced the numbers of the HRNet
README and the SimpleBaseline tables:
- only convolution and linear layers, multiply-accumulates (GFLOPs = GMACs);
- a conv (transposed ones included) costs ``weight.numel() * output pixels``: for a stride-2
  transposed conv that is 4x its true MACs, kept here because the published numbers include it;
- a linear layer costs ``output.numel() * in_features``;
- G = 2**30, batch 1.
``--true-macs`` counts transposed convs by their input pixels (their actual MACs) and uses G = 1e9.
The forward runs on the meta device: shapes only, no memory, no arithmetic.

    .venv/bin/python scripts/model_stats.py [--true-macs] [conf/model/x.yaml ...]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
SIZES = ((256, 192), (384, 288))  # (height, width) of the input crops

# Published (params in M, GFLOPs at 256x192, GFLOPs at 384x288); None where not published.
# HRNet README (SimpleBaseline, HRNet) and the HRFormer paper (Yuan et al., NeurIPS 2021).
PUBLISHED: dict[str, tuple[float | None, float | None, float | None]] = {
    "simplebaseline_r50": (34.0, 8.9, 20.0),
    "simplebaseline_r101": (53.0, 12.4, 27.9),
    "simplebaseline_r152": (68.6, 15.7, 35.3),
    "hrnet_w32": (28.5, 7.1, 16.0),
    "hrnet_w48": (63.6, 14.6, 32.9),
    # HRFormer GFLOPs are left out: the paper's counter is not the official HRNet one.
    "hrformer_small": (7.8, None, None),
    "hrformer_base": (43.2, None, None),
}


def build_on_meta(path: Path) -> nn.Module:
    """Instantiate a model yaml on the meta device (no memory, no weight initialisation cost)."""
    with torch.device("meta"):
        return instantiate(OmegaConf.load(path))


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
        else:
            total += module.weight.numel() * math.prod(output.shape[2:])

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


def _cell(value: float, published: float | None) -> str:
    if published is None:
        return f"{value:7.2f} {'-':>6} {'-':>6}"
    return f"{value:7.2f} {published:6.1f} {value / published:6.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="*", type=Path, help="model yamls (default: all)")
    parser.add_argument("--true-macs", action="store_true", help="true MACs of transposed convs")
    args = parser.parse_args()
    paths = args.configs or sorted(CONF.glob("*.yaml"))
    unit = "GMACs (1e9, true)" if args.true_macs else "GFLOPs (official counter)"
    sizes = "   ".join(f"{h}x{w}: ours    pub  ratio" for h, w in SIZES)
    print(f"columns: params (M) ours / published / ratio, then {unit} per input size")
    print(f"{'model':<22} {'params':>7} {'pub':>6} {'ratio':>6}   {sizes}")
    for path in paths:
        model = build_on_meta(path)
        pub = PUBLISHED.get(path.stem, (None, None, None))
        cells = [_cell(count_params(model) / 1e6, pub[0])]
        for (h, w), published in zip(SIZES, pub[1:], strict=True):
            cells.append(_cell(gflops(model, h, w, args.true_macs), published))
        print(f"{path.stem:<22} " + "   ".join(cells))


if __name__ == "__main__":
    main()
