"""posematch: top-down 2D human pose estimation with the heatmap distribution matching loss.

Qu et al., "Heatmap Distribution Matching for Human Pose Estimation", NeurIPS 2022.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # ``posematch.Predictor`` without importing torch and Hydra for every ``import posematch``.
    if name in ("Predictor", "PosePrediction"):
        from posematch import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'posematch' has no attribute {name!r}")
