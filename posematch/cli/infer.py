"""``posematch-infer``: poses on new images, a folder of images or a video.

    posematch-infer checkpoint=outputs/train/x/best.pth input=photo.jpg [boxes=detections.json]

Top-down, as the official SimpleBaseline / HRNet test: every person box becomes a crop at the input
aspect ratio padded x1.25 (the evaluation pipeline of the data config), the model runs with the flip
test (``test.flip``, ``test.shift``), the codec decodes and ``posematch.inference`` maps the keypoints
back to image pixels with the exact inverse of the crop.

- Model, codec and joints: from ``.hydra/config.yaml`` when the checkpoint sits in a
  ``posematch-train`` run directory, else from the composed config (``model=``, ``data=``, ...).
- Input: one image, a folder of images (jpg/jpeg/png/bmp, sorted by name, not recursive), a video
  (mp4/avi/mov/mkv) or a camera by its index (``input=0``: the first webcam; ``max_frames=`` stops
  it, else it runs until the camera stops or Ctrl-C, which ends the capture and writes what was
  done). Image ids: the file stem as a number when every stem is one (COCO names such as
  ``000000000785.jpg`` -> 785), else the 0-based position in the sorted list; video and camera
  frames: the frame index.
- Person boxes, first that applies: ``boxes=`` a COCO detection results file (person category 1,
  ``score >= det_score_thr``, empty boxes dropped; a detection with a ``file_name`` key goes to the
  image of that file name, else to the image whose numeric stem equals its ``image_id``, or to
  that frame of a video) or a COCO annotation file (its person boxes, score 1, by file name);
  a torchvision Faster R-CNN R50-FPN from local weights (``detector``, ``detector_weights``; never
  downloaded); else the whole image as one box of score 1.
- Output: ``output_dir/vis/<stem>.jpg`` (``.png`` with ``vis_format=png``; or ``vis/<video name>``, same container; a camera:
  ``vis/camera<index>.mp4``) with the skeletons, the person boxes and each person's score,
  and ``output_dir/keypoints.json`` in the COCO keypoint results format
  ``[{image_id, category_id: 1, keypoints: [x, y, score] * K, score, file_name}]`` (image pixels);
  the instance score is the box score x the mean of the keypoint scores above 0.2 (official
  rescoring, 0 when none passes). No OKS-NMS: one result per box. While it runs, every result is
  also appended to ``keypoints.partial.jsonl`` (removed at the end), so an interrupted run keeps
  what it did; an unreadable or truncated image in a folder is skipped, listed in
  ``bad_inputs.txt`` and reported, never the reason the other images are lost.
"""

from __future__ import annotations

import copy
import json
import logging
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from posematch.cli.common import (
    CONFIG_PATH,
    TestTimeOptions,
    flag,
    resolve_device,
    settle_output_dir,
)
from posematch.cli.frames import Frame, Reader, Source, box_source
from posematch.cli.help import with_help
from posematch.cli.user_errors import user_errors
from posematch.draw import draw_pose
from posematch.evaluation.coco import rescore, results_list, write_results
from posematch.predictor import Predictor, trained_config

log = logging.getLogger("posematch.infer")

VIS_FORMATS = ("jpg", "png")  # of the drawn images (video frames keep their container)
VIDEO_FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mov": "mp4v", ".mkv": "mp4v"}


def predict_frames(
    frames: Iterable[Frame], predictor: Predictor
) -> Iterator[tuple[Frame, np.ndarray, np.ndarray]]:
    """Frames with their people's keypoints (N, K, 2) image px and scores (N, K), in input order.

    Crops of consecutive frames share forward passes (``predictor.batch_size`` crops each).
    """
    pending: list[Frame] = []

    def flush() -> Iterator[tuple[Frame, np.ndarray, np.ndarray]]:
        people = predictor.predict_batch(
            [f.image for f in pending], [f.boxes for f in pending], [f.box_scores for f in pending]
        )
        for frame, found in zip(pending, people, strict=True):
            yield frame, found.keypoints, found.scores
        pending.clear()

    crops = 0
    for frame in frames:
        pending.append(frame)
        crops += len(frame.boxes)
        if crops >= predictor.batch_size:
            yield from flush()
            crops = 0
    if pending:
        yield from flush()


def model_config(cfg: DictConfig) -> DictConfig:
    """The config the model / codec / joints come from: the training run's, else the one the
    checkpoint carries (posematch-train writes it), else ``cfg``."""
    trained, where = trained_config(cfg.checkpoint, trust=flag(cfg, "trust_config"))
    if trained is not None:
        log.info("model, codec and data config from %s", where)
    return copy.deepcopy(trained if trained is not None else cfg)


