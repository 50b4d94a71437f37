"""The synthetic dataset on disk: images as JPEG and COCO keypoint annotation files, one
independent draw per split, in worker processes (byte-identical for a seed)."""

from __future__ import annotations

import json
import os
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2

from posematch.keypoints import COCO as COCO_SPEC
from posematch.synthetic.figures import DEFAULT_CONFIG, SPLITS, Person, SyntheticConfig
from posematch.synthetic.scene import synthesize

# ---------------------------------------------------------------------------------------------------
# Dataset files


def _annotation(person: Person, ann_id: int, image_id: int) -> dict[str, Any]:
    """COCO keypoint annotation of a person (outside joints written as 0, 0, 0)."""
    flat: list[float | int] = []
    for (x, y), v in zip(person.keypoints.tolist(), person.visible.tolist(), strict=True):
        flat += [round(x, 2), round(y, 2), v] if v > 0 else [0, 0, 0]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": list(person.bbox),
        "area": person.area,
        "iscrowd": 0,
        "keypoints": flat,
        "num_keypoints": int((person.visible > 0).sum()),
        "segmentation": [],
    }


Job = tuple[int, str, int, str, SyntheticConfig]  # seed, split, index, image path, config


def _write_image(args: Job) -> tuple[int, int, list[Person]]:
    """Worker: synthesize one image, write it as JPEG; return (width, height, people)."""
    seed, split, index, path, cfg = args
    image, people = synthesize(seed, split, index, cfg)
    if not cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]):
        raise OSError(f"cannot write image {path}")
    return image.shape[1], image.shape[0], people


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; cv2's own threads would oversubscribe


def _categories() -> list[dict[str, Any]]:
    """The COCO person category with its 17 keypoint names and 1-based skeleton."""
    return [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(COCO_SPEC.names),
            "skeleton": [[a + 1, b + 1] for a, b in COCO_SPEC.skeleton],
        }
    ]


def _run_jobs(jobs: list[Job], workers: int) -> list[tuple[int, int, list[Person]]]:
    """``_write_image`` over the jobs, in order, in ``workers`` processes (1: in this process)."""
    if workers <= 1 or len(jobs) <= 1:
        return [_write_image(job) for job in jobs]
    # spawn, not fork: a forked child can inherit cv2's thread pool mid-lock and hang.
    with get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        return pool.map(_write_image, jobs, chunksize=max(1, len(jobs) // (8 * workers)))


def _write_annotations(
    out: Path, split: str, seed: int, names: list[str], results: list[tuple[int, int, list[Person]]]
) -> None:
    """``annotations/person_keypoints_{split}2017.json`` from the written images' people."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i, (width, height, people) in enumerate(results):
        images.append({"id": i + 1, "file_name": names[i], "width": width, "height": height})
        for person in people:
            annotations.append(_annotation(person, len(annotations) + 1, i + 1))
    dataset = {
        "info": {"description": f"posematch synthetic people, seed {seed}", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": _categories(),
    }
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    with open(out / "annotations" / f"person_keypoints_{SPLITS[split][0]}.json", "w") as f:
        json.dump(dataset, f, separators=(",", ":"))


def generate(
    out_dir: str | os.PathLike[str],
    num_train: int,
    num_val: int,
    seed: int = 0,
    config: SyntheticConfig = DEFAULT_CONFIG,
    workers: int | None = None,
    num_test: int = 0,
    num_pretrain: int = 0,
) -> Path:
    """Write the synthetic dataset in COCO layout under ``out_dir`` and return its path.

    Args:
        out_dir: dataset root (created; existing files of the same names are overwritten).
        num_train: images in ``train2017``.
        num_val: images in ``val2017``.
        seed: the output is a function of the seed (and config) only.
        config: what to draw.
        workers: processes (default: all CPUs); does not change the output.
        num_test: images in ``test2017`` (held-out split; none written when 0).
        num_pretrain: images in ``pretrain2017`` (backbone pretraining split; none when 0).
    """
    counts = {"train": num_train, "val": num_val, "test": num_test, "pretrain": num_pretrain}
    if min(counts.values()) < 0:
        raise ValueError(f"image counts must be >= 0, got {counts}")
    out = Path(out_dir)
    # train and val are always written (possibly empty); the optional splits only when asked for.
    counts = {k: n for k, n in counts.items() if n > 0 or k in ("train", "val")}
    names = {split: [f"{i + 1:012d}.jpg" for i in range(n)] for split, n in counts.items()}
    jobs: list[Job] = []
    for split, n in counts.items():
        folder = out / SPLITS[split][0]
        folder.mkdir(parents=True, exist_ok=True)
        jobs += [(seed, split, i, str(folder / names[split][i]), config) for i in range(n)]
    results = _run_jobs(jobs, workers or os.cpu_count() or 1)
    start = 0
    for split, n in counts.items():
        _write_annotations(out, split, seed, names[split], results[start : start + n])
        start += n
    return out
