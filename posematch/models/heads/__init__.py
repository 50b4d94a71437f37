"""Heads: backbone features -> heatmaps (B, K, H/4, W/4); each one file, named by a ``_target_``."""
