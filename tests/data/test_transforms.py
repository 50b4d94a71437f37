"""Crop geometry against the official construction, exact inverses, and the folded flip."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from posematch.data.boxes import affine_matrix, apply_affine, box_to_center_scale
from posematch.data.transforms import Augmentation, TopDownPipeline
from posematch.keypoints import COCO


def official_affine(center, scale, rot, output_size, inv=False):
    """The official get_affine_transform's 3-point construction with cv2, written for the test."""
    src_w = scale[0] * 200
    dst_w, dst_h = output_size
    r = math.radians(rot)
    src_dir = np.array([src_w * -0.5 * -math.sin(r), src_w * -0.5 * math.cos(r)])
    src = np.float32([center, center + src_dir, [0, 0]])
    dst = np.float32([[dst_w / 2, dst_h / 2], [dst_w / 2, dst_h / 2 - dst_w / 2], [0, 0]])
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.float32([-d[1], d[0]])
    return cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)


@pytest.mark.parametrize("rot", [0.0, 17.0, -45.0, 90.0])
def test_matrix_equals_the_official_construction(rot):
    center, scale = np.array([321.37, 200.5]), np.array([1.2, 1.6])
    ours = affine_matrix(center, scale, rot, (192, 256))
    np.testing.assert_allclose(ours, official_affine(center, scale, rot, (192, 256)), atol=5e-5)
    # The centre goes to the middle of the input, and scale[0] * 200 px onto its width.
    np.testing.assert_allclose(apply_affine(center, ours), [96, 128], atol=1e-9)


@pytest.mark.parametrize("udp", [False, True])
def test_inverse_round_trip_is_exact(rng, udp):
    pts = rng.uniform(0, 600, size=(50, 2))
    for rot in (0.0, 33.0, -70.0):
        fwd = affine_matrix(
            np.array([300.0, 210.0]), np.array([1.1, 1.5]), rot, (192, 256), udp=udp
        )
        inv = affine_matrix(
            np.array([300.0, 210.0]), np.array([1.1, 1.5]), rot, (192, 256), inverse=True, udp=udp
        )
        np.testing.assert_allclose(apply_affine(apply_affine(pts, fwd), inv), pts, atol=1e-9)


def test_udp_maps_the_box_edges_to_the_first_and_last_pixel_centres():
    center, scale = np.array([100.0, 100.0]), np.array([0.96, 1.28])  # 192 x 256 px box
    m = affine_matrix(center, scale, 0.0, (192, 256), udp=True)
    np.testing.assert_allclose(apply_affine(np.array([[4.0, -28.0], [196.0, 228.0]]), m),
                               [[0.0, 0.0], [191.0, 255.0]], atol=1e-9)  # fmt: skip


def test_box_to_center_scale_pads_the_short_side():
    c, s = box_to_center_scale((10, 20, 30, 100), aspect_ratio=0.75)
    np.testing.assert_allclose(c, [25, 70])
    np.testing.assert_allclose(s, [75 / 200 * 1.25, 100 / 200 * 1.25])
    c, s = box_to_center_scale((0, 0, 300, 100), aspect_ratio=0.75)
    np.testing.assert_allclose(s, [300 / 200 * 1.25, 400 / 200 * 1.25])


def test_training_crop_round_trip_and_folded_flip_equals_flipping_the_image(rng):
    image = rng.integers(0, 255, size=(300, 400, 3), dtype=np.uint8)
    kpts = rng.uniform(50, 250, size=(17, 2))
    vis = np.full(17, 2)
    pipe = TopDownPipeline((192, 256), COCO, train=True, color="bgr")
    seen_flip = seen_plain = False
    for seed in range(40):
        crop = pipe(image, kpts, vis, np.array([200.0, 150.0]), np.array([1.0, 1.3]),
                    np.random.default_rng(seed))  # fmt: skip
        back = apply_affine(crop.keypoints, crop.inverse)
        perm = COCO.flip_permutation() if crop.flipped else list(range(17))
        np.testing.assert_allclose(back, kpts[perm], atol=1e-9)
        frame = image[:, ::-1] if crop.flipped else image
        official = cv2.warpAffine(
            np.ascontiguousarray(frame),
            affine_matrix(crop.center, crop.scale, crop.rotation, (192, 256)),
            (192, 256),
            flags=cv2.INTER_LINEAR,
        )
        pixels = crop.image.permute(1, 2, 0).numpy().astype(np.float32)
        # cv2 quantises sample positions to 1/32 px, so composing the mirror into the matrix may
        # round a few samples differently: at most one grey level, on a tiny fraction of pixels.
        diff = np.abs(pixels - official.astype(np.float32))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.005
        seen_flip |= crop.flipped
        seen_plain |= not crop.flipped
    assert seen_flip and seen_plain


