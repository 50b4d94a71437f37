"""The input side of ``posematch-infer``: what ``input=`` names (an image, a folder, a video or a
camera), its frames, and each frame's person boxes (a ``boxes=`` file, the detector, or the whole
image)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import torch
from omegaconf import DictConfig

from posematch.cli.person_boxes import BoxFile, load_detector, whole_image
from posematch.data.topdown import BadRecordError, decode_image

log = logging.getLogger("posematch.infer")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv")


@dataclass
class Frame:
    """One image (or video frame) and its person boxes."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    image_id: int
    file_name: str
    boxes: np.ndarray  # (N, 4) x, y, w, h in image pixels
    box_scores: np.ndarray  # (N,)
    show_boxes: bool  # draw the boxes (detections), not the whole-image default


# ---------------------------------------------------------------------------- inputs


def find_input(path: str | Path) -> tuple[str, list[Path]]:
    """``("images", sorted image paths)`` or ``("video", [path])``; errors name the path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input={path}: no such file or folder")
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        if not images:
            exts = "/".join(e[1:] for e in IMAGE_EXTS)
            raise FileNotFoundError(f"input={path}: folder holds no image ({exts})")
        return "images", images
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTS:
        return "images", [path]
    if suffix in VIDEO_EXTS:
        return "video", [path]
    known = ", ".join(e[1:] for e in (*IMAGE_EXTS, *VIDEO_EXTS))
    raise ValueError(f"input={path}: unknown extension {path.suffix!r} (expected {known})")


def camera_index(value: object) -> int | None:
    """The camera index when ``input=`` names one (``0``, ``"1"``) and no such file exists."""
    text = str(value).strip()
    if text.isdecimal() and not Path(text).exists():
        return int(text)
    return None


def image_ids(paths: list[Path]) -> list[int]:
    """int(stem) for every image when all stems are distinct numbers, else positions 0..N-1."""
    stems = [p.stem for p in paths]
    if all(s.isdecimal() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(len(paths)))


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 BGR; BadRecordError naming the file when missing, truncated or corrupt."""
    return decode_image(str(path))


# ---------------------------------------------------------------------------- prediction


@dataclass(frozen=True)
class Source:
    """What ``input=`` names: ``kind`` ``images`` (``paths``, sorted), ``video`` (one path) or
    ``camera`` (``camera`` index); ``stream``: a video's or camera's drawing and results name."""

    kind: str
    paths: list[Path]
    camera: int | None
    max_frames: int | None

    @property
    def stream(self) -> str:
        return self.paths[0].name if self.kind == "video" else f"camera{self.camera}.mp4"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Source:
        camera = camera_index(cfg.input)
        kind, paths = ("camera", []) if camera is not None else find_input(cfg.input)
        max_frames = cfg.get("max_frames")
        if max_frames is not None and (not str(max_frames).isdecimal() or int(max_frames) < 1):
            raise ValueError(
                f"max_frames={max_frames}: expected a positive number of frames or null"
            )
        return cls(kind, paths, camera, None if max_frames is None else int(max_frames))


BoxSource = Callable[[np.ndarray, str, int | None], tuple[np.ndarray, np.ndarray, bool]]


def box_source(cfg: DictConfig, device: torch.device) -> tuple[BoxSource, BoxFile | None]:
    """Where each frame's person boxes come from (``boxes=`` file, detector, whole image), as a
    function (image, file name, number) -> (boxes, scores, drawn); and the box file, if any. One
    message says when it is the whole image."""
    box_file = BoxFile(cfg.boxes, cfg.det_score_thr) if cfg.boxes else None
    detector = None if box_file is not None else load_detector(cfg, device)
    if box_file is None and detector is None:
        whole = "each image is one person box covering the whole image"
        if cfg.detector == "none":
            log.info("detector=none and no boxes= file: %s", whole)
        else:
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            log.warning("no boxes= file and no detector weights in %s: %s", cache, whole)

    def boxes(image: np.ndarray, file_name: str, number: int | None) -> tuple:
        if box_file is not None:
            return (*box_file.lookup(file_name, number), True)
        if detector is not None:
            return (*detector(image), True)
        return (*whole_image(image), False)

    return boxes, box_file


@dataclass
class Reader:
    """The frames of a ``Source`` with their boxes; unreadable images of a folder are skipped
    into ``bad``; a camera stops at Ctrl-C (``stop``), keeping the frames before it."""

    source: Source
    boxes: BoxSource
    bad: list[str] = field(default_factory=list)
    stop: list[int] = field(default_factory=list)
    capture: cv2.VideoCapture | None = None

    def frame(self, image: np.ndarray, image_id: int, name: str, number: int | None) -> Frame:
        boxes, scores, drawn = self.boxes(image, name, number)
        return Frame(image, image_id, name, boxes, scores, drawn)

    def images(self) -> Iterator[Frame]:
        paths = self.source.paths
        for path, image_id in zip(paths, image_ids(paths), strict=True):
            number = int(path.stem) if path.stem.isdecimal() else None
            try:
                image = read_image(path)
            except BadRecordError as err:
                if len(paths) == 1:
                    raise
                log.warning("skipping %s", err)  # one bad file must not cost the others
                self.bad.append(str(err))
                continue
            yield self.frame(image, image_id, path.name, number)

    def open(self) -> Iterable[Frame]:
        """The frames; opens the video or camera (``close`` releases it)."""
        source = self.source
        if source.kind == "images":
            return self.images()
        if source.kind == "video":
            self.capture = cv2.VideoCapture(str(source.paths[0]))
            where: object = source.paths[0]
            what = "the video"
        else:
            self.capture = cv2.VideoCapture(int(cast(int, source.camera)))
            where, what = source.camera, f"camera {source.camera}"
        if not self.capture.isOpened():
            raise OSError(f"input={where}: cannot open {what}")
        return self.video()

    def video(self) -> Iterator[Frame]:
        assert self.capture is not None  # opened by open()
        index = 0
        limit = self.source.max_frames
        while not self.stop and (limit is None or index < limit):
            ok, image = self.capture.read()
            if not ok:
                return
            yield self.frame(image, index, self.source.stream, index)
            index += 1

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
