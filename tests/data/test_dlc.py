"""DeepLabCut projects as a dataset (issue 12): hand-written label files with known values, every
malformed case naming the file, line and column, the split, and the two real projects in
../shared/data checked against their CSV text."""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest

from posematch.codecs.dots import DotCodec
from posematch.data.dlc import DlcKeypoints, image_size
from posematch.data.topdown import BadRecordError
from posematch.data.transforms import TopDownPipeline
from posematch.dlc_project import read_project, split_indices
from posematch.keypoints import KeypointSpec, spec
from tests.conftest import SHARED_DATA
from tests.dlc_files import PARTS, write_frame, write_project

OPENFIELD = SHARED_DATA / "dlc_openfield"
MIRROR = SHARED_DATA / "lightning_pose_mirror_mouse"

CSV = """\
scorer,Me,Me,Me,Me,Me,Me,Me,Me
bodyparts,snout,snout,leftear,leftear,rightear,rightear,tailbase,tailbase
coords,x,y,x,y,x,y,x,y
labeled-data/v1/img0.png,10.5,20.25,12,22,8,22,40.125,30
labeled-data/v1/img1.png,30,40,,,28,41,50,35.5
labeled-data/v1/img2.png,5,6,7,8,9,10,11,12
"""
# The values above, frame by frame (NaN = the empty cells of img1's leftear).
WRITTEN = {
    "labeled-data/v1/img0.png": [[10.5, 20.25], [12, 22], [8, 22], [40.125, 30]],
    "labeled-data/v1/img1.png": [[30, 40], [np.nan, np.nan], [28, 41], [50, 35.5]],
    "labeled-data/v1/img2.png": [[5, 6], [7, 8], [9, 10], [11, 12]],
}
SPEC4 = spec("test", names=list(PARTS), flip_pairs=[[1, 2]])


