"""Former home of the joint specifications, kept so that run folders saved before they moved
(``_target_: posematch.data.keypoints.spec`` in ``.hydra/config.yaml``) still load. New code
imports ``posematch.keypoints``."""

from posematch.keypoints import COCO, MPII, KeypointSpec, spec

__all__ = ["COCO", "MPII", "KeypointSpec", "spec"]
