"""The typed doors of ``posematch.types``: ``Batch.collate`` and ``Predictions``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posematch.types import Batch, Predictions, Sample


def sample(index: int, valid: bool = True) -> Sample:
    return Sample(
        image=torch.full((3, 4, 2), index, dtype=torch.uint8),
        target=torch.full((5, 2), float(index)),
        target_weight=torch.ones(5),
        keypoints=torch.zeros(5, 2),
        image_id=100 + index,
        center=np.array([1.5, 2.5]),
        scale=np.array([0.25, 0.5]),
        rotation=30.0 * index,
        flipped=bool(index % 2),
        inverse=np.arange(6, dtype=np.float64).reshape(2, 3) + index,
        box_score=0.5,
        area=12.0,
        index=index,
        valid=valid,
    )


def test_collate_stacks_every_field_with_default_collate_types():
    batch = Batch.collate([sample(0), sample(1, valid=False), sample(2)])
    assert len(batch) == 3
    assert batch.image.shape == (3, 3, 4, 2) and batch.image.dtype == torch.uint8
    assert batch.image[:, 0, 0, 0].tolist() == [0, 1, 2]
    assert batch.target.shape == (3, 5, 2)
    assert batch.image_id.dtype == torch.int64 and batch.image_id.tolist() == [100, 101, 102]
    assert batch.box_score.dtype == torch.float64 and batch.area.tolist() == [12.0] * 3
    assert batch.inverse.dtype == torch.float64 and batch.inverse[2, 1, 2].item() == 7.0
    assert batch.rotation.tolist() == [0.0, 30.0, 60.0]
    assert batch.flipped.tolist() == [False, True, False]
    assert batch.valid.dtype == torch.bool and batch.valid.tolist() == [True, False, True]


def test_collate_through_a_loader_with_workers_and_pinned_memory():
    data = [sample(i) for i in range(4)]
    loader = torch.utils.data.DataLoader(
        data, batch_size=2, num_workers=1, collate_fn=Batch.collate
    )
    assert [b.index.tolist() for b in loader] == [[0, 1], [2, 3]]
    if torch.cuda.is_available():  # pin_memory needs an accelerator
        assert Batch.collate(data).pin_memory().image.is_pinned()


def predictions(rows: list[int]) -> Predictions:
    n = len(rows)
    r = np.array(rows)
    return Predictions(
        index=r, image_id=r + 100, keypoints=np.zeros((n, 3, 2)) + r[:, None, None],
        keypoint_scores=np.ones((n, 3), np.float32), box_score=np.ones(n), area=r * 2.0,
        valid=r != 2, top_mass=np.zeros((n, 3), np.float32),
        window_mass=np.zeros((n, 3), np.float32),
    )  # fmt: skip


def test_predictions_concatenate_and_take_keep_rows_together():
    merged = Predictions.concatenate([predictions([3, 1]), predictions([0, 2])])
    assert len(merged) == 4 and merged.index.tolist() == [3, 1, 0, 2]
    ordered = merged.take(np.argsort(merged.index))
    assert ordered.index.tolist() == [0, 1, 2, 3]
    assert ordered.image_id.tolist() == [100, 101, 102, 103]
    assert ordered.keypoints[:, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert ordered.area.tolist() == [0.0, 2.0, 4.0, 6.0]
    assert ordered.valid.tolist() == [True, True, False, True]
    assert ordered.take(ordered.valid).index.tolist() == [0, 1, 3]
    with pytest.raises(ValueError, match="no parts"):
        Predictions.concatenate([])
