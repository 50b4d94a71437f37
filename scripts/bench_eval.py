"""Benchmark of the COCO scoring path: posematch's steps before COCOeval against COCOeval itself.

A synthetic ground truth the size of val2017 (5000 images, ~11k person annotations, ~58% with
keypoints) is written to a temporary folder, with a synthetic top-down result set the size of the
official detection-box run (~100k instances: ~20 person boxes per image, several around each person,
jittered keypoints, random keypoint and box scores). Timed in one run:
  (a) full path: ``CocoKeypointEvaluator.add`` in batches of 256, then ``evaluate()``:
      rescoring, OKS-NMS per image, results list, results file, COCOeval (each step timed);
  (b) bare pycocotools on the same final results: ``json.load`` of the results file, ``loadRes``,
      ``evaluate/accumulate/summarize`` (what scoring that file costs without posematch);
  (c) the optional ``faster_coco_eval`` backend on the same results: its time, and whether its 10
      stats equal pycocotools' (skipped with a line when the package is not installed).
Target (issue 5): the posematch steps before COCOeval (batch intake, rescoring, OKS-NMS) take at
most 20% of (b). Serialising the official results file is reported beside it (list + json write in
(a); (b) pays the mirror cost, reading that file), and so is the whole-path ratio (a) / (b).
The script always exits 0: it is a report, and prints PASS/FAIL beside the target.

Usage: python scripts/bench_eval.py [--images 5000] [--dets-per-image 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from posematch.evaluation import coco as coco_eval
from posematch.evaluation.coco import CocoKeypointEvaluator, coco_keypoint_stats
from posematch.keypoints import COCO as COCO_SPEC

K = COCO_SPEC.num_keypoints
# CPU seconds of this process: every step is single-threaded, so on an idle machine this equals the
# wall time, and it is not inflated when other jobs share the CPUs.
clock = time.process_time
WIDTH, HEIGHT = 640, 480


def synthetic_gt(rng: np.random.Generator, n_images: int) -> tuple[dict, list]:
    """COCO keypoint ground truth; also each image's people: (P, K, 2) keypoints, (P,) box areas."""
    images, anns, people = [], [], []
    ann_id = 1
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": WIDTH,
                       "height": HEIGHT})  # fmt: skip
        n = rng.poisson(2.2)
        h = rng.uniform(20, 400, n)
        w = h * rng.uniform(0.3, 0.8, n)
        x = rng.uniform(0, WIDTH - w)
        y = rng.uniform(0, HEIGHT - h)
        kpts = np.stack([x[:, None] + rng.uniform(0, 1, (n, K)) * w[:, None],
                         y[:, None] + rng.uniform(0, 1, (n, K)) * h[:, None]], -1)  # fmt: skip
        labelled = rng.uniform(size=(n, K)) < rng.uniform(0.3, 1.0, (n, 1))
        labelled &= (rng.uniform(size=n) < 0.58)[:, None]  # ~42% of people have no keypoints
        for p in range(n):
            v = np.where(labelled[p], 2, 0)
            flat = np.concatenate([np.round(kpts[p]) * (v[:, None] > 0), v[:, None]], 1)
            anns.append({
                "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "bbox": [float(x[p]), float(y[p]), float(w[p]), float(h[p])],
                "area": float(0.6 * w[p] * h[p]), "num_keypoints": int(labelled[p].sum()),
                "keypoints": flat.ravel().astype(int).tolist(),
            })  # fmt: skip
            ann_id += 1
        people.append((kpts, w * h))
    categories = [{"id": 1, "name": "person", "supercategory": "person",
                   "keypoints": list(COCO_SPEC.names), "skeleton": []}]  # fmt: skip
    return {"images": images, "annotations": anns, "categories": categories}, people


