"""posematch: top-down 2D human pose estimation with the heatmap distribution matching loss.

Qu et al., "Heatmap Distribution Matching for Human Pose Estimation", NeurIPS 2022.
"""

__version__ = "0.1.0"
