"""``posematch-check-data``: the files an experiment needs, present or missing, before a run starts.

    posematch-check-data experiment=coco/hrnet_w32_384x288_sinkhorn [data.root=/datasets/coco]

Composes the training config of the experiment (any override applies), lists every annotation
file, image folder, detection file, evaluation file and the ImageNet start (``model.pretrained``) it
names, says for each whether it is there (folders: how many files) and where a missing one comes
from, and exits 1 when something is missing. It reads paths only: nothing is loaded or trained.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig

from posematch.cli.common import CONFIG_PATH
from posematch.cli.help import with_help
from posematch.cli.user_errors import user_errors
from posematch.models.pose_model import pretrained_file

# Where each file of the published set-up comes from, by file or folder name.
SOURCES = {
    "person_keypoints_train2017.json": "COCO 2017 train/val annotations (cocodataset.org)",
    "person_keypoints_val2017.json": "COCO 2017 train/val annotations (cocodataset.org)",
    "image_info_test-dev2017.json": "COCO 2017 testing image info (cocodataset.org)",
    "train2017": "COCO 2017 train images (cocodataset.org)",
    "val2017": "COCO 2017 val images (cocodataset.org)",
    "test2017": "COCO 2017 test images (cocodataset.org)",
    "COCO_val2017_detections_AP_H_56_person.json": "person detections released with HRNet "
    "(deep-high-resolution-net.pytorch, 'person_detection_results')",
    "COCO_test-dev2017_detections_AP_H_609_person.json": "person detections released with HRNet "
    "(deep-high-resolution-net.pytorch, 'person_detection_results')",
    "train.json": "MPII annotations in the HRNet json format (deep-high-resolution-net.pytorch)",
    "valid.json": "MPII annotations in the HRNet json format (deep-high-resolution-net.pytorch)",
    "test.json": "MPII annotations in the HRNet json format (deep-high-resolution-net.pytorch)",
    "gt_valid.mat": "MPII validation ground truth (deep-high-resolution-net.pytorch, annot/)",
    "images": "MPII Human Pose images (human-pose.mpi-inf.mpg.de)",
    "hrnet_w32-36af842e.pth": "HRNet-W32 ImageNet weights (deep-high-resolution-net.pytorch, "
    "models/pytorch/imagenet/)",
    "hrnet_w48-8ef0771d.pth": "HRNet-W48 ImageNet weights (deep-high-resolution-net.pytorch, "
    "models/pytorch/imagenet/)",
    "resnet152-b121ed2d.pth": "ResNet-152 ImageNet weights (torchvision; also in "
    "deep-high-resolution-net.pytorch, models/pytorch/imagenet/)",
    "hrt_small.pth": "HRFormer-S ImageNet weights (HRNet/HRFormer release, classification)",
    "hrt_base.pth": "HRFormer-B ImageNet weights (HRNet/HRFormer release, classification)",
}
PRETRAINED = "ImageNet weights of the backbone (official HRNet / HRFormer release, torchvision)"


@dataclass(frozen=True)
class Needed:
    """One path the run reads: option (dotted config key), path, folder or file, present."""

    option: str
    path: Path
    folder: bool

    @property
    def present(self) -> bool:
        return self.path.is_dir() if self.folder else self.path.is_file()

    def line(self) -> str:
        if self.present:
            what = f"{sum(1 for _ in self.path.iterdir())} files" if self.folder else "file"
            return f"  present  {self.option} = {self.path} ({what})"
        source = SOURCES.get(
            self.path.name, PRETRAINED if self.option == "model.pretrained" else ""
        )
        hint = f"  <- {source}" if source else ""
        return f"  MISSING  {self.option} = {self.path}{hint}"


def needed(cfg: DictConfig) -> list[Needed]:
    """The paths the composed training config reads, in the order a run reads them."""
    out: list[Needed] = []
    parts = ["train", "val", "evaluator"] if cfg.get("validate", True) else ["train"]
    for part in parts:
        node = cfg.data.get(part)
        if node is None:
            continue
        # project: a DeepLabCut project folder (posematch.data.dlc), labels and frames inside.
        for key in ("ann_file", "image_dir", "det_file", "gt_file", "project"):
            if key not in node or node[key] is None:
                continue
            if key == "det_file" and node.get("boxes", "gt") != "det":
                continue
            path = Path(str(node[key]))
            if any(n.path == path for n in out):
                continue
            out.append(Needed(f"data.{part}.{key}", path, key in ("image_dir", "project")))
    for key in ("pretrained", "init_from"):
        weights = pretrained_file(cfg.model.get(key))
        if weights is not None:
            out.append(Needed(f"model.{key}", Path(weights), False))
    return out


def run(cfg: DictConfig) -> int:
    """Print the report; 0 when everything is present, 1 otherwise."""
    items = needed(cfg)
    print(f"posematch-check-data: data={cfg.data.name} (data.root={cfg.data.root})")
    for item in items:
        print(item.line())
    missing = [i for i in items if not i.present]
    if missing:
        print(
            f"{len(missing)} of {len(items)} missing: see docs/data.md, 'Data and weights set-up'"
        )
        return 1
    print(f"all {len(items)} present")
    return 0


@with_help("check_data")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="check_data")
def main(cfg: DictConfig) -> None:
    with user_errors("posematch-check-data"):
        code = run(cfg)
    sys.exit(code)


if __name__ == "__main__":
    main()
