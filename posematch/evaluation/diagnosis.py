"""Diagnosis of a trained pose model: why it scores the AP it scores (pure numpy / pycocotools).

It separates ranking from localisation, looks at the tail of the joint errors, tests for a
systematic bias, and checks whether the heatmaps are alive. The definitions:

- OKS (Ronchi & Perona 2017; cocoapi ``COCOeval.computeOks``): for a ground-truth (GT) instance
  with keypoints ``x_gk``, labels ``v_k``, annotation area ``a`` and the dataset's sigmas ``s_k``,
  and a prediction ``x_dk`` (image pixels)::

      e_k = |x_dk - x_gk|^2 / (2 s_k)^2 / (a + eps) / 2,    eps = np.spacing(1)
      OKS = mean of exp(-e_k) over the labelled joints (v_k > 0)

- Scored GT instances: ``iscrowd == 0``, person category, at least one labelled joint (COCOeval
  ignores the others).
- Best match of a GT instance: the prediction of the same image with the largest OKS with it
  (``best_matches``; no one-to-one assignment, no score involved). A GT instance without any
  prediction in its image has OKS 0 and no match.
- Oracle scores (``oracle_results``): every result's score replaced by its largest OKS with a
  scored GT instance of its image (0 when there is none); COCOeval on these results gives the AP a
  perfect instance ranking would reach with the same keypoints.
- Recall at OKS t (``recall_at_oks``): the share of scored GT instances whose best match has
  OKS >= t, for t = 0.50, 0.55, ..., 0.95.
- Joint errors (``joint_errors``): Euclidean distance between the best match's joint and the GT
  joint, over labelled joints, in original-image pixels and divided by sqrt(area); median and 90th
  percentile (``np.percentile``, linear interpolation), per joint and over all joints.
- Mean error (``mean_error``): mean of prediction - GT per axis (x, y) over labelled joints of
  matched instances, in image pixels and, through each instance's linear image -> heatmap map, in
  heatmap pixels; also the mean absolute error per axis in heatmap pixels.
- Heatmap health (``heatmap_health``): a heatmap is dead when it has no positive value (its relu is
  zero: the matching loss normalises relu(H), so a dead map has no gradient). Over live heatmaps:
  the median share of the relu-mass in the top pixel, and the median share in the 2x2 window of
  largest relu-mass (the window decoder's window, ``posematch.codecs.decoders.decode_window``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from posematch.evaluation.report import COCO_COLUMNS, percent

OKS_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass(frozen=True)
class GroundTruth:
    """The scored ground-truth instances of a COCO annotation file.

    image_ids (G,) int64; keypoints (G, K, 2) float64 image pixels; visible (G, K) bool (labelled,
    v > 0); areas (G,) float64 image pixels^2 (the annotation's ``area``, as COCOeval uses);
    ann_ids (G,) int64.
    """

    image_ids: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    areas: np.ndarray
    ann_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])


def ground_truth(coco: COCO, num_keypoints: int, category_id: int = 1) -> GroundTruth:
    """The instances COCOeval scores: not crowd, ``category_id``, at least one labelled joint."""
    anns = [
        a
        for a in coco.loadAnns(coco.getAnnIds(catIds=[category_id]))
        if not a.get("iscrowd", 0) and any(v > 0 for v in a.get("keypoints", [])[2::3])
    ]
    kpts = np.zeros((len(anns), num_keypoints, 3), dtype=np.float64)
    for i, a in enumerate(anns):
        flat = np.asarray(a["keypoints"], dtype=np.float64)
        if flat.size != 3 * num_keypoints:
            raise ValueError(
                f"annotation {a.get('id')}: {flat.size // 3} keypoints, expected {num_keypoints}"
            )
        kpts[i] = flat.reshape(num_keypoints, 3)
    return GroundTruth(
        image_ids=np.asarray([a["image_id"] for a in anns], dtype=np.int64),
        keypoints=kpts[..., :2],
        visible=kpts[..., 2] > 0,
        areas=np.asarray([a["area"] for a in anns], dtype=np.float64),
        ann_ids=np.asarray([a.get("id", i) for i, a in enumerate(anns)], dtype=np.int64),
    )


def oks_matrix(
    gt_keypoints: np.ndarray,
    gt_visible: np.ndarray,
    gt_areas: np.ndarray,
    pred_keypoints: np.ndarray,
    sigmas: Sequence[float],
) -> np.ndarray:
    """(G, D) OKS of every GT instance with every prediction (cocoapi formula, module docstring).

    Args:
        gt_keypoints: (G, K, 2) image pixels. gt_visible: (G, K) labelled joints.
        gt_areas: (G,) image pixels^2. pred_keypoints: (D, K, 2) image pixels.
        sigmas: (K,) OKS sigmas of the dataset.
    """
    gt = np.asarray(gt_keypoints, dtype=np.float64)
    dt = np.asarray(pred_keypoints, dtype=np.float64)
    vis = np.asarray(gt_visible, dtype=bool)
    var = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    if gt.shape[1:] != (var.size, 2) or dt.shape[1:] != (var.size, 2):
        raise ValueError(f"keypoints {gt.shape}, {dt.shape}: expected (., {var.size}, 2)")
    d2 = ((dt[None] - gt[:, None]) ** 2).sum(-1)  # (G, D, K)
    area = np.asarray(gt_areas, dtype=np.float64)[:, None, None]
    e = d2 / var / (area + np.spacing(1)) / 2
    total = np.where(vis[:, None, :], np.exp(-e), 0.0).sum(-1)
    return total / np.maximum(vis.sum(-1), 1)[:, None]


def _by_image(image_ids: np.ndarray) -> dict[int, np.ndarray]:
    ids = np.asarray(image_ids).reshape(-1)
    if ids.size == 0:
        return {}
    order = np.argsort(ids, kind="stable")
    uniq, starts = np.unique(ids[order], return_index=True)
    return {int(u): g for u, g in zip(uniq.tolist(), np.split(order, starts[1:]), strict=True)}


def best_matches(
    gt: GroundTruth,
    pred_image_ids: np.ndarray,
    pred_keypoints: np.ndarray,
    sigmas: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """Each GT instance's best prediction of its image by OKS.

    Returns:
        index (G,) int64 into the predictions (-1: no prediction in the image), oks (G,) float64
        (0 without a prediction).
    """
    pred_keypoints = np.asarray(pred_keypoints, dtype=np.float64)
    index = np.full(len(gt), -1, dtype=np.int64)
    best = np.zeros(len(gt), dtype=np.float64)
    preds = _by_image(pred_image_ids)
    for image_id, g in _by_image(gt.image_ids).items():
        d = preds.get(image_id)
        if d is None:
            continue
        oks = oks_matrix(gt.keypoints[g], gt.visible[g], gt.areas[g], pred_keypoints[d], sigmas)
        arg = oks.argmax(1)
        index[g] = d[arg]
        best[g] = oks[np.arange(len(g)), arg]
    return index, best


def oracle_results(
    results: Sequence[Mapping[str, Any]], gt: GroundTruth, sigmas: Sequence[float]
) -> list[dict[str, Any]]:
    """Copies of COCO keypoint ``results`` with ``score`` = the result's largest OKS with a scored
    GT instance of its image (0 when the image has none)."""
    out = [dict(r) for r in results]
    if not out:
        return out
    k = len(sigmas)
    kpts = np.asarray([r["keypoints"] for r in out], dtype=np.float64).reshape(len(out), k, 3)
    gts = _by_image(gt.image_ids)
    for image_id, d in _by_image(np.asarray([r["image_id"] for r in out])).items():
        g = gts.get(image_id)
        scores = np.zeros(len(d))
        if g is not None:
            oks = oks_matrix(gt.keypoints[g], gt.visible[g], gt.areas[g], kpts[d, :, :2], sigmas)
            scores = oks.max(0)
        for i, s in zip(d.tolist(), scores.tolist(), strict=True):
            out[i]["score"] = float(s)
    return out


def recall_at_oks(
    best_oks: np.ndarray, thresholds: Sequence[float] = OKS_THRESHOLDS
) -> dict[str, float | None]:
    """``{"0.50": share of GT instances with best OKS >= 0.50, ...}`` (None without GT)."""
    oks = np.asarray(best_oks, dtype=np.float64).reshape(-1)
    return {f"{t:.2f}": (float((oks >= t).mean()) if oks.size else None) for t in thresholds}


def _stats(values: np.ndarray) -> tuple[float | None, float | None]:
    if values.size == 0:
        return None, None
    return float(np.median(values)), float(np.percentile(values, 90))


def joint_errors(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    areas: np.ndarray,
    names: Sequence[str],
) -> dict[str, dict[str, float | int | None]]:
    """Median and 90th percentile of the joint error per joint name and over ``"all"`` joints.

    Args:
        pred, gt: (N, K, 2) matched predictions and GT keypoints, image pixels.
        visible: (N, K) the joints to count (labelled GT joints).
        areas: (N,) GT areas, image pixels^2.
        names: K joint names.

    Returns:
        ``{name: {"median_px", "p90_px", "median_rel", "p90_rel", "count"}}``: ``_px`` in image
        pixels, ``_rel`` divided by sqrt(area); None where no joint counts.
    """
    dist = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
    rel = dist / np.sqrt(np.maximum(np.asarray(areas, np.float64), np.spacing(1)))[:, None]
    vis = np.asarray(visible, dtype=bool)
    if len(names) != vis.shape[1]:
        raise ValueError(f"{len(names)} joint names for K={vis.shape[1]} joints")
    out: dict[str, dict[str, float | int | None]] = {}
    columns = [(str(n), vis[:, j], j) for j, n in enumerate(names)] + [("all", vis, None)]
    for name, mask, j in columns:
        px = dist[:, j][mask] if j is not None else dist[mask]
        rl = rel[:, j][mask] if j is not None else rel[mask]
        median_px, p90_px = _stats(px)
        median_rel, p90_rel = _stats(rl)
        out[name] = {
            "median_px": median_px,
            "p90_px": p90_px,
            "median_rel": median_rel,
            "p90_rel": p90_rel,
            "count": int(mask.sum()),
        }
    return out


def mean_error(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    to_heatmap: np.ndarray | None = None,
) -> dict[str, Any]:
    """Mean signed error (prediction - GT) per axis over the ``visible`` joints.

    Args:
        pred, gt: (N, K, 2) image pixels. visible: (N, K) joints to count.
        to_heatmap: (N, 2, 2) linear part of each instance's image -> heatmap pixel map (the
            inverse of the crop's input -> image matrix, times the codec's heatmap / input scale);
            None leaves the heatmap-pixel entries out.

    Returns:
        ``{"signed_image_px": [x, y], "signed_heatmap_px": [x, y], "abs_heatmap_px": [x, y],
        "joints": n}`` (None entries without joints).
    """
    err = np.asarray(pred, np.float64) - np.asarray(gt, np.float64)
    vis = np.asarray(visible, dtype=bool)
    n = int(vis.sum())

    def mean(e: np.ndarray) -> list[float] | None:
        return e[vis].mean(0).tolist() if n else None

    out: dict[str, Any] = {"signed_image_px": mean(err)}
    if to_heatmap is not None:
        hm = np.einsum("nij,nkj->nki", np.asarray(to_heatmap, np.float64), err)
        out["signed_heatmap_px"] = mean(hm)
        out["abs_heatmap_px"] = mean(np.abs(hm))
    out["joints"] = n
    return out


def heatmap_health(top_share: np.ndarray, window_share: np.ndarray) -> dict[str, float | None]:
    """Summary of per-heatmap mass shares (NaN marks a dead heatmap, as ``posematch.inference.
    heatmap_mass_shares`` returns them).

    Returns:
        ``{"dead_share": share of dead heatmaps, "top_mass": median top-pixel share over live
        heatmaps, "window_mass": median window share over live heatmaps, "heatmaps": count}``;
        None where nothing is counted.
    """
    top = np.asarray(top_share, dtype=np.float64).reshape(-1)
    window = np.asarray(window_share, dtype=np.float64).reshape(-1)
    dead = np.isnan(top)
    live = ~dead
    return {
        "dead_share": float(dead.mean()) if top.size else None,
        "top_mass": float(np.median(top[live])) if live.any() else None,
        "window_mass": float(np.median(window[live])) if live.any() else None,
        "heatmaps": int(top.size),
    }


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|---|" + "|".join("---:" for _ in header[1:]) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def markdown(report: Mapping[str, Any]) -> str:
    """``diagnosis.md``: the report of ``posematch.engine.diagnose.diagnose`` as Markdown tables."""
    lines = [f"# Diagnosis of {report.get('run', 'a run')}", ""]
    setup = report.get("setup", {})
    if setup:
        lines += [", ".join(f"{k}: {v}" for k, v in setup.items()), ""]
    ap_rows = [
        [label, *(percent(report[key][c]) for c in COCO_COLUMNS)]
        for label, key in (("own scores", "ap"), ("oracle scores (true OKS)", "ap_oracle"))
    ]
    lines += ["## AP", "", *_table(["scores", *COCO_COLUMNS], ap_rows), ""]
    recall = report["recall_at_oks"]
    lines += [
        "## Recall at OKS (share of GT instances whose best prediction has OKS >= t)",
        "",
        *_table(["t", *recall], [["recall", *(_num(v) for v in recall.values())]]),
        "",
    ]
    rows = [
        [name, _num(e["median_px"], 2), _num(e["p90_px"], 2), _num(e["median_rel"], 4),
         _num(e["p90_rel"], 4), str(e["count"])]
        for name, e in report["joint_error"].items()
    ]  # fmt: skip
    lines += [
        "## Joint error (best match, labelled joints)",
        "",
        *_table(
            ["joint", "median px", "p90 px", "median / sqrt(area)", "p90 / sqrt(area)", "joints"],
            rows,
        ),
        "",
    ]

    def pair(v: Any) -> str:
        return "–" if v is None else f"{v[0]:+.3f}, {v[1]:+.3f}"

    rows = [
        [label, pair(e["signed_image_px"]), pair(e.get("signed_heatmap_px")),
         pair(e.get("abs_heatmap_px")).replace("+", ""), str(e["joints"])]
        for label, e in report["mean_error"].items()
    ]  # fmt: skip
    header = ["test", "signed, image px", "signed, heatmap px", "mean abs, heatmap px", "joints"]
    lines += ["## Mean error per axis (x, y), prediction - GT", "", *_table(header, rows), ""]
    h = report["heatmap_health"]
    header = ["heatmaps", "dead share", "median top-pixel share", "median window share"]
    values = [h["dead_share"], h["top_mass"], h["window_mass"]]
    lines += [
        "## Heatmap health (non-flipped heatmaps)",
        "",
        *_table(header, [[str(h["heatmaps"]), *(_num(v) for v in values)]]),
        "",
        "Dead: no positive value. Shares of the relu-mass over live heatmaps; window: the 2x2 "
        "window of largest relu-mass (the window decoder's).",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "OKS_THRESHOLDS",
    "GroundTruth",
    "best_matches",
    "ground_truth",
    "heatmap_health",
    "joint_errors",
    "markdown",
    "mean_error",
    "oks_matrix",
    "oracle_results",
    "recall_at_oks",
]
