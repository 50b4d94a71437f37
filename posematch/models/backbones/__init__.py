"""Backbones: images (B, 3, H, W) -> features; each one file, named by a Hydra ``_target_``."""
