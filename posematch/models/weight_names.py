"""Foreign weight names -> posematch's: the official HRFormer code's attention and FFN names, and
``efficientnet_pytorch``'s flat block names (timm's nested ones). Pure renames and one exact
fusion (q, k, v -> qkv); no arithmetic."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

# The official HRFormer code builds its window attention on torch's MultiheadAttention layout
# (separate q/k/v projections, ``out_proj``) and calls its FFN ``mlp``; mmpose and posematch use one
# ``qkv`` Linear whose output rows are q, then k, then v (the order SDPA unpacks), ``proj`` and
# ``ffn``. The fusion is exact: the same weights in the same rows, no arithmetic.
_HRFORMER_PROJ = re.compile(
    r"^(?P<attn>.*\.attn\.attn)\.(?P<which>[qkv]|out)_proj\.(?P<kind>weight|bias)$"
)
_HRFORMER_MLP = re.compile(r"^(?P<block>(?:.*\.)?branches\.\d+\.\d+)\.mlp\.")


def convert_hrformer_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official HRFormer names -> mmpose / posematch names; other keys unchanged.

    ``P.attn.attn.{q,k,v}_proj.{weight,bias}`` -> ``P.attn.attn.qkv.*`` (concatenated along the
    output dimension, q rows first); ``P.attn.attn.out_proj.*`` -> ``P.attn.attn.proj.*``;
    ``...branches.i.j.mlp.*`` -> ``...branches.i.j.ffn.*``. A block with some but not all of its
    q/k/v projections is a KeyError naming the missing key.
    """
    if not any(_HRFORMER_PROJ.match(k) for k in state):
        return dict(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _HRFORMER_PROJ.match(key)
        if match is None:
            block = _HRFORMER_MLP.match(key)
            out[f"{block['block']}.ffn.{key[block.end() :]}" if block else key] = value
            continue
        attn, which, kind = match["attn"], match["which"], match["kind"]
        if which == "out":
            out[f"{attn}.proj.{kind}"] = value
        elif which == "q":
            parts = []
            for name in (f"{attn}.{p}_proj.{kind}" for p in "qkv"):
                if name not in state:
                    raise KeyError(f"official HRFormer key {name} missing beside {key}")
                parts.append(state[name])
            out[f"{attn}.qkv.{kind}"] = torch.cat(parts, dim=0)
        elif f"{attn}.q_proj.{kind}" not in state:
            raise KeyError(f"official HRFormer key {attn}.q_proj.{kind} missing beside {key}")
    return out


# efficientnet_pytorch names, per block kind, -> timm's. A block without an expansion conv is timm's
# DepthwiseSeparableConv (dw, bn1, pw, bn2), one with it an InvertedResidual (pw, bn1, dw, bn2, pwl,
# bn3); the stem, head and classifier have fixed names.
_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_EFFNET_TOP["_fc"] = "classifier"
_EFFNET_DS = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_EFFNET_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_EFFNET_BLOCK = re.compile(r"^_blocks\.(?P<n>\d+)\.(?P<module>_[a-z0-9_]+)\.(?P<rest>.+)$")


def convert_efficientnet_pytorch(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``efficientnet_pytorch`` names -> timm's ``efficientnet`` names; other files unchanged.

    The file numbers its blocks flat (``_blocks.0`` ... ``_blocks.15``); timm nests them by stage
    (``blocks.<stage>.<index>``). A new stage starts where a block's output channels (its project
    conv's rows) differ from the previous block's: consecutive EfficientNet stages never share a
    width (B0-B7, Lite0-4), and blocks within a stage always do. An unknown sub-module name is a
    KeyError naming the key.
    """
    if not any(k.startswith("_blocks.") for k in state):
        return dict(state)
    blocks: dict[int, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _EFFNET_BLOCK.match(key)
        if match:
            blocks.setdefault(int(match["n"]), {})[f"{match['module']}.{match['rest']}"] = value
            continue
        top, _, rest = key.partition(".")
        if top not in _EFFNET_TOP:
            raise KeyError(f"efficientnet_pytorch key {key!r}: unknown module {top!r}")
        out[f"{_EFFNET_TOP[top]}.{rest}"] = value
    stage, index, width = -1, 0, None
    for n in sorted(blocks):
        block = blocks[n]
        project = block.get("_project_conv.weight")
        if project is None:
            raise KeyError(f"efficientnet_pytorch block _blocks.{n}: no _project_conv.weight")
        if project.shape[0] != width:
            stage, index, width = stage + 1, 0, project.shape[0]
        names = _EFFNET_IR if "_expand_conv.weight" in block else _EFFNET_DS
        for key, value in block.items():
            module, _, rest = key.partition(".")
            if module not in names:
                raise KeyError(f"efficientnet_pytorch key _blocks.{n}.{key}: unknown module")
            out[f"blocks.{stage}.{index}.{names[module]}.{rest}"] = value
        index += 1
    return out
