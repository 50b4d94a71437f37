"""The Python door to a trained model: images (and person boxes) in, keypoints in image pixels out.

    from posematch import Predictor
    predictor = Predictor.from_run("outputs/train/x")                       # its config, best.pth
    people = predictor.predict("photo.jpg", boxes=[[x, y, w, h], ...])    # or boxes=None: whole image
    people.keypoints  # (N, K, 2) float64 image pixels; people.scores (N, K); people.boxes (N, 4)

The same top-down path as ``posematch-infer`` (which uses this class): every (x, y, w, h) box becomes
a crop at the input aspect ratio padded x1.25 by the evaluation pipeline of the run's data config,
the model runs with the flip test (official 1 px shift), the codec decodes and the exact inverse of
each crop maps the keypoints back. Crops of several images are batched together
(``predict_batch``). ``from_checkpoint`` takes a checkpoint outside a run folder plus the config
groups that describe it (``model=hrnet_w32``, ``data=coco``, any Hydra override).

This module builds objects from saved or composed configs, so it touches Hydra as ``cli`` does; it
sits between ``cli`` and ``engine`` in the layers. A run folder's config is data, not code: only
classes of ``TRUSTED_TARGETS`` are instantiated from it unless ``trust_config``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from posematch.build import build_run
from posematch.data.boxes import box_to_center_scale
from posematch.data.topdown import decode_image
from posematch.draw import draw_pose
from posematch.engine import checkpoint
from posematch.engine.checks import check_geometry
from posematch.inference import decode_to_image, predict_heatmaps
from posematch.types import Codec

# conf/ sits beside the package in the source tree (editable install).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
# What a config read from a run folder may name as ``_target_`` (an explicit list: a module prefix
# such as ``torch.`` would also admit ``torch.load``, ``torch.hub.load``, ``load_inline``):
# posematch's own classes, the config entry points below, torch's optimizers and lr schedulers, and
# albumentations' transforms (the photometric augmentation). Never a function that loads or compiles.
TRUSTED_FUNCTIONS = ("posematch.keypoints.spec",)
TRUSTED_TARGETS = (
    "posematch classes",
    *TRUSTED_FUNCTIONS,
    "torch.optim optimizers and lr schedulers",
    "albumentations transforms",
)


def _resolves_to_trusted_class(target: str) -> bool:
    """Whether ``target`` names a class of the allowed kinds. Only posematch's, torch.optim's and
    albumentations' own modules are ever imported to find out."""
    module_name, _, attr = target.rpartition(".")
    allowed = ("posematch", "torch.optim", "albumentations")
    if not any(module_name == a or module_name.startswith(a + ".") for a in allowed):
        return False
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return False
    if not isinstance(obj, type):
        return False
    if module_name.startswith("posematch"):
        return obj.__module__.startswith("posematch.")
    if module_name.startswith("torch.optim"):
        return issubclass(obj, torch.optim.Optimizer | torch.optim.lr_scheduler.LRScheduler)
    from albumentations.core.composition import BaseCompose
    from albumentations.core.transforms_interface import BasicTransform

    return issubclass(obj, BasicTransform | BaseCompose)


def is_trusted_target(target: object) -> bool:
    """Whether a run folder's config may instantiate ``target`` (see ``TRUSTED_TARGETS``);
    interpolated targets cannot be checked, so they are not."""
    if not isinstance(target, str) or "$" in target:
        return False
    return target in TRUSTED_FUNCTIONS or _resolves_to_trusted_class(target)


