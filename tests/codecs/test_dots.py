"""Demanders and the dot codec against the paper's definitions, worked by hand or in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posematch.codecs.decoders import decode_window
from posematch.codecs.dots import DotCodec
from posematch.demanders import make_demanders
from tests.conftest import demanders_reference


def test_subpixel_masses_hand_worked():
    pos, masses = make_demanders(torch.tensor([2.25, 3.5], dtype=torch.float64), "subpixel")
    assert pos.tolist() == [[2, 3], [3, 3], [2, 4], [3, 4]]
    assert masses.tolist() == [0.375, 0.125, 0.375, 0.125]


def test_subpixel_matches_definition_and_reproduces_the_dot(rng):
    dots = rng.uniform(-2, 300, size=(500, 2))
    pos, masses = make_demanders(torch.tensor(dots), "subpixel")
    for i in range(0, 500, 50):
        ref_pos, ref_masses = demanders_reference(dots[i], "subpixel")
        np.testing.assert_array_equal(pos[i].numpy(), ref_pos)
        np.testing.assert_allclose(masses[i].numpy(), ref_masses, rtol=0, atol=1e-15)
    np.testing.assert_allclose(masses.sum(-1).numpy(), 1.0, rtol=0, atol=1e-14)
    mean = (pos * masses.unsqueeze(-1)).sum(-2).numpy()
    np.testing.assert_allclose(mean, dots, rtol=0, atol=1e-12)


@pytest.mark.parametrize("gap", [4, 8, 16, 64])
def test_subpixel_mean_is_exact_at_any_resolution_gap(gap):
    # Dots on a 1/gap grid (dyadic): the weighted mean is exact, bit for bit.
    steps = torch.arange(0, 5 * gap, dtype=torch.float64) / gap
    dots = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), -1).reshape(-1, 2)
    pos, masses = make_demanders(dots, "subpixel")
    assert torch.equal((pos * masses.unsqueeze(-1)).sum(-2), dots)


def test_naive_is_the_centre_of_the_pixel_holding_the_dot():
    dots = torch.tensor([[2.49, 0.0], [2.5, -0.5], [-0.51, 3.7]])
    pos, masses = make_demanders(dots, "naive")
    assert pos.squeeze(-2).tolist() == [[2, 0], [3, 0], [-1, 4]]
    assert masses.tolist() == [[1.0], [1.0], [1.0]]


def test_encode_maps_to_heatmap_pixels_and_weights_outside_and_unlabelled_zero():
    codec = DotCodec(input_size=(192, 256), heatmap_size=(48, 64))
    kpts = torch.tensor([[10.0, 20.0], [-2.0, 5.0], [191.9, 255.0], [50.0, 50.0], [-1.9, 0.0]])
    vis = torch.tensor([2, 2, 1, 0, 2])
    t = codec.encode(kpts, vis)
    torch.testing.assert_close(t.keypoints[0], torch.tensor([2.5, 5.0]))
    # -2 px / 4 = -0.5 lies in pixel 0; 191.9 / 4 = 47.975 >= 47.5 lies in no pixel.
    assert t.weights.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]


def test_udp_maps_first_and_last_pixel_centres_onto_each_other():
    codec = DotCodec(input_size=(192, 256), heatmap_size=(48, 64), udp=True)
    t = codec.encode(torch.tensor([[0.0, 0.0], [191.0, 255.0]]), torch.tensor([1, 1]))
    torch.testing.assert_close(t.keypoints, torch.tensor([[0.0, 0.0], [47.0, 63.0]]))


def test_window_decoding_of_painted_demanders_returns_the_dot(rng):
    h, w = 64, 48
    dots = torch.tensor(rng.uniform(0, 1, size=(3, 5, 2)) * [w - 1.001, h - 1.001])
    pos, masses = make_demanders(dots, "subpixel")
    heat = torch.zeros(3, 5, h, w, dtype=torch.float64)
    for b in range(3):
        for k in range(5):
            for (x, y), m in zip(pos[b, k].long().tolist(), masses[b, k].tolist(), strict=True):
                heat[b, k, y, x] += m
    decoded = DotCodec(heatmap_size=(w, h)).decode(heat)
    torch.testing.assert_close(decoded.keypoints, dots, rtol=0, atol=1e-12)


def test_window_picks_the_heaviest_window_and_weights_its_centres():
    heat = torch.zeros(1, 1, 4, 5)
    heat[0, 0, 0, 0] = 0.9  # the largest pixel, but its windows are lighter
    heat[0, 0, 2, 3] = 0.6
    heat[0, 0, 2, 4] = 0.2
    heat[0, 0, 3, 3] = 0.2
    out = decode_window(heat)
    # window rows 2-3, cols 3-4: x = 3 + 0.2/1.0, y = 2 + 0.2/1.0; score is the raw maximum.
    torch.testing.assert_close(out.keypoints, torch.tensor([[[3.2, 2.2]]]))
    assert out.scores.item() == pytest.approx(0.9)


def test_window_on_degenerate_heatmaps():
    one = decode_window(torch.full((1, 1, 1, 1), 2.0))
    assert one.keypoints.tolist() == [[[0.0, 0.0]]]
    row = decode_window(torch.tensor([[[[0.0, 1.0, 3.0]]]]))
    assert row.keypoints.tolist() == [[[1.75, 0.0]]]
    empty = decode_window(-torch.ones(1, 1, 3, 3))
    assert empty.keypoints.tolist() == [[[0.5, 0.5]]]
    assert empty.scores.item() == -1.0


def test_bad_codec_options_name_the_option():
    with pytest.raises(ValueError, match="heatmap_size"):
        DotCodec(heatmap_size=(0, 64))
    with pytest.raises(ValueError, match="decoder"):
        DotCodec(decoder="soft-argmax")


def test_numpy_keypoints_give_the_same_targets_as_torch_bit_for_bit():

    codec = DotCodec((192, 256), (48, 64))
    rng = np.random.default_rng(0)
    kpts = rng.uniform(-20, 280, size=(17, 2)).astype(np.float32)
    vis = rng.integers(0, 3, size=17)
    a = codec.encode(kpts, vis)
    b = codec.encode(torch.from_numpy(kpts), torch.from_numpy(vis))
    assert a.keypoints.dtype == a.weights.dtype == torch.float32
    assert torch.equal(a.keypoints, b.keypoints) and torch.equal(a.weights, b.weights)
    assert 0 < a.weights.sum() < 17  # some joints outside or unlabelled: the test bites
