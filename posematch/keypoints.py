"""Keypoint descriptions: joint names, left/right flip pairs and OKS sigmas per dataset.

A dataset is described by data, not by code: ``KeypointSpec`` holds everything the transforms
(flip pairing), the codecs (number of joints) and the COCO-style evaluation (OKS sigmas) need.
COCO: Lin et al. 2014 and the ``cocoapi`` keypoint sigmas; MPII: Andriluka et al. 2014, joint order of
the official HRNet / SimpleBaseline ``annot/*.json``. A user adds a dataset with a new spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast


@dataclass(frozen=True)
class KeypointSpec:
    """Description of a keypoint layout.

    Args:
        name: dataset name.
        names: joint names, in annotation order (K entries).
        flip_pairs: pairs of joint indices swapped by a horizontal flip.
        sigmas: per-joint OKS sigmas (K entries; empty when the dataset has no OKS metric).
        skeleton: pairs of joint indices drawn as limbs (0-based).
        upper_body: joint indices of the upper body, used by the half-body augmentation.
    """

    name: str
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    upper_body: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        k = len(self.names)
        if len(set(self.names)) != k:
            raise ValueError(f"KeypointSpec {self.name!r}: joint names must be unique")
        seen: set[int] = set()
        for pair in self.flip_pairs:
            if len(pair) != 2 or pair[0] == pair[1] or not all(0 <= j < k for j in pair):
                raise ValueError(f"KeypointSpec {self.name!r}: bad flip pair {pair!r} for K={k}")
            if seen & set(pair):
                raise ValueError(f"KeypointSpec {self.name!r}: joint repeated in flip pairs")
            seen.update(pair)
        if self.sigmas and len(self.sigmas) != k:
            raise ValueError(f"KeypointSpec {self.name!r}: {len(self.sigmas)} sigmas for K={k}")
        for limb in self.skeleton:
            if len(limb) != 2 or not all(0 <= j < k for j in limb):
                raise ValueError(f"KeypointSpec {self.name!r}: bad skeleton link {limb!r}")
        if not all(0 <= j < k for j in self.upper_body):
            raise ValueError(f"KeypointSpec {self.name!r}: bad upper_body index")

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def flip_permutation(self) -> list[int]:
        """Index map that reorders joints after a horizontal flip (left <-> right)."""
        perm = list(range(self.num_keypoints))
        for i, j in self.flip_pairs:
            perm[i], perm[j] = j, i
        return perm


COCO = KeypointSpec(
    name="coco",
    names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ),
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
        (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    upper_body=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
)  # fmt: skip

MPII = KeypointSpec(
    name="mpii",
    names=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
        "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder",
        "l_elbow", "l_wrist",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    skeleton=(
        (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
        (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15),
    ),
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),
)  # fmt: skip

BUILT_IN = {"coco": COCO, "mpii": MPII}


def spec(
    name: str,
    names: Sequence[str] | None = None,
    flip_pairs: Sequence[Sequence[int]] = (),
    sigmas: Sequence[float] = (),
    skeleton: Sequence[Sequence[int]] = (),
    upper_body: Sequence[int] = (),
) -> KeypointSpec:
    """The built-in spec ``name`` (``coco``, ``mpii``) when no ``names`` are given, else a new one.

    The config entry point (``data.spec: {_target_: posematch.keypoints.spec, name: coco}``): a
    dataset config of your own overrides ``name`` and gives the fields, lists as YAML writes them.
    """
    if names is None:
        if name not in BUILT_IN:
            raise ValueError(
                f"data.spec.name={name!r}: not built in ({sorted(BUILT_IN)}); "
                "give names, flip_pairs, sigmas, skeleton and upper_body for a new dataset"
            )
        return BUILT_IN[name]
    return KeypointSpec(
        name=name,
        names=tuple(names),
        # The pairs' lengths are KeypointSpec.__post_init__'s to check.
        flip_pairs=tuple(cast(tuple[int, int], tuple(int(j) for j in p)) for p in flip_pairs),
        sigmas=tuple(float(s) for s in sigmas),
        skeleton=tuple(cast(tuple[int, int], tuple(int(j) for j in p)) for p in skeleton),
        upper_body=tuple(int(j) for j in upper_body),
    )
