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
from dataclasses import dataclass
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
from posematch.cli.help import with_help
from posematch.cli.person_boxes import BoxFile, load_detector, whole_image
from posematch.cli.user_errors import user_errors
from posematch.data.topdown import BadRecordError, decode_image
from posematch.draw import draw_pose
from posematch.evaluation.coco import rescore, results_list, write_results
from posematch.predictor import Predictor, trained_config

log = logging.getLogger("posematch.infer")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
VIS_FORMATS = ("jpg", "png")  # of the drawn images (video frames keep their container)
VIDEO_FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mov": "mp4v", ".mkv": "mp4v"}


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
    if suffix in VIDEO_FOURCC:
        return "video", [path]
    known = ", ".join(e[1:] for e in (*IMAGE_EXTS, *VIDEO_FOURCC))
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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Infer as configured; returns ``{"images", "people", "vis", "keypoints"}`` (counts, paths)."""
    settle_output_dir(cfg)
    test = TestTimeOptions.from_config(cfg.test)
    if not Path(cfg.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint={cfg.checkpoint}: file not found")
    camera = camera_index(cfg.input)
    kind, paths = ("camera", []) if camera is not None else find_input(cfg.input)
    # The name of a video stream's results and drawing: the video file's, or camera<index>.mp4.
    stream = paths[0].name if kind == "video" else f"camera{camera}.mp4"
    max_frames = cfg.get("max_frames")
    if max_frames is not None and (not str(max_frames).isdecimal() or int(max_frames) < 1):
        raise ValueError(f"max_frames={max_frames}: expected a positive number of frames or null")
    vis_format = cfg.get("vis_format", "jpg")
    if vis_format not in VIS_FORMATS:
        raise ValueError(f"vis_format={vis_format!r}: expected {' or '.join(VIS_FORMATS)}")
    local = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = resolve_device(cfg.device, local)
    box_file = BoxFile(cfg.boxes, cfg.det_score_thr) if cfg.boxes else None
    detector = None if box_file is not None else load_detector(cfg, device)
    if box_file is None and detector is None:
        whole = "each image is one person box covering the whole image"
        if cfg.detector == "none":
            log.info("detector=none and no boxes= file: %s", whole)
        else:
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            log.warning("no boxes= file and no detector weights in %s: %s", cache, whole)

    source = model_config(cfg)
    predictor = Predictor.from_config(
        source, cfg.checkpoint, device, test.flip, test.shift, test.batch_size
    )
    spec = predictor.pipeline.spec

    def make_frame(image: np.ndarray, image_id: int, file_name: str, number: int | None) -> Frame:
        if box_file is not None:
            boxes, scores = box_file.lookup(file_name, number)
        elif detector is not None:
            boxes, scores = detector(image)
        else:
            boxes, scores = whole_image(image)
        shown = box_file is not None or detector is not None
        return Frame(image, image_id, file_name, boxes, scores, shown)

    bad_inputs: list[str] = []

    def image_frames() -> Iterator[Frame]:
        for path, image_id in zip(paths, image_ids(paths), strict=True):
            number = int(path.stem) if path.stem.isdecimal() else None
            try:
                image = read_image(path)
            except BadRecordError as err:
                if len(paths) == 1:
                    raise
                log.warning("skipping %s", err)  # one bad file must not cost the others
                bad_inputs.append(str(err))
                continue
            yield make_frame(image, image_id, path.name, number)

    stop: list[int] = []  # a camera stops at Ctrl-C: the frames before it are kept

    def video_frames(capture: cv2.VideoCapture) -> Iterator[Frame]:
        index = 0
        while not stop and (max_frames is None or index < int(max_frames)):
            ok, image = capture.read()
            if not ok:
                return
            yield make_frame(image, index, stream, index)
            index += 1

    out_dir = Path(cfg.output_dir)
    vis_dir = out_dir / "vis"
    vis_dir.mkdir(parents=True, exist_ok=True)
    capture = writer = None
    previous_sigint = None
    if kind == "video":
        capture = cv2.VideoCapture(str(paths[0]))
        if not capture.isOpened():
            raise OSError(f"input={paths[0]}: cannot open the video")
        frames: Iterable[Frame] = video_frames(capture)
    elif kind == "camera":
        assert camera is not None  # the kind is "camera" when input= names one
        capture = cv2.VideoCapture(camera)
        if not capture.isOpened():
            raise OSError(f"input={camera}: cannot open camera {camera}")
        previous_sigint = signal.signal(signal.SIGINT, lambda signum, frame: stop.append(signum))
        log.info("camera %d: Ctrl-C ends the capture and writes the results", camera)
        frames = video_frames(capture)
    else:
        frames = image_frames()

    stems = [p.stem for p in paths]
    results: list[dict[str, Any]] = []
    n_images = n_people = 0
    vis_path = vis_dir
    # Results as they come, one JSON line per person, so a crash or a kill keeps what was done;
    # keypoints.json (the COCO results list) is written at the end.
    partial = open(out_dir / "keypoints.partial.jsonl", "w")
    try:
        predictions = predict_frames(frames, predictor)
        for frame, kpts, kpt_scores in predictions:
            n_images += 1
            n_people += len(kpts)
            scores = rescore(frame.box_scores, kpt_scores, 0.2)
            entries = results_list(np.full(len(kpts), frame.image_id), kpts, kpt_scores, scores)
            entries = [{**e, "file_name": frame.file_name} for e in entries]
            results += entries
            partial.writelines(json.dumps(e) + "\n" for e in entries)
            partial.flush()
            canvas = frame.image
            for i in range(len(kpts)):
                box = frame.boxes[i] if frame.show_boxes else None
                draw_pose(canvas, kpts[i], kpt_scores[i], spec, cfg.vis_thr, box=box,
                          label=f"{scores[i]:.2f}")  # fmt: skip
            if kind in ("video", "camera"):
                if writer is None:
                    assert capture is not None  # opened above for a video or a camera
                    vis_path = vis_dir / stream
                    writer = open_writer(vis_path, capture, canvas.shape)
                writer.write(canvas)
            else:
                target = vis_dir / vis_name(frame.file_name, stems, vis_format)
                if not cv2.imwrite(str(target), canvas):
                    raise OSError(f"{target}: cannot write the image")
    finally:
        partial.close()
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)
        if capture is not None:
            capture.release()
        if writer is not None:
            writer.release()
    if kind in ("video", "camera") and n_images == 0:
        raise OSError(f"input={cfg.input}: no frame could be read from the {kind}")
    if box_file is not None and box_file.used == 0:
        log.warning(
            "boxes=%s: no detection matched an input image (by file_name, or image_id = numeric "
            "file stem / frame index)",
            cfg.boxes,
        )
    json_path = out_dir / "keypoints.json"
    write_results(results, str(json_path))
    (out_dir / "keypoints.partial.jsonl").unlink()
    bad_path = out_dir / "bad_inputs.txt"
    if bad_inputs:
        bad_path.write_text("".join(line + "\n" for line in bad_inputs))
        log.warning("%d unreadable inputs skipped, listed in %s", len(bad_inputs), bad_path)
    elif bad_path.exists():
        bad_path.unlink()  # from an earlier run into this folder
    what = _count(n_images, "image" if kind == "images" else "frame")
    what += (
        f" of {paths[0].name}"
        if kind == "video"
        else f" of camera {camera}"
        if camera is not None
        else ""
    )
    people = _count(n_people, "person", "people")
    skipped = f"; {len(bad_inputs)} unreadable skipped ({bad_path})" if bad_inputs else ""
    print(
        f"posematch-infer: {what}, {people}; drawings in {vis_path}, keypoints in {json_path}"
        + skipped
    )
    return {
        "images": n_images,
        "people": n_people,
        "vis": vis_path,
        "keypoints": json_path,
        "skipped": bad_inputs,
    }


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def vis_name(file_name: str, stems: list[str], ext: str = "jpg") -> str:
    """``<stem>.<ext>``; ``<file name>.<ext>`` when two inputs share the stem (a.jpg, a.png)."""
    stem = Path(file_name).stem
    return f"{file_name if stems.count(stem) > 1 else stem}.{ext}"


def open_writer(path: Path, capture: cv2.VideoCapture, shape: tuple[int, ...]) -> cv2.VideoWriter:
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
