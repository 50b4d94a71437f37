"""Object keypoint similarity (OKS) and greedy OKS-NMS of person instances (pure numpy functions).

The formula is the one of the SimpleBaseline / HRNet ``lib/nms/nms.py`` ``oks_iou``, itself the
cocoapi ``COCOeval.computeOks`` with the two instances' mean area (Ronchi & Perona 2017; Lin et al.
2014). For keypoints ``x_g``, ``x_d`` (image pixels), areas ``a_g``, ``a_d`` (image pixels^2) and
per-joint sigmas ``s_k``::

    e_k = |x_dk - x_gk|^2 / (2 s_k)^2 / ((a_g + a_d) / 2 + eps) / 2,    eps = np.spacing(1)
    OKS = mean_k exp(-e_k)

over all K joints, or, with ``in_vis_thre``, over the joints selected as the official code selects
them (see ``oks_one_to_many``). The coordinates are divided by 2 s_k before the difference is taken
(one pass per instance instead of one per pair), so values agree with the official ones to rounding
(~1e-16), not bit for bit.

Greedy NMS keeps the highest-scoring instance, drops every remaining one whose OKS with it is not
``<= thr``, and repeats (official ``oks_nms``). ``oks_nms_per_image`` runs that greedy pass on all
images of a result set at once: images of similar size are padded into one block, the OKS of every
pair (higher-ranked, lower-ranked) of each image is computed in one call, and the greedy pass then
advances one rank at a time across the whole block, so the Python loop runs over ranks, not over
instances or pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# An image with more instances than this does not get its pairwise OKS built at once: its rows are
# computed one kept instance at a time, as the official code does.
MATRIX_MAX_INSTANCES = 512
# Images are padded into blocks of at most this many (image, pair, joint) entries; the float64
# temporaries of that size stay in the tens of MB.
BLOCK_ELEMENTS = 1 << 21


def _inv_two_sigmas(sigmas: Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    s = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if s.shape != (k,):
        raise ValueError(f"sigmas: {s.size} values for keypoints with K={k} joints")
    return 1.0 / (2.0 * s)


def _oks_scaled(
    xg: np.ndarray,
    yg: np.ndarray,
    a_g: np.ndarray | float,
    xd: np.ndarray,
    yd: np.ndarray,
    a_d: np.ndarray,
    d_scores: np.ndarray | None,
    in_vis_thre: float | None,
) -> np.ndarray:
    """OKS from coordinates already divided by 2 sigma: x* (..., K), areas (...), broadcastable."""
    e = xd - xg
    e *= e
    dy = yd - yg
    dy *= dy
    e += dy
    e *= (-0.5 / ((a_g + a_d) / 2 + np.spacing(1)))[..., None]
    np.exp(e, out=e)
    if in_vis_thre is None:
        return e.mean(-1)
    if d_scores is None:
        raise ValueError("other_scores: required when in_vis_thre is given")
    # Official `list(vg > t) and list(vd > t)`: a non-empty list is true, so the expression is
    # the second list; only the candidates' scores select joints.
    selected = np.broadcast_to(d_scores > in_vis_thre, e.shape)
    count = selected.sum(-1)
    total = np.where(selected, e, 0.0).sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def oks_one_to_many(
    kpts: np.ndarray,
    area: float,
    others: np.ndarray,
    other_areas: np.ndarray,
    sigmas: Sequence[float] | np.ndarray,
    other_scores: np.ndarray | None = None,
    in_vis_thre: float | None = None,
) -> np.ndarray:
    """OKS of one instance (``kpts``) with each of ``others``, as the official ``oks_iou``.

    Args:
        kpts: (K, 2) float, (x, y) in image pixels.
        area: the instance's area, image pixels^2 (official: the padded box, (scale * 200)^2).
        others: (M, K, 2) float, image pixels.
        other_areas: (M,) image pixels^2.
        sigmas: (K,) per-joint OKS sigmas (e.g. ``posematch.keypoints.COCO.sigmas``).
        other_scores: (M, K) keypoint scores of ``others``; needed only with ``in_vis_thre``.
        in_vis_thre: ``None`` (official default, and what the official COCO evaluation passes):
            the mean runs over all K joints. A float: the official code selects joints with
            ``list(vg > t) and list(vd > t)``, and since a non-empty list is true that expression
            is the second list: only the *others'* scores select the joints (``> t``, strict); an
            instance with no selected joint gets OKS 0. This quirk is kept on purpose.

    Returns:
        (M,) float64 OKS values in [0, 1].
    """
    g = np.asarray(kpts, dtype=np.float64)
    d = np.asarray(others, dtype=np.float64)
    if g.ndim != 2 or g.shape[1] != 2 or d.ndim != 3 or d.shape[1:] != g.shape:
        raise ValueError(f"kpts {g.shape} and others {d.shape}: expected (K, 2) and (M, K, 2)")
    inv = _inv_two_sigmas(sigmas, g.shape[0])
    a_d = np.asarray(other_areas, dtype=np.float64).reshape(-1)
    v = None if other_scores is None else np.asarray(other_scores, dtype=np.float64)
    return _oks_scaled(
        g[:, 0] * inv, g[:, 1] * inv, float(area), d[..., 0] * inv, d[..., 1] * inv, a_d, v,
        in_vis_thre,
    )  # fmt: skip


def _greedy_block(
    kpts: np.ndarray,
    areas: np.ndarray,
    valid: np.ndarray,
    inv: np.ndarray,
    thr: float,
    kpt_scores: np.ndarray | None,
    in_vis_thre: float | None,
) -> np.ndarray:
    """Greedy OKS-NMS of B padded images at once.

    kpts (B, m, K, 2), areas (B, m), valid (B, m) and kpt_scores (B, m, K) hold each image's
    instances in decreasing score order (padding after them); ``inv`` = 1 / (2 sigma), (K,).
    Returns kept (B, m) bool.
    """
    b, m = valid.shape
    x, y = kpts[..., 0] * inv, kpts[..., 1] * inv
    # Rank r can only suppress a later rank c > r: the pairs r < c are all that is needed.
    r_idx, c_idx = np.triu_indices(m, 1)
    pair = _oks_scaled(
        x[:, r_idx], y[:, r_idx], areas[:, r_idx], x[:, c_idx], y[:, c_idx], areas[:, c_idx],
        None if kpt_scores is None else kpt_scores[:, c_idx], in_vis_thre,
    )  # fmt: skip
    # Not `oks > thr`: the official keeps `oks <= thr` only, so a NaN OKS suppresses too.
    over = np.zeros((b, m, m), dtype=bool)
    over[:, r_idx, c_idx] = ~(pair <= thr)
    suppressed = ~valid
    kept = np.zeros_like(valid)
    for r in range(m):
        kept[:, r] = ~suppressed[:, r]
        suppressed |= kept[:, r, None] & over[:, r]
    return kept


def _greedy_rows(
    kpts: np.ndarray,
    areas: np.ndarray,
    sigmas: Sequence[float] | np.ndarray,
    thr: float,
    kpt_scores: np.ndarray | None,
    in_vis_thre: float | None,
) -> np.ndarray:
    """Greedy OKS-NMS of one large image, one OKS row per kept instance (the official loop).

    Inputs in decreasing score order, as ``_greedy_block`` without the batch axis.
    """
    n = kpts.shape[0]
    suppressed = np.zeros(n, dtype=bool)
    kept = np.zeros(n, dtype=bool)
    for r in range(n):
        if suppressed[r]:
            continue
        kept[r] = True
        rest = slice(r + 1, n)
        v = None if kpt_scores is None else kpt_scores[rest]
        row = oks_one_to_many(kpts[r], areas[r], kpts[rest], areas[rest], sigmas, v, in_vis_thre)
        suppressed[rest] |= ~(row <= thr)
    return kept


def oks_nms_per_image(
    image_ids: np.ndarray,
    kpts: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    sigmas: Sequence[float] | np.ndarray,
    thr: float = 0.9,
    kpt_scores: np.ndarray | None = None,
    in_vis_thre: float | None = None,
) -> np.ndarray:
    """Greedy OKS-NMS run on every image separately (official ``oks_nms`` per image).

    Args:
        image_ids: (N,) int, the image of each instance; instances of different images never
            suppress each other.
        kpts: (N, K, 2) float, (x, y) in image pixels.
        scores: (N,) instance scores (after rescoring). Within an image the order is
            ``np.argsort(scores)[::-1]``, as the official code, so ties resolve the same way.
        areas: (N,) image pixels^2 (official: (scale * 200)^2 of the padded box).
        sigmas: (K,) per-joint OKS sigmas.
        thr: an instance is kept only while its OKS with every kept one of its image is
            ``<= thr`` (official 0.9). A NaN OKS therefore suppresses, as in the official code.
        kpt_scores, in_vis_thre: passed to ``oks_one_to_many`` (the official evaluation: None).

    Returns:
        (n_kept,) int64 indices: images in order of first appearance, each image's kept
        instances in decreasing score order (the order the official results file has).
    """
    ids = np.asarray(image_ids).reshape(-1)
    kpts = np.asarray(kpts, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    areas = np.asarray(areas, dtype=np.float64).reshape(-1)
    n = scores.shape[0]
    if kpts.ndim != 3 or kpts.shape[0] != n or kpts.shape[2] != 2 or areas.shape != (n,):
        raise ValueError(
            f"OKS-NMS: kpts {kpts.shape}, scores ({n},), areas {areas.shape}: "
            "expected (N, K, 2), (N,), (N,)"
        )
    if ids.shape != (n,):
        raise ValueError(f"OKS-NMS: image_ids {ids.shape}, expected ({n},)")
    inv = _inv_two_sigmas(sigmas, kpts.shape[1])
    v = None if kpt_scores is None else np.asarray(kpt_scores, dtype=np.float64)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse, minlength=len(uniq))
    groups = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    ordered = [g[np.argsort(scores[g])[::-1]] for g in groups]  # the official per-image order
    kept = np.zeros(n, dtype=bool)

    by_size = np.argsort(counts, kind="stable")
    for u in by_size[counts[by_size] > MATRIX_MAX_INSTANCES]:
        o = ordered[u]
        vo = None if v is None else v[o]
        kept[o] = _greedy_rows(kpts[o], areas[o], sigmas, thr, vo, in_vis_thre)
    small = by_size[counts[by_size] <= MATRIX_MAX_INSTANCES]
    k = kpts.shape[1]
    start = 0
    while start < len(small):
        # Images sorted by size: a block ends where its largest image's padding exceeds the budget.
        stop = start + 1
        while stop < len(small):
            m = int(counts[small[stop]])
            if (stop + 1 - start) * (m * (m - 1) // 2) * k > BLOCK_ELEMENTS:
                break
            stop += 1
        block = small[start:stop]
        m = int(counts[block[-1]])
        index = np.zeros((len(block), m), dtype=np.int64)
        valid = np.arange(m) < counts[block][:, None]
        index[valid] = np.concatenate([ordered[u] for u in block])
        vb = None if v is None else v[index]
        keep_block = _greedy_block(kpts[index], areas[index], valid, inv, thr, vb, in_vis_thre)
        kept[index[keep_block]] = True
        start = stop

    in_order = np.concatenate([ordered[u] for u in np.argsort(first, kind="stable")])
    return in_order[kept[in_order]].astype(np.int64)


def oks_nms(
    kpts: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    sigmas: Sequence[float] | np.ndarray,
    thr: float = 0.9,
    kpt_scores: np.ndarray | None = None,
    in_vis_thre: float | None = None,
) -> np.ndarray:
    """Greedy OKS-NMS of the instances of one image (official ``oks_nms``).

    Arguments as ``oks_nms_per_image`` without ``image_ids``; returns (n_kept,) int64 indices
    into the N instances, in decreasing score order.
    """
    n = np.asarray(scores).reshape(-1).shape[0]
    return oks_nms_per_image(
        np.zeros(n, dtype=np.int64), kpts, scores, areas, sigmas, thr, kpt_scores, in_vis_thre
    )
