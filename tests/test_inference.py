"""Inference: flip test, decoding and the way back to original image pixels."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from posematch.codecs.gaussian import GaussianHeatmapCodec
from posematch.data.coco import CocoKeypoints
from posematch.data.transforms import TopDownPipeline
from posematch.inference import flip_back, predict, predict_heatmaps
from posematch.keypoints import COCO
from posematch.types import Batch
from tests.conftest import SHARED_DATA


def test_flip_back_hand_worked():
    h = torch.tensor([[[[1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0]]]])  # (1, 2, 1, 3)
    assert flip_back(h, [1, 0], shift=False).tolist() == [[[[6.0, 5.0, 4.0]], [[3.0, 2.0, 1.0]]]]
    assert flip_back(h, [1, 0], shift=True).tolist() == [[[[6.0, 6.0, 5.0]], [[3.0, 3.0, 2.0]]]]


def test_flip_test_of_a_mirrored_image_is_the_mirrored_flip_test():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 17, 3, stride=2, padding=1)
    )
    images = torch.randn(2, 3, 64, 48)
    perm = COCO.flip_permutation()
    original = predict_heatmaps(model, images, perm, shift=False)
    mirrored = predict_heatmaps(model, images.flip(-1), perm, shift=False)
    torch.testing.assert_close(mirrored, flip_back(original, perm, shift=False))


class OracleModel(nn.Module):
    """Renders unbiased Gaussians at given input-pixel keypoints: a perfect network."""

    def __init__(self, codec: GaussianHeatmapCodec, keypoints: torch.Tensor) -> None:
        super().__init__()
        self.codec, self.keypoints = codec, keypoints

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        vis = torch.ones(self.keypoints.shape[:2])
        return self.codec.encode(self.keypoints, vis).heatmaps.double()


def test_predictions_map_back_to_the_original_pixels():
    root = SHARED_DATA / "coco_sample"
    codec = GaussianHeatmapCodec((192, 256), (48, 64), sigma=2.0, unbiased=True,
                                 decoder="dark", blur_kernel=0)  # fmt: skip
    # A training pipeline without flips, so rotated and rescaled crops are covered.
    pipe = TopDownPipeline(
        (192, 256), COCO, train=True, augmentation={"flip": False, "rotation_prob": 1.0}
    )
    ds = CocoKeypoints(str(root / "test_coco.json"), str(root), pipe, codec)
    batch = Batch.collate([ds[i] for i in range(len(ds))])
    model = OracleModel(codec, batch.keypoints)
    keypoints, scores = predict(model, batch.image, batch.inverse, codec)
    truth = np.stack([inst.keypoints for inst in ds.instances])
    labelled = np.stack([inst.visible for inst in ds.instances]) > 0
    # DARK refines only away from the heatmap border (official rule: 1 < x < w - 2).
    hm = batch.keypoints.numpy() / 4
    inside = (hm[..., 0] > 3) & (hm[..., 0] < 44) & (hm[..., 1] > 3) & (hm[..., 1] < 60)
    check = labelled & inside
    assert check.sum() > 100
    np.testing.assert_allclose(keypoints.numpy()[check], truth[check], atol=1e-4)
    assert scores.shape == (12, 17)