@dataclass
class Writer:
    """The outputs as they come: the drawings (one image per input, or one video) and one JSON
    line per person in ``keypoints.partial.jsonl``, so a crash or a kill keeps what was done."""

    out_dir: Path
    source: Source
    spec: Any
    vis_thr: float
    vis_format: str
    results: list[dict[str, Any]] = field(default_factory=list)
    images: int = 0
    people: int = 0
    video: cv2.VideoWriter | None = None

    def __post_init__(self) -> None:
        self.vis_dir = self.out_dir / "vis"
        self.vis_dir.mkdir(parents=True, exist_ok=True)
        self.vis_path = self.vis_dir
        self.partial = open(self.out_dir / "keypoints.partial.jsonl", "w")
        self.stems = [p.stem for p in self.source.paths]

    def add(self, frame: Frame, kpts: np.ndarray, kpt_scores: np.ndarray, fps_from: Any) -> None:
        self.images += 1
        self.people += len(kpts)
        scores = rescore(frame.box_scores, kpt_scores, 0.2)
        entries = results_list(np.full(len(kpts), frame.image_id), kpts, kpt_scores, scores)
        entries = [{**e, "file_name": frame.file_name} for e in entries]
        self.results += entries
        self.partial.writelines(json.dumps(e) + "\n" for e in entries)
        self.partial.flush()
        canvas = frame.image
        for i in range(len(kpts)):
            box = frame.boxes[i] if frame.show_boxes else None
            draw_pose(canvas, kpts[i], kpt_scores[i], self.spec, self.vis_thr, box=box,
                      label=f"{scores[i]:.2f}")  # fmt: skip
        if self.source.kind in ("video", "camera"):
            if self.video is None:
                self.vis_path = self.vis_dir / self.source.stream
                self.video = open_writer(self.vis_path, fps_from, canvas.shape)
            self.video.write(canvas)
        else:
            target = self.vis_dir / vis_name(frame.file_name, self.stems, self.vis_format)
            if not cv2.imwrite(str(target), canvas):
                raise OSError(f"{target}: cannot write the image")

    def close(self) -> None:
        self.partial.close()
        if self.video is not None:
            self.video.release()

    def finish(self, bad: list[str]) -> tuple[Path, Path]:
        """``keypoints.json`` (the COCO results list) and ``bad_inputs.txt``; the partial file
        removed. Returns both paths."""
        json_path = self.out_dir / "keypoints.json"
        write_results(self.results, str(json_path))
        (self.out_dir / "keypoints.partial.jsonl").unlink()
        bad_path = self.out_dir / "bad_inputs.txt"
        if bad:
            bad_path.write_text("".join(line + "\n" for line in bad))
            log.warning("%d unreadable inputs skipped, listed in %s", len(bad), bad_path)
        elif bad_path.exists():
            bad_path.unlink()  # from an earlier run into this folder
        return json_path, bad_path


def run(cfg: DictConfig) -> dict[str, Any]:
    """Infer as configured; returns ``{"images", "people", "vis", "keypoints", "skipped"}``."""
    settle_output_dir(cfg)
    test = TestTimeOptions.from_config(cfg.test)
    if not Path(cfg.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint={cfg.checkpoint}: file not found")
    source = Source.from_config(cfg)
    vis_format = cfg.get("vis_format", "jpg")
    if vis_format not in VIS_FORMATS:
        raise ValueError(f"vis_format={vis_format!r}: expected {' or '.join(VIS_FORMATS)}")
    local = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = resolve_device(cfg.device, local)
    boxes, box_file = box_source(cfg, device)
    predictor = Predictor.from_config(
        model_config(cfg), cfg.checkpoint, device, test.flip, test.shift, test.batch_size
    )
    reader = Reader(source, boxes)
    previous_sigint = None
    try:
        frames = reader.open()  # before anything is written: an unopenable input leaves nothing
        if source.kind == "camera":
            previous_sigint = signal.signal(signal.SIGINT, lambda s, f: reader.stop.append(s))
            log.info("camera %d: Ctrl-C ends the capture and writes the results", source.camera)
        writer = Writer(
            Path(cfg.output_dir), source, predictor.pipeline.spec, cfg.vis_thr, vis_format
        )
        try:
            for frame, kpts, kpt_scores in predict_frames(frames, predictor):
                writer.add(frame, kpts, kpt_scores, reader.capture)
        finally:
            writer.close()
    finally:
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)
        reader.close()
    if source.kind in ("video", "camera") and writer.images == 0:
        raise OSError(f"input={cfg.input}: no frame could be read from the {source.kind}")
    if box_file is not None and box_file.used == 0:
        log.warning(
            "boxes=%s: no detection matched an input image (by file_name, or image_id = numeric "
            "file stem / frame index)",
            cfg.boxes,
        )
    json_path, bad_path = writer.finish(reader.bad)
    print(summary(source, writer, json_path, reader.bad, bad_path))
    return {
        "images": writer.images,
        "people": writer.people,
        "vis": writer.vis_path,
        "keypoints": json_path,
        "skipped": reader.bad,
    }


def summary(source: Source, writer: Writer, json_path: Path, bad: list[str], bad_path: Path) -> str:
    """The one line the command ends with: what was read, found and written."""
    what = _count(writer.images, "image" if source.kind == "images" else "frame")
    if source.kind == "video":
        what += f" of {source.paths[0].name}"
    elif source.kind == "camera":
        what += f" of camera {source.camera}"
    people = _count(writer.people, "person", "people")
    skipped = f"; {len(bad)} unreadable skipped ({bad_path})" if bad else ""
    return (
        f"posematch-infer: {what}, {people}; drawings in {writer.vis_path}, keypoints in "
        f"{json_path}{skipped}"
    )


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def vis_name(file_name: str, stems: list[str], ext: str = "jpg") -> str:
    """``<stem>.<ext>``; ``<file name>.<ext>`` when two inputs share the stem (a.jpg, a.png)."""
    stem = Path(file_name).stem
    return f"{file_name if stems.count(stem) > 1 else stem}.{ext}"


def open_writer(path: Path, capture: Any, shape: tuple[int, ...]) -> cv2.VideoWriter:
    """A video writer at the input's frame rate (25 when unknown), codec by container."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps > 0 else 25.0  # also when NaN
    fourcc = cv2.VideoWriter.fourcc(*VIDEO_FOURCC[path.suffix.lower()])
    writer = cv2.VideoWriter(str(path), fourcc, fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise OSError(f"{path}: cannot open a video writer ({VIDEO_FOURCC[path.suffix.lower()]})")
    return writer


@with_help("infer")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="infer")
def main(cfg: DictConfig) -> None:
    with user_errors("posematch-infer"):
        run(cfg)


if __name__ == "__main__":
    main()