def test_augmentation_draws_follow_the_official_ranges():
    pipe = TopDownPipeline((192, 256), COCO, train=True, augmentation={"half_body_prob": 0.0})
    kpts, vis = np.full((17, 2), 100.0), np.full(17, 2)
    scales, rots = [], []
    for seed in range(400):
        crop = pipe(np.zeros((200, 200, 3), np.uint8), kpts, vis, np.array([100.0, 100.0]),
                    np.array([1.0, 1.0]), np.random.default_rng(seed))  # fmt: skip
        scales.append(crop.scale[0])
        rots.append(crop.rotation)
    scales, rots = np.array(scales), np.array(rots)
    assert scales.min() >= 0.65 - 1e-12 and scales.max() <= 1.35 + 1e-12
    assert np.abs(rots).max() <= 90 and 0.5 < np.mean(rots != 0) < 0.7


def test_half_body_crops_around_the_chosen_half(rng):
    pipe = TopDownPipeline((192, 256), COCO, train=True, augmentation=Augmentation(
        half_body_prob=1.0, scale_factor=0.0, rotation_prob=0.0, flip=False))  # fmt: skip
    kpts = np.zeros((17, 2))
    kpts[:11] = [[100, 50 + 5 * i] for i in range(11)]  # upper body, a vertical line
    kpts[11:] = [[100 + 10 * i, 300] for i in range(6)]  # lower body, a horizontal line
    centres = set()
    for seed in range(30):
        crop = pipe(np.zeros((400, 400, 3), np.uint8), kpts, np.full(17, 2),
                    np.array([100.0, 175.0]), np.array([2.0, 2.0]), np.random.default_rng(seed))  # fmt: skip
        centres.add(tuple(np.round(crop.center, 6)))
    assert centres == {(100.0, 75.0), (125.0, 300.0)}


def test_photometric_albumentations_runs_on_training_crops_only():
    import albumentations as A

    darken = A.Compose([A.RandomBrightnessContrast((-0.5, -0.5), (0.0, 0.0), p=1.0)])
    image = np.full((100, 100, 3), 200, np.uint8)
    args = (
        image,
        np.full((17, 2), 50.0),
        np.full(17, 2),
        np.array([50.0, 50.0]),
        np.array([0.4, 0.5]),
    )
    aug = Augmentation(scale_factor=0, rotation_prob=0, photometric=darken)
    train = TopDownPipeline((48, 64), COCO, train=True, augmentation=aug, color="bgr")
    plain = TopDownPipeline((48, 64), COCO, train=False, augmentation=aug, color="bgr")
    centre = (slice(None), slice(28, 36), slice(20, 28))
    assert (plain(*args).image[centre].numpy() == 200).all()
    # brightness -0.5 of the maximum: 200 - 0.5 * 255 = 72.5
    darkened = train(*args, np.random.default_rng(0)).image[centre].numpy().astype(float)
    assert np.allclose(darkened, 72.5, atol=1)


def test_bgr_and_rgb_channel_order():
    image = np.zeros((64, 48, 3), np.uint8)
    image[..., 0] = 255  # pure blue in BGR
    args = (image, np.zeros((17, 2)), np.zeros(17), np.array([23.5, 31.5]), np.array([0.24, 0.32]))
    rgb = TopDownPipeline((48, 64), COCO, color="rgb")(*args).image
    bgr = TopDownPipeline((48, 64), COCO, color="bgr")(*args).image
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, 64, 48)
    assert rgb[2, 32, 24] == 255 and rgb[0, 32, 24] == 0
    assert bgr[0, 32, 24] == 255 and bgr[2, 32, 24] == 0
    with pytest.raises(ValueError, match="color"):
        TopDownPipeline((48, 64), COCO, color="hsv")
    # An image already in RGB order (as the datasets decode it for an RGB network) is not swapped.
    rgb_image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    for color in ("rgb", "bgr"):
        pipeline = TopDownPipeline((48, 64), COCO, color=color)
        given_rgb = pipeline(rgb_image, *args[1:], channels="rgb").image
        assert torch.equal(given_rgb, pipeline(*args).image)
    with pytest.raises(ValueError, match="channels"):
        TopDownPipeline((48, 64), COCO)(*args, channels="hsv")