def synthetic_results(rng: np.random.Generator, people: list[np.ndarray], per_image: int):
    """Top-down predictions: per image ``~per_image`` boxes, most of them around real people."""
    ids, kpts, areas = [], [], []
    for image_id, (person_kpts, box_areas) in enumerate(people, start=1):
        n = rng.poisson(per_image)
        if len(person_kpts):
            who = rng.integers(0, len(person_kpts), n)
            base = person_kpts[who]
            size = np.sqrt(box_areas[who])
        else:
            base = rng.uniform(0, [WIDTH, HEIGHT], (n, K, 2))
            size = np.full(n, 100.0)
        background = rng.uniform(size=n) < 0.3
        base = np.where(background[:, None, None], rng.uniform(0, [WIDTH, HEIGHT], (n, K, 2)), base)
        noise = rng.uniform(0.0, 0.08, (n, 1, 1)) * size[:, None, None]
        kpts.append(base + rng.normal(size=(n, K, 2)) * noise)
        areas.append(1.5625 * size**2 * rng.uniform(0.8, 1.2, n))  # (1.25 x box)^2
        ids.append(np.full(n, image_id))
    ids, kpts, areas = np.concatenate(ids), np.concatenate(kpts), np.concatenate(areas)
    n = len(ids)
    kpt_scores = rng.beta(2, 2, (n, K)) * rng.uniform(0.2, 1.0, (n, 1))
    box_scores = rng.uniform(0.0, 1.0, n)
    return ids, kpts, kpt_scores, box_scores, areas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets-per-image", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rng = np.random.default_rng(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        gt_dict, people = synthetic_gt(rng, args.images)
        ann_file = Path(tmp) / "person_keypoints_synthetic.json"
        ann_file.write_text(json.dumps(gt_dict))
        ids, kpts, kps, box, areas = synthetic_results(rng, people, args.dets_per_image)
        n_kpt = sum(a["num_keypoints"] > 0 for a in gt_dict["annotations"])
        print(f"synthetic val2017: {args.images} images, {len(gt_dict['annotations'])} person "
              f"annotations ({n_kpt} with keypoints); {len(ids)} predicted instances")  # fmt: skip

        evaluator = CocoKeypointEvaluator(str(ann_file), tmp)  # GT loaded once, outside timings
        steps: dict[str, float] = {}

        def timed(name, fn):
            def wrapper(*a, **kw):
                t0 = clock()
                out = fn(*a, **kw)
                steps[name] = steps.get(name, 0.0) + clock() - t0
                return out

            return wrapper

        # (a) the full path; its steps are timed by wrapping the module's own functions.
        names = ("rescore", "oks_nms_per_image", "results_list", "write_results",
                 "coco_keypoint_stats")  # fmt: skip
        originals = {name: getattr(coco_eval, name) for name in names}
        for name, fn in originals.items():
            setattr(coco_eval, name, timed(name, fn))
        try:
            w0 = time.perf_counter()
            t0 = clock()
            for s in range(0, len(ids), 256):
                sl = slice(s, s + 256)
                evaluator.add(ids[sl], kpts[sl], kps[sl], box[sl], areas[sl])
            steps["add"] = clock() - t0
            t0 = clock()
            stats = evaluator.evaluate()
            t_evaluate = clock() - t0
            wall_a = time.perf_counter() - w0
        finally:
            for name, fn in originals.items():
                setattr(coco_eval, name, fn)
        steps["other"] = t_evaluate - sum(steps[n] for n in names)
        full = steps["add"] + t_evaluate

        # (b) bare pycocotools on the results file just written: load, loadRes, COCOeval.
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(ann_file))
        w0 = time.perf_counter()
        t0 = clock()
        with open(evaluator.results_file) as f:
            results = json.load(f)
        t_load = clock() - t0
        bare_stats = coco_keypoint_stats(gt, results)
        bare = clock() - t0
        wall_b = time.perf_counter() - w0
        # (c) the optional faster-coco-eval backend on the same results (the fast extra).
        try:
            t0 = clock()
            fast_stats = coco_keypoint_stats(gt, results, backend="faster_coco_eval")
            fast = clock() - t0
        except ImportError:
            fast_stats, fast = None, None

    before = steps["add"] + steps["other"] + steps["rescore"] + steps["oks_nms_per_image"]
    same = all(stats[k] == v for k, v in bare_stats.items())
    print(f"results after OKS-NMS: {len(results)} instances; AP {stats['AP']:.4f}; bare "
          f"pycocotools gives the same 10 stats: {same}")  # fmt: skip
    rows = [
        ("(a) add, batches of 256", steps["add"]),
        ("    concatenation, id checks", steps["other"]),
        ("    rescoring", steps["rescore"]),
        ("    OKS-NMS per image", steps["oks_nms_per_image"]),
        ("    results list", steps["results_list"]),
        ("    results file write", steps["write_results"]),
        ("    COCOeval (loadRes + evaluate/accumulate/summarize)", steps["coco_keypoint_stats"]),
        ("    total", full),
        ("(b) bare: json.load of the results file", t_load),
        ("    bare: loadRes + evaluate/accumulate/summarize", bare - t_load),
        ("    total", bare),
    ]
    print("CPU seconds:")
    for label, value in rows:
        print(f"  {label:<56}{value:8.3f}")
    ratio = before / bare
    verdict = "PASS" if ratio <= 0.20 else "FAIL"
    print(f"posematch steps before COCOeval (add, concatenation, rescoring, OKS-NMS): "
          f"{before:.3f} s = {100 * ratio:.1f}% of bare (target <= 20%): {verdict}")  # fmt: skip
    file_io = steps["results_list"] + steps["write_results"]
    print(f"results file (list + write, official format): {file_io:.3f} s = "
          f"{100 * file_io / bare:.1f}% of bare (bare reads the same file in {t_load:.3f} s)")  # fmt: skip
    print(f"whole path / bare = {full / bare:.3f}   (CPU seconds of this process; wall time of the "
          f"two timed parts: {wall_a:.3f} s and {wall_b:.3f} s)")  # fmt: skip
    if fast_stats is None:
        print("faster-coco-eval: not installed (pip install 'posematch[fast]'): not measured")
    else:
        equal = all(abs(fast_stats[k] - v) <= 1e-12 for k, v in bare_stats.items())
        scoring = bare - t_load
        print(f"faster-coco-eval backend: loadRes + evaluate/accumulate/summarize {fast:.3f} s "
              f"against pycocotools' {scoring:.3f} s ({scoring / fast:.1f}x faster); the same "
              f"10 stats (within 1e-12): {equal}")  # fmt: skip


if __name__ == "__main__":
    main()