def untrusted_targets(node: Any, where: str = "") -> list[str]:
    """``key: target`` of every ``_target_`` in a plain container that ``is_trusted_target``
    refuses."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            name = f"{where}.{key}" if where else str(key)
            if key == "_target_" and not is_trusted_target(value):
                found.append(f"{name}: {value!r}")
            else:
                found.extend(untrusted_targets(value, name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(untrusted_targets(value, f"{where}[{i}]"))
    return found


def saved_config(run_dir: str | Path, trust: bool = False) -> DictConfig:
    """The config a ``posematch-train`` run saved (``run_dir/.hydra/config.yaml``), unresolved.

    Interpolations between groups (sizes and joint count from ``data``) resolve on access; the
    ``${hydra:...}`` ones (run_dir, output_dir) are only valid inside the original run.

    A file beside a checkpoint is data, not code: unless ``trust``, a ``_target_`` outside
    ``TRUSTED_TARGETS`` is refused (instantiating it would run whatever it names), as
    ``torch.load(weights_only=True)`` refuses code in the checkpoint itself.
    """
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saved config; is {run_dir} a posematch-train run?")
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # YAML parser errors: name the file
        raise ValueError(f"{path}: unreadable saved config ({err})") from err
    if not isinstance(loaded, DictConfig):  # Hydra saves the composed config, a mapping
        raise ValueError(
            f"{path}: not a saved config (a YAML mapping), got {type(loaded).__name__}"
        )
    cfg = loaded
    if not trust:
        bad = untrusted_targets(OmegaConf.to_container(cfg, resolve=False))
        if bad:
            raise ValueError(
                f"{path}: refusing to instantiate {', '.join(bad[:5])}: a run folder's config may "
                f"only name {', '.join(TRUSTED_TARGETS)}. If "
                "you wrote this file yourself, pass trust_config=true"
            )
    return cfg


def run_test_time(cfg: DictConfig) -> tuple[bool, bool]:
    """(flip test, 1 px shift of the flipped heatmaps) of a trained run's config: its ``test``
    group (conf/test/); both on where it says nothing. A config of an older version, with
    ``trainer.flip_test`` / ``trainer.shift_heatmap``, is refused by name rather than read with
    another test time."""
    old = [k for k in ("flip_test", "shift_heatmap") if k in (cfg.get("trainer") or {})]
    if old:
        raise ValueError(
            f"trainer.{old[0]}: a run config of an older posematch (the test time is now the "
            "test group: test.flip, test.shift); retrain, or move the setting there"
        )
    test = cfg.get("test") or {}
    return bool(test.get("flip", True)), bool(test.get("shift", True))


def checkpoint_config(path: str | Path, trust: bool = False) -> DictConfig | None:
    """The ``config`` a posematch checkpoint carries (``model``, ``codec``, ``data``; written by
    ``posematch-train``), checked like a run folder's; None when the file has none."""
    if Path(path).suffix == ".safetensors":  # tensors only
        return None
    state = checkpoint.load(path)
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        return None
    config: dict[str, Any] = state["config"]  # a dict, checked above
    cfg = OmegaConf.create(config)
    if not trust:
        bad = untrusted_targets(OmegaConf.to_container(cfg, resolve=False))
        if bad:
            raise ValueError(
                f"{path}: refusing to instantiate {', '.join(bad[:5])} from its config"
            )
    return cfg


def trained_config(checkpoint: str | Path, trust: bool = False) -> tuple[DictConfig | None, str]:
    """What a checkpoint says it is, and from where: its run folder's saved config, else the config
    the file carries; ``(None, "")`` for files that say nothing (official weights)."""
    path = Path(checkpoint)
    if (path.parent / ".hydra" / "config.yaml").is_file():
        return saved_config(path.parent, trust=trust), f"the run folder {path.parent}"
    carried = checkpoint_config(path, trust=trust)
    return (carried, f"the checkpoint {path}") if carried is not None else (None, "")


