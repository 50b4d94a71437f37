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
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from posematch.models.stats import count_params, gflops

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
    cfg = OmegaConf.create({"data": {"num_keypoints": 17}})  # the head's ${data.num_keypoints}
    cfg.model = OmegaConf.load(path)
    with torch.device("meta"):
        return instantiate(cfg.model)


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