def dataset(project, split="train", size=(64, 64), spec_=SPEC4, train=False, **kw) -> DlcKeypoints:
    kw.setdefault("train_fraction", 1.0 if split == "train" else 0.5)
    pipeline = TopDownPipeline(size, spec_, train=train)
    codec = DotCodec(size, (size[0] // 4, size[1] // 4))
    return DlcKeypoints(str(project), split, pipeline, codec, spec_, **kw)


def inverse_map(points: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """(K, 2) input-crop px -> image px through the (2, 3) matrix, written out here."""
    return points @ inverse[:, :2].T + inverse[:, 2]


def csv_values(path) -> dict[str, list[list[float]]]:
    """A single-index label file read as plain text (no quoting in these files): path -> (K, 2)."""
    lines = path.read_text().splitlines()[3:]
    out = {}
    for line in lines:
        cells = line.split(",")
        vals = [float(c) if c else np.nan for c in cells[1:]]
        out[cells[0]] = np.array(vals).reshape(-1, 2)
    return out


# -- parsing ---------------------------------------------------------------------------------------


def test_parsed_coordinates_equal_the_written_ones_and_empty_cells_are_unlabelled(tmp_path):
    write_project(tmp_path, CSV)
    project = read_project(str(tmp_path))
    assert project.bodyparts == PARTS
    assert [f.path for f in project.frames] == sorted(WRITTEN)
    for frame in project.frames:
        np.testing.assert_array_equal(frame.keypoints, WRITTEN[frame.path])
    ds = dataset(tmp_path)
    assert [inst.image_id for inst in ds.instances] == [0, 1, 2]
    img1 = ds.instances[1]
    assert img1.visible.tolist() == [2, 0, 2, 2]
    assert img1.keypoints[1].tolist() == [0.0, 0.0]  # an unlabelled part: zeros with visible 0
    assert img1.keypoints[3].tolist() == [50.0, 35.5]
    assert all(inst.visible.tolist() == [2, 2, 2, 2] for inst in (ds.instances[0], ds.instances[2]))


def test_three_index_columns_and_the_multi_animal_header_read_the_same_values(tmp_path):
    lines = CSV.splitlines()
    three = [
        "scorer,,," + lines[0].split(",", 1)[1],
        "bodyparts,,," + lines[1].split(",", 1)[1],
        "coords,,," + lines[2].split(",", 1)[1],
    ] + [row.replace("labeled-data/v1/", "labeled-data,v1,") for row in lines[3:]]
    write_project(tmp_path / "three", "\n".join(three) + "\n")
    multi = [lines[0], "individuals" + ",mouse1" * 8, *lines[1:]]
    write_project(tmp_path / "multi", "\n".join(multi) + "\n")
    for name in ("three", "multi"):
        project = read_project(str(tmp_path / name))
        assert [f.path for f in project.frames] == sorted(WRITTEN), name
        for frame in project.frames:
            np.testing.assert_array_equal(frame.keypoints, WRITTEN[frame.path])


def test_two_individuals_is_a_clear_single_animal_error(tmp_path):
    lines = CSV.splitlines()
    multi = [lines[0], "individuals" + ",mouse1" * 4 + ",mouse2" * 4, *lines[1:]]
    path = write_project(tmp_path, "\n".join(multi) + "\n")
    with pytest.raises(BadRecordError) as err:
        dataset(tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "line 2, column 6" in msg and "single-animal" in msg


@pytest.mark.parametrize(
    ("old", "new", "line", "column", "words"),
    [
        ("scorer,Me", "scorers,Me", 1, 1, "'scorer'"),
        ("coords,x,y,x,y,x,y,x,y\n", "", 3, 1, "'coords'"),
        ("coords,x,y,x,y", "coords,x,y,x,likelihood", 3, 5, "'likelihood'"),
        ("tailbase,tailbase\n", "tail,tail\n", 2, 8, "not in config.yaml"),
        ("img2.png", "img9.png", 6, 1, "does not exist"),
        ("40.125", "4o.125", 4, 8, "not a number"),
        ("50,35.5", "inf,35.5", 5, 8, "not a finite number"),
        ("28,41", "28,", 5, 7, "rightear y"),
        ("28,41", ",41", 5, 6, "rightear x"),
        ("img2.png,5,6,7,8,9,10,11,12", "img0.png,5,6,7,8,9,10,11,12", 6, 1, "labelled twice"),
        ("11,12\n", "11\n", 6, 9, "8 cells, the header has 9"),
    ],
    ids=[
        "first-header",
        "missing-coords-row",
        "coords-not-xy",
        "unknown-bodypart",
        "missing-frame",
        "non-numeric",
        "infinite",
        "x-without-y",
        "y-without-x",
        "labelled-twice",
        "short-row",
    ],
)
def test_each_bad_csv_names_the_file_line_and_column(tmp_path, old, new, line, column, words):
    assert old in CSV
    write_project(tmp_path, CSV)  # every frame of the good file exists
    path = tmp_path / "labeled-data/v1/CollectedData_Me.csv"
    path.write_text(CSV.replace(old, new, 1))
    with pytest.raises(BadRecordError) as err:
        dataset(tmp_path)
    msg = str(err.value)
    assert str(path) in msg, msg
    assert f"line {line}, column {column}" in msg, msg
    assert words in msg, msg


def test_a_frame_labelled_in_two_files_is_an_error_naming_both(tmp_path):
    write_project(tmp_path, CSV)
    other = "\n".join([*CSV.splitlines()[:3], CSV.splitlines()[4]]) + "\n"  # img1 again
    second = write_project(tmp_path, other, csv_path="CollectedData.csv")
    with pytest.raises(BadRecordError, match="labelled twice") as err:
        dataset(tmp_path)
    assert str(second) in str(err.value) and "CollectedData_Me.csv: line 5" in str(err.value)


def test_rows_without_a_labelled_part_are_skipped_and_counted(tmp_path, caplog):
    text = CSV + "labeled-data/v1/img3.png,,,,,,,,\n"
    write_project(tmp_path, text)
    with caplog.at_level(logging.INFO):
        project = read_project(str(tmp_path))
    assert len(project.frames) == 3 and project.unlabelled_rows == 1
    assert "skipped 1 rows with no labelled part" in caplog.text


def test_skip_bad_skips_and_counts_a_malformed_row(tmp_path):
    write_project(tmp_path, CSV.replace("40.125", "abc"))
    with pytest.raises(BadRecordError, match="line 4, column 8"):
        dataset(tmp_path)
    ds = dataset(tmp_path, skip_bad=True)
    assert len(ds) == 2 and ds.skipped() == 1
    assert "line 4, column 8" in ds.skipped_records()[0]


def test_body_parts_come_from_the_csv_header_without_a_config(tmp_path):
    text = CSV.replace("labeled-data/v1/", "labeled-data/")
    write_project(tmp_path, text, csv_path="CollectedData.csv", parts=None)
    project = read_project(str(tmp_path))
    assert project.bodyparts == PARTS and project.pcutoff is None
    assert project.frames[1].path == "labeled-data/img1.png"


def test_spec_names_must_be_the_projects_body_parts(tmp_path):
    write_project(tmp_path, CSV)
    wrong = spec("test", names=["snout", "rightear", "leftear", "tailbase"])
    with pytest.raises(ValueError, match=r"data\.spec\.names"):
        dataset(tmp_path, spec_=wrong)


# -- split -----------------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_95_5():
    for n, n_test in ((116, 6), (40, 2), (20, 1), (100, 5)):
        train, test = split_indices(n, "train"), split_indices(n, "test")
        assert (len(train), len(test)) == (n - n_test, n_test)
        assert not set(train) & set(test) and sorted([*train, *test]) == list(range(n))
        np.testing.assert_array_equal(split_indices(n, "test"), test)  # deterministic
    assert not np.array_equal(split_indices(116, "test", split_seed=1), split_indices(116, "test"))
    assert len(split_indices(100, "train", train_fraction=0.29)) == 29  # not 28 (float rounding)


def test_k_folds_partition_the_frames():
    n, k = 23, 5
    tests = [split_indices(n, "test", num_folds=k, fold=f) for f in range(k)]
    assert sorted(np.concatenate(tests).tolist()) == list(range(n))  # disjoint, complete
    assert {len(t) for t in tests} <= {4, 5}
    for f, test in enumerate(tests):
        train = split_indices(n, "train", num_folds=k, fold=f)
        assert sorted([*train, *test]) == list(range(n)) and not set(train) & set(test)
    with pytest.raises(ValueError, match="fold=5"):
        split_indices(n, "test", num_folds=k, fold=5)
    with pytest.raises(ValueError, match="num_folds=1"):
        split_indices(n, "test", num_folds=1)


def test_the_split_does_not_depend_on_the_order_of_rows_or_files(tmp_path):
    header = CSV.splitlines()[:3]
    rows = [f"labeled-data/v{v}/img{i}.png,{i},{v},3,4,5,6,7,8" for v in (1, 2) for i in range(10)]
    a = [r for r in rows if "/v1/" in r], [r for r in rows if "/v2/" in r]
    write_project(tmp_path / "a", "\n".join([*header, *a[0]]) + "\n")
    write_project(
        tmp_path / "a", "\n".join([*header, *a[1]]) + "\n", "labeled-data/v2/CollectedData_Me.csv"
    )
    # b: the same frames, rows reversed, and v2's rows in v1's file and the other way round.
    write_project(tmp_path / "b", "\n".join([*header, *a[1][::-1]]) + "\n")
    write_project(
        tmp_path / "b",
        "\n".join([*header, *a[0][::-1]]) + "\n",
        "labeled-data/v2/CollectedData_Me.csv",
    )
    for split in ("train", "test"):
        paths = [
            [
                os.path.relpath(inst.image_path, tmp_path / root)
                for inst in dataset(tmp_path / root, split, train_fraction=0.7).instances
            ]
            for root in ("a", "b")
        ]
        assert paths[0] == paths[1] and len(paths[0]) == (14 if split == "train" else 6)


# -- crops -----------------------------------------------------------------------------------------


def test_box_crop_by_hand_and_min_box_size_for_a_single_point(tmp_path):
    text = CSV.replace(
        "labeled-data/v1/img2.png,5,6,7,8,9,10,11,12", "labeled-data/v1/img2.png,5,6,,,,,,"
    )
    write_project(tmp_path, text)
    ds = dataset(tmp_path, size=(48, 64))  # aspect ratio 0.75
    img0, _, img2 = ds.instances
    # img0: x 8 .. 40.125, y 20.25 .. 30 -> w 32.125 (>= 32), h 9.75 -> 32 (min_box_size); centre of
    # the labelled box; h grows to w / 0.75; padding 1.25.
    np.testing.assert_allclose(img0.center, [8 + 32.125 / 2, 20.25 + 9.75 / 2])
    np.testing.assert_allclose(img0.scale, [32.125 * 1.25 / 200, 32.125 / 0.75 * 1.25 / 200])
    assert img0.area == pytest.approx(np.prod(img0.scale * 200))
    # img2: one point: a 32 x 32 box about it, grown to 32 x 42.67.
    np.testing.assert_allclose(img2.center, [5, 6])
    np.testing.assert_allclose(img2.scale, [32 * 1.25 / 200, 32 / 0.75 * 1.25 / 200])
    assert img2.visible.tolist() == [2, 0, 0, 0]


def test_image_size_from_the_header_of_png_and_jpeg_files(tmp_path):
    for ext in (".png", ".jpg"):
        path = write_frame(tmp_path / f"f{ext}", 37, 21, ext)
        assert image_size(str(path)) == (37, 21)
        assert cv2.imread(str(path)).shape[:2] == (21, 37)
    with pytest.raises(BadRecordError, match=r"nope\.png"):
        image_size(str(tmp_path / "nope.png"))


def test_frame_crop_is_the_whole_frame(tmp_path):
    write_project(tmp_path, CSV, size=(80, 40))
    inst = dataset(tmp_path, crop="frame").instances[0]
    np.testing.assert_allclose(inst.center, [39.5, 19.5])
    np.testing.assert_allclose(inst.scale, [80 / 200, 80 / 200])  # square input: h grows to 80


@pytest.mark.parametrize("crop", ["box", "frame"])
def test_items_map_back_to_the_csv_coordinates_through_the_inverse(tmp_path, crop):
    write_project(tmp_path, CSV)
    ds = dataset(tmp_path, size=(48, 64), crop=crop)
    for i, inst in enumerate(ds.instances):
        sample = ds[i]
        back = inverse_map(sample.keypoints.numpy().astype(np.float64), sample.inverse)
        want = np.array(WRITTEN[inst.image_path.split(str(tmp_path) + "/")[1]], dtype=np.float64)
        labelled = ~np.isnan(want).any(axis=1)
        np.testing.assert_allclose(back[labelled], want[labelled], rtol=0, atol=1e-3)
        assert sample.target_weight.numpy()[~labelled].tolist() == [0.0] * int((~labelled).sum())


# -- the real projects -----------------------------------------------------------------------------

OPENFIELD_SPEC = spec("openfield", names=list(PARTS), flip_pairs=[[1, 2]])
MIRROR_PARTS = (
    "paw1LH_top", "paw2LF_top", "paw3RF_top", "paw4RH_top", "tailBase_top", "tailMid_top",
    "nose_top", "obs_top", "paw1LH_bot", "paw2LF_bot", "paw3RF_bot", "paw4RH_bot",
    "tailBase_bot", "tailMid_bot", "nose_bot", "obsHigh_bot", "obsLow_bot",
)  # fmt: skip
MIRROR_SPEC = KeypointSpec("mirror", MIRROR_PARTS, ((0, 3), (1, 2), (8, 11), (9, 10)))


def test_the_openfield_project_loads_116_frames_of_4_parts_as_in_its_csv():
    project = read_project(str(OPENFIELD))
    assert len(project.frames) == 116 and project.bodyparts == PARTS
    assert project.pcutoff == 0.4
    text = csv_values(OPENFIELD / "labeled-data/m4s1/CollectedData_Pranav.csv")
    assert len(text) == 116
    for frame in project.frames:
        np.testing.assert_array_equal(frame.keypoints, text[frame.path])
    # Two values read off the file by eye: img0000's snout and img0001's tailbase.
    assert project.frames[0].keypoints[0].tolist() == [21.521, 265.428]
    assert project.frames[1].keypoints[3].tolist() == [95.821, 221.361]
    train = dataset(OPENFIELD, "train", (192, 192), OPENFIELD_SPEC, train_fraction=0.95)
    test = dataset(OPENFIELD, "test", (192, 192), OPENFIELD_SPEC, train_fraction=0.95)
    train_ids = {i.image_id for i in train.instances}
    test_ids = {i.image_id for i in test.instances}
    assert (len(train_ids), len(test_ids)) == (110, 6) and not train_ids & test_ids
    assert train_ids | test_ids == set(range(116))


def test_the_openfield_items_map_back_to_the_csv_within_1e_3_px():
    ds = dataset(OPENFIELD, "test", (192, 192), OPENFIELD_SPEC, train_fraction=0.95)
    text = csv_values(OPENFIELD / "labeled-data/m4s1/CollectedData_Pranav.csv")
    for i, inst in enumerate(ds.instances):
        sample = ds[i]
        assert sample.image_id == inst.image_id
        back = inverse_map(sample.keypoints.numpy().astype(np.float64), sample.inverse)
        rel = inst.image_path.split(str(OPENFIELD) + "/")[1]
        np.testing.assert_allclose(back, text[rel], rtol=0, atol=1e-3)


def test_the_mirror_mouse_project_loads_its_labelled_rows_with_nan_for_empty_cells():
    project = read_project(str(MIRROR))
    assert project.bodyparts == MIRROR_PARTS and project.pcutoff is None
    text = csv_values(MIRROR / "CollectedData.csv")
    assert len(project.frames) == len(text) == 90
    empty = sum(
        line.split(",")[1:].count("")
        for line in (MIRROR / "CollectedData.csv").read_text().splitlines()[3:]
    )
    assert sum(int(np.isnan(f.keypoints).sum()) for f in project.frames) == empty > 0
    for frame in project.frames:
        np.testing.assert_array_equal(frame.keypoints, text[frame.path])
    img01 = next(f for f in project.frames if f.path == "labeled-data/img01.png")
    assert np.isnan(img01.keypoints[4]).all()  # tailBase_top: ",," in the file
    assert img01.keypoints[6].tolist() == [390.75, 24.25]  # nose_top
    ds = dataset(MIRROR, "test", (256, 256), MIRROR_SPEC, train_fraction=0.95, crop="frame")
    assert len(ds) == 5
    for i, inst in enumerate(ds.instances):
        want = text[inst.image_path.split(str(MIRROR) + "/")[1]]
        labelled = ~np.isnan(want).any(axis=1)
        assert inst.visible.tolist() == np.where(labelled, 2, 0).tolist()
        np.testing.assert_allclose(inst.center, [(396 - 1) / 2, (406 - 1) / 2])
        sample = ds[i]
        back = inverse_map(sample.keypoints.numpy().astype(np.float64), sample.inverse)
        np.testing.assert_allclose(back[labelled], want[labelled], rtol=0, atol=1e-3)


# -- configs ---------------------------------------------------------------------------------------


def _data_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from tests.conftest import REPO

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*overrides, "run_dir=/tmp/unused"])


@pytest.mark.parametrize(
    ("name", "frames", "n_test"), [("dlc_openfield", 116, 6), ("mirror_mouse", 90, 5)]
)
def test_the_project_configs_build_their_splits_and_evaluator(name, frames, n_test, monkeypatch):
    from hydra.utils import instantiate

    monkeypatch.setenv("POSEMATCH_SHARED_DATA", str(SHARED_DATA))
    cfg = _data_config([f"data={name}"])
    spec_ = instantiate(cfg.data.spec)
    assert cfg.data.num_keypoints == spec_.num_keypoints == len(spec_.sigmas)
    train, val = instantiate(cfg.data.train), instantiate(cfg.data.val)
    evaluator = instantiate(cfg.data.evaluator)
    assert len(train) + len(val) == frames and len(val) == n_test
    assert [i.image_id for i in val.instances] == evaluator.frame_ids.tolist()
    assert list(val[0].image.shape[1:]) == list(cfg.data.input_size)[::-1]


def test_the_generic_config_takes_a_project_from_the_command_line(tmp_path):
    from hydra.utils import instantiate
    from omegaconf.errors import MissingMandatoryValue

    write_project(tmp_path, CSV)
    with pytest.raises(MissingMandatoryValue, match=r"data\.val\.project"):
        instantiate(_data_config(["data=dlc"]).data.val)
    cfg = _data_config(
        [
            "data=dlc",
            f"data.root={tmp_path}",
            "data.num_keypoints=4",
            f"data.spec.names=[{','.join(PARTS)}]",
            "data.train_fraction=0.5",
        ]
    )
    assert len(instantiate(cfg.data.val)) == 2 and "AP" not in _perfect(cfg)


def _perfect(cfg) -> dict:
    from hydra.utils import instantiate

    ev = instantiate(cfg.data.evaluator, output_dir=None)
    gt = np.nan_to_num(ev.gt)
    ev.add(ev.frame_ids, gt, np.ones(gt.shape[:2]))
    return ev.evaluate()


def test_an_empty_split_is_a_clear_error(tmp_path):
    write_project(tmp_path, CSV)
    with pytest.raises(ValueError, match="split 'test' has no frames"):
        dataset(tmp_path, "test", train_fraction=1.0)


def test_windows_separators_in_image_paths_are_read_as_slashes(tmp_path):
    path = write_project(tmp_path, CSV)
    path.write_text(CSV.replace("labeled-data/v1/", "labeled-data\\v1\\"))
    project = read_project(str(tmp_path))
    assert [f.path for f in project.frames] == sorted(WRITTEN)