def composed_config(overrides: Sequence[str] = (), name: str = "infer") -> DictConfig:
    """The project's config ``name`` composed with Hydra ``overrides`` (outside any Hydra run)."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(name, overrides=[*overrides, "checkpoint=unused", "input=unused"])


@dataclass(frozen=True)
class PosePrediction:
    """The people of one image: keypoints (N, K, 2) float64 image pixels, scores (N, K) float32
    keypoint scores, boxes (N, 4) float64 (x, y, w, h) image pixels, box_scores (N,) float64.

    With ``heatmaps=True``: ``heatmaps`` (N, K, h, w) float32, the test-time heatmaps the keypoints
    were decoded from (flip-averaged when the flip test is on), one per person's crop, and
    ``crop_to_image`` (N, 2, 3) float64, the matrices taking input-crop pixels to image pixels
    (heatmap pixel (x, y) is input-crop pixel ``codec.geometry.to_input``). Else both None."""

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray
    heatmaps: np.ndarray | None = None
    crop_to_image: np.ndarray | None = None


class Predictor:
    """A trained model with its codec and crop pipeline, ready for images.

    Args:
        model: images -> heatmaps (eval mode is set).
        codec: decodes heatmaps (``decode``, ``geometry``).
        pipeline: the evaluation crop (``TopDownPipeline(train=False)``).
        flip_perm: joint permutation of the flip test, or None for no flip test.
        shift: the official 1 px shift of the flipped heatmaps.
        device: where the model runs.
        batch_size: crops per forward pass.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        codec: Codec,
        pipeline: Any,
        flip_perm: Sequence[int] | None = None,
        shift: bool = True,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be at least 1")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.codec = codec
        self.pipeline = pipeline
        self.flip_perm = list(flip_perm) if flip_perm is not None else None
        self.shift = shift
        self.batch_size = batch_size
        self.num_keypoints = pipeline.spec.num_keypoints
        geometry = codec.geometry
        pipeline.check_agrees_with(geometry.input_size, geometry.udp)
        check_geometry(self.model, geometry.input_size, geometry.heatmap_size, self.num_keypoints)

    @classmethod
    def from_config(
        cls,
        cfg: DictConfig,
        checkpoint: str | Path,
        device: str | torch.device = "cpu",
        flip: bool = True,
        shift: bool = True,
        batch_size: int = 32,
    ) -> Predictor:
        """From a config holding ``model``, ``codec`` and ``data`` (``spec``, ``val.pipeline``)."""
        run = build_run(cfg, checkpoint, flip=flip, shift=shift)
        return cls(
            run.model,
            run.codec,
            instantiate(cfg.data.val.pipeline, train=False),
            run.test_time.flip_perm,
            run.test_time.shift,
            device,
            batch_size,
        )

    @classmethod
    def from_run(
        cls,
        run: str | Path,
        checkpoint: str | None = None,
        trust_config: bool = False,
        **kwargs: Any,
    ) -> Predictor:
        """From a ``posematch-train`` run folder (or a checkpoint inside one): its saved config and
        ``checkpoint`` (a file name in the folder; default ``best.pth``, else ``last.pth``).
        ``kwargs``: ``device``, ``flip``, ``shift``, ``batch_size``."""
        run = Path(run)
        if run.is_file():
            run, checkpoint = run.parent, run.name
        names = [checkpoint] if checkpoint else ["best.pth", "last.pth"]
        found = [run / n for n in names if (run / n).is_file()]
        if not found:
            raise FileNotFoundError(f"{run}: no {' or '.join(names)} in the run folder")
        return cls.from_config(saved_config(run, trust=trust_config), found[0], **kwargs)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        model: str | None = None,
        data: str = "coco",
        overrides: Sequence[str] = (),
        trust_config: bool = False,
        **kwargs: Any,
    ) -> Predictor:
        """From a checkpoint file alone: a posematch ``best.pth`` / ``last.pth`` carries its model,
        codec and data config. Other files (official HRNet / mmpose weights) need the config groups
        that describe them, e.g. ``model="hrnet_w32"``, ``overrides=["data.input_size=[192,256]",
        "data.heatmap_size=[48,64]"]``; given ``model``, those groups are used in any case."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint={path}: file not found")
        if model is None:
            cfg = checkpoint_config(path, trust=trust_config)
            if cfg is None:
                raise ValueError(
                    f"{path}: carries no config (not written by posematch-train): pass model= "
                    "and data= (and sizes in overrides=) to say what network it holds"
                )
            return cls.from_config(cfg, path, **kwargs)
        cfg = composed_config([f"model={model}", f"data={data}", *overrides])
        return cls.from_config(cfg, path, **kwargs)

    def predict(
        self,
        image: np.ndarray | str | Path,
        boxes: np.ndarray | Sequence[Sequence[float]] | None = None,
        box_scores: np.ndarray | Sequence[float] | None = None,
        heatmaps: bool = False,
    ) -> PosePrediction:
        """The people of one image (``(H, W, 3)`` uint8 BGR as cv2 reads it, or a file path).

        ``boxes``: (N, 4) (x, y, w, h) image pixels; None: the whole image is one box of score 1.
        ``heatmaps``: also return each person's heatmaps and crop matrix (``PosePrediction``).
        """
        return self.predict_batch([image], None if boxes is None else [boxes],
                                  None if box_scores is None else [box_scores],
                                  heatmaps=heatmaps)[0]  # fmt: skip

    def draw(self, image: np.ndarray, people: PosePrediction, vis_thr: float = 0.3) -> np.ndarray:
        """A copy of ``image`` (BGR) with every person of ``people`` drawn as posematch-infer
        draws them: limbs and joints coloured by side, joints scored under ``vis_thr`` left out,
        each person's box and mean keypoint score. Save it with ``cv2.imwrite``."""
        canvas = image.copy()
        for kpts, scores, box in zip(people.keypoints, people.scores, people.boxes, strict=True):
            draw_pose(canvas, kpts, scores, self.pipeline.spec, vis_thr, box=box,
                      label=f"{float(np.mean(scores)):.2f}")  # fmt: skip
        return canvas

    def predict_batch(
        self,
        images: Sequence[np.ndarray | str | Path],
        boxes: Sequence[Any] | None = None,
        box_scores: Sequence[Any] | None = None,
        heatmaps: bool = False,
    ) -> list[PosePrediction]:
        """``predict`` for several images; their crops share forward passes."""
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"boxes: {len(boxes)} lists for {len(images)} images")
        arrays = [decode_image(str(im)) if isinstance(im, str | Path) else im for im in images]
        people = [
            _checked_boxes(
                i,
                image,
                None if boxes is None else boxes[i],
                None if box_scores is None else box_scores[i],
            )
            for i, image in enumerate(arrays)
        ]
        k = self.num_keypoints
        crops, inverses = [], []
        for image, (b, _) in zip(arrays, people, strict=True):
            for box in b:
                center, scale = box_to_center_scale(box, self.pipeline.aspect_ratio)
                crop = self.pipeline(image, np.zeros((k, 2)), np.ones(k), center, scale)
                crops.append(crop.image)
                inverses.append(crop.inverse)
        w, h = self.codec.geometry.heatmap_size
        kpts, scores = np.zeros((0, k, 2)), np.zeros((0, k), np.float32)
        maps = np.zeros((0, k, h, w), np.float32)
        if crops:
            parts = []
            for j in range(0, len(crops), self.batch_size):
                batch = torch.stack(crops[j : j + self.batch_size]).to(self.device)
                inverse = torch.from_numpy(np.stack(inverses[j : j + self.batch_size]))
                hm = predict_heatmaps(self.model, batch, self.flip_perm, self.shift)
                found, found_scores = decode_to_image(hm, inverse, self.codec)
                parts.append((found.cpu(), found_scores.cpu(), hm.cpu() if heatmaps else None))
            kpts = torch.cat([p[0] for p in parts]).numpy()
            scores = torch.cat([p[1] for p in parts]).numpy()
            if heatmaps:
                maps = torch.cat([p[2] for p in parts if p[2] is not None]).numpy()
        matrices = np.array(inverses, np.float64).reshape(-1, 2, 3)
        out, start = [], 0
        for b, s in people:
            n = len(b)
            part = slice(start, start + n)
            extra = (maps[part], matrices[part]) if heatmaps else (None, None)
            out.append(PosePrediction(kpts[part], scores[part], b, s, *extra))
            start += n
        return out


def _checked_boxes(
    i: int, image: np.ndarray, boxes: Any, scores: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Image ``i``'s person boxes (N, 4) (x, y, w, h) and scores (N,): the whole image with score
    1 when ``boxes`` is None, scores 1 when ``scores`` is None; ValueError naming the image."""
    if boxes is None:
        h, w = image.shape[:2]
        b, s = np.array([[0.0, 0.0, w - 1.0, h - 1.0]]), np.ones(1)
    else:
        b = np.asarray(boxes, dtype=np.float64)
        if b.ndim not in (1, 2) or (b.size and b.shape[-1] != 4):
            raise ValueError(
                f"boxes of image {i}: shape {b.shape}; expected (N, 4) rows of (x, y, w, h) in "
                "image pixels"
            )
        b = b.reshape(-1, 4)
        s = np.ones(len(b)) if scores is None else np.asarray(scores, np.float64)
        if s.size != len(b):
            raise ValueError(f"box_scores of image {i}: {s.size} scores for {len(b)} boxes")
    if not np.isfinite(b).all() or (b[:, 2:] <= 0).any():
        raise ValueError(f"boxes of image {i}: need finite (x, y, w, h) with w, h > 0")
    return b, s.reshape(-1)
