"""Quarter-offset and DARK decoders on hand-worked heatmaps and against the official algorithms."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from posematch.codecs.decoders import decode_argmax, decode_dark


def test_quarter_offset_moves_toward_the_larger_neighbour():
    heat = torch.zeros(1, 2, 6, 6)
    heat[0, 0, 3, 2] = 1.0
    heat[0, 0, 3, 3] = 0.5  # right neighbour larger -> +0.25 in x
    heat[0, 0, 2, 2] = 0.2  # upper neighbour larger -> -0.25 in y
    heat[0, 1, 2, 3] = 0.7  # no neighbours: sign(0) = 0 -> no shift
    out = decode_argmax(heat)
    assert out.keypoints.tolist() == [[[2.25, 2.75], [3.0, 2.0]]]
    assert out.scores[0].tolist() == pytest.approx([1.0, 0.7])


def test_quarter_offset_follows_the_official_border_rule():
    heat = torch.zeros(1, 3, 6, 6)
    heat[0, 0, 3, 1] = 1.0  # x = 1 is not > 1: no shift, as in the official code
    heat[0, 0, 3, 2] = 0.5
    heat[0, 1, 4, 4] = 1.0  # x = 4 < w - 1 = 5: shifted
    heat[0, 1, 4, 5] = 0.5
    heat[0, 2] = -1.0  # maximum <= 0: the official code returns (0, 0)
    heat[0, 2, 3, 3] = -0.5
    out = decode_argmax(heat)
    assert out.keypoints.tolist() == [[[1.0, 3.0], [4.25, 4.0], [0.0, 0.0]]]


def test_dark_without_blur_recovers_a_log_quadratic_peak_exactly():
    # log H is an exact quadratic, so one Newton step lands on its maximum.
    mu = torch.tensor([17.3, 30.6], dtype=torch.float64)
    cov_inv = torch.tensor([[0.30, 0.08], [0.08, 0.20]], dtype=torch.float64)
    ys, xs = torch.meshgrid(
        torch.arange(64, dtype=torch.float64), torch.arange(48, dtype=torch.float64), indexing="ij"
    )
    dx, dy = xs - mu[0], ys - mu[1]
    # Elementwise, not einsum: a BLAS product's rounding can depend on the memory's alignment,
    # and this 1e-9 check amplifies it (it failed once in a full run, 1.3e-9).
    quad = cov_inv[0, 0] * dx * dx + 2 * cov_inv[0, 1] * dx * dy + cov_inv[1, 1] * dy * dy
    heat = torch.exp(-0.5 * quad)[None, None]
    out = decode_dark(heat, blur_kernel=0)
    torch.testing.assert_close(out.keypoints[0, 0], mu, rtol=0, atol=1e-9)


def official_dark(heat: np.ndarray, kernel: int) -> np.ndarray:
    """The official DARK get_final_preds: cv2 blur with a zero border, log, Taylor step (numpy)."""
    h, w = heat.shape
    idx = int(np.argmax(heat))
    coord = np.array([idx % w, idx // w], dtype=np.float64)
    border = (kernel - 1) // 2
    padded = np.zeros((h + 2 * border, w + 2 * border), dtype=np.float32)
    padded[border:-border, border:-border] = heat
    blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
    hm = np.log(np.maximum(blurred * (heat.max() / blurred.max()), 1e-10)).astype(np.float64)
    px, py = int(coord[0]), int(coord[1])
    if 1 < px < w - 2 and 1 < py < h - 2:
        dx = 0.5 * (hm[py][px + 1] - hm[py][px - 1])
        dy = 0.5 * (hm[py + 1][px] - hm[py - 1][px])
        dxx = 0.25 * (hm[py][px + 2] - 2 * hm[py][px] + hm[py][px - 2])
        dxy = 0.25 * (
            hm[py + 1][px + 1] - hm[py - 1][px + 1] - hm[py + 1][px - 1] + hm[py - 1][px - 1]
        )
        dyy = 0.25 * (hm[py + 2][px] - 2 * hm[py][px] + hm[py - 2][px])
        hessian = np.array([[dxx, dxy], [dxy, dyy]])
        if dxx * dyy - dxy**2 != 0:
            coord = coord - np.linalg.inv(hessian) @ np.array([dx, dy])
    return coord


@pytest.mark.parametrize("kernel", [11, 17, 5])
def test_dark_matches_the_official_algorithm_with_cv2_blur(rng, kernel):
    ys, xs = np.meshgrid(np.arange(64), np.arange(48), indexing="ij")
    for _ in range(6):
        mx, my = rng.uniform(3, 44), rng.uniform(3, 60)
        heat = np.exp(-((xs - mx) ** 2 + (ys - my) ** 2) / 8.0) + rng.uniform(0, 0.05, (64, 48))
        heat = heat.astype(np.float32)
        got = decode_dark(torch.tensor(heat)[None, None], blur_kernel=kernel)
        np.testing.assert_allclose(
            got.keypoints[0, 0].numpy(), official_dark(heat, kernel), atol=2e-4
        )
        assert np.abs(got.keypoints[0, 0].numpy() - [mx, my]).max() < 0.1


def test_window_mass_score_is_the_share_of_relu_mass_in_the_window_whatever_the_scale():
    from posematch.codecs.decoders import get_decoder

    heat = torch.full((1, 2, 5, 4), -1.0)
    heat[0, 0, 1, 1], heat[0, 0, 1, 2], heat[0, 0, 2, 1] = 3.0, 1.0, 2.0  # window mass 6
    heat[0, 0, 4, 3] = 2.0  # elsewhere: 2, so the share is 6 / 8
    # joint 1: no positive value at all
    for factor in (1.0, 1e-3, 1e4):
        out = get_decoder("window", score="mass")(heat * factor)
        assert out.scores[0].tolist() == pytest.approx([0.75, 0.0], rel=1e-6)
        # the keypoint itself does not depend on the score: mass-weighted mean of the window
        assert out.keypoints[0, 0].tolist() == pytest.approx([1 + 1 / 6, 1 + 2 / 6], rel=1e-6)
    assert get_decoder("window")(heat).scores[0].tolist() == [3.0, -1.0]  # official: the maximum
    with pytest.raises(ValueError, match="score='mass'"):
        get_decoder("argmax", score="mass")
    with pytest.raises(ValueError, match="score='top'"):
        get_decoder("window", score="top")
