"""Gaussian targets against the official SimpleBaseline / HRNet ``generate_target`` (numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posematch.codecs.gaussian import GaussianHeatmapCodec


def official_generate_target(joints, joints_vis, sigma, image_size, heatmap_size):
    """The official numpy code's algorithm (loop per joint, window paste), written for the test."""
    num_joints = len(joints)
    target_weight = np.array(joints_vis, dtype=np.float32)
    target = np.zeros((num_joints, heatmap_size[1], heatmap_size[0]), dtype=np.float32)
    tmp_size = sigma * 3
    for j in range(num_joints):
        feat_stride = np.asarray(image_size) / np.asarray(heatmap_size)
        mu_x = int(joints[j][0] / feat_stride[0] + 0.5)
        mu_y = int(joints[j][1] / feat_stride[1] + 0.5)
        ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
        br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
        if ul[0] >= heatmap_size[0] or ul[1] >= heatmap_size[1] or br[0] < 0 or br[1] < 0:
            target_weight[j] = 0
            continue
        size = 2 * tmp_size + 1
        x = np.arange(0, size, 1, np.float32)
        y = x[:, np.newaxis]
        x0 = y0 = size // 2
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
        g_x = max(0, -ul[0]), min(br[0], heatmap_size[0]) - ul[0]
        g_y = max(0, -ul[1]), min(br[1], heatmap_size[1]) - ul[1]
        img_x = max(0, ul[0]), min(br[0], heatmap_size[0])
        img_y = max(0, ul[1]), min(br[1], heatmap_size[1])
        if target_weight[j] > 0.5:
            target[j][img_y[0] : img_y[1], img_x[0] : img_x[1]] = g[
                g_y[0] : g_y[1], g_x[0] : g_x[1]
            ]
    return target, target_weight


@pytest.mark.parametrize(
    ("sigma", "image_size", "heatmap_size"),
    [(2.0, (192, 256), (48, 64)), (3.0, (288, 384), (72, 96)), (2.5, (256, 256), (64, 64))],
)
def test_matches_official_generate_target(rng, sigma, image_size, heatmap_size):
    joints = rng.uniform(-60, max(image_size) + 60, size=(200, 2))
    vis = rng.integers(0, 2, size=200)
    ref, ref_weight = official_generate_target(joints, vis, sigma, image_size, heatmap_size)
    codec = GaussianHeatmapCodec(image_size, heatmap_size, sigma=sigma)
    got = codec.encode(torch.tensor(joints), torch.tensor(vis))
    np.testing.assert_allclose(got.heatmaps.numpy(), ref, rtol=0, atol=2e-7)
    np.testing.assert_array_equal(got.weights.numpy(), ref_weight)


def test_batched_encoding_equals_per_sample(rng):
    joints = torch.tensor(rng.uniform(0, 190, size=(3, 17, 2)))
    vis = torch.ones(3, 17)
    codec = GaussianHeatmapCodec()
    batched = codec.encode(joints, vis)
    assert batched.heatmaps.shape == (3, 17, 64, 48)
    for b in range(3):
        assert torch.equal(codec.encode(joints[b], vis[b]).heatmaps, batched.heatmaps[b])


def test_unbiased_target_peaks_at_the_exact_subpixel_location():
    codec = GaussianHeatmapCodec(sigma=2.0, unbiased=True)
    t = codec.encode(torch.tensor([[41.0, 77.0]]), torch.tensor([1]))  # heatmap (10.25, 19.25)
    hm = t.heatmaps[0].double()
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="ij")
    expected = torch.exp(-((xs - 10.25) ** 2 + (ys - 19.25) ** 2) / 8).double()
    torch.testing.assert_close(hm, expected, rtol=0, atol=1e-6)


def test_rejects_non_positive_sigma():
    with pytest.raises(ValueError, match="sigma"):
        GaussianHeatmapCodec(sigma=0)