def test_codec_and_pipeline_must_agree_on_udp_and_input_size():
    from posematch.codecs.dots import DotCodec
    from posematch.data.coco import CocoKeypoints
    from tests.conftest import SHARED_DATA

    sample = SHARED_DATA / "coco_sample"
    ann, images = str(sample / "test_coco.json"), str(sample)

    def dataset(pipe_udp, codec_udp, codec_size=(192, 256)):
        pipe = TopDownPipeline((192, 256), COCO, train=False, udp=pipe_udp)
        return CocoKeypoints(ann, images, pipe, DotCodec(codec_size, (48, 64), udp=codec_udp))

    assert len(dataset(True, True)) == len(dataset(False, False)) > 0
    for pipe_udp, codec_udp in ((True, False), (False, True)):
        with pytest.raises(ValueError, match=f"data.udp: the pipeline crops with udp={pipe_udp}"):
            dataset(pipe_udp, codec_udp)
    with pytest.raises(ValueError, match=r"data.input_size: the pipeline crops \[192, 256\]"):
        dataset(False, False, codec_size=(96, 128))


def test_data_udp_sets_the_crops_and_the_codec_together():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from tests.conftest import REPO

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        extra = {"train": ["run_dir=/tmp/x"], "evaluate": ["checkpoint=x"],
                 "infer": ["checkpoint=x", "input=x"]}  # fmt: skip
        for name, overrides in extra.items():
            cfg = compose(name, overrides=["data.udp=true", *overrides])
            codec = instantiate(cfg.codec)
            assert codec.geometry.udp is True, name
            for part in ("val", "train") if name == "train" else ("val",):
                assert cfg.data[part].pipeline.udp is True, (name, part)


@pytest.mark.parametrize("keep_bytes", [None, 0])  # the kept 4-channel block, and cv2's own
@pytest.mark.parametrize(("channels", "color"), [("bgr", "bgr"), ("bgr", "rgb"), ("rgb", "rgb")])
def test_crop_equals_a_three_channel_warp_bit_for_bit(
    rng, monkeypatch, keep_bytes, channels, color
):
    # The pipeline warps a 4-channel copy (OpenCV's vectorised path); the colour channels must be
    # exactly what cv2.warpAffine of the 3-channel image gives, in the network's channel order.
    from posematch.data import transforms

    if keep_bytes is not None:
        monkeypatch.setattr(transforms, "_KEEP_BYTES", keep_bytes)
    pipe = TopDownPipeline((192, 256), COCO, train=True, augmentation={"flip": False}, color=color)
    kpts, vis = rng.uniform(50, 250, size=(17, 2)), np.full(17, 2)
    for seed, shape in enumerate([(300, 400, 3), (180, 120, 3), (300, 400, 3)]):
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        crop = pipe(image, kpts, vis, np.array([200.0, 150.0]), np.array([1.0, 1.3]),
                    np.random.default_rng(seed), channels)  # fmt: skip
        matrix = affine_matrix(crop.center, crop.scale, crop.rotation, (192, 256))
        official = cv2.warpAffine(image, matrix, (192, 256), flags=cv2.INTER_LINEAR)
        if channels != color:
            official = official[..., ::-1]
        np.testing.assert_array_equal(crop.image.permute(1, 2, 0).numpy(), official)


def test_augmentation_from_a_config_mapping_and_unknown_keys_named():
    # A config gives the training draws as a mapping (data.train.pipeline.augmentation); a key
    # that is not an option is named instead of being dropped.
    pipe = TopDownPipeline((48, 64), COCO, train=True, augmentation={"rotation_factor": 15.0})
    assert pipe.augmentation == Augmentation(rotation_factor=15.0)
    assert TopDownPipeline((48, 64), COCO).augmentation == Augmentation()  # the official recipe
    with pytest.raises(ValueError, match=r"augmentation\.rotation: not an augmentation option"):
        TopDownPipeline((48, 64), COCO, train=True, augmentation={"rotation": 15.0})
