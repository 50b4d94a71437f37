"""Input coercion shared by the evaluators: numpy arrays from numpy, lists or torch tensors."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_array(x: Any, name: str, dtype: type) -> np.ndarray:
    """``x`` as a numpy array of ``dtype``; a ValueError naming the field when it cannot be."""
    if hasattr(x, "detach"):  # torch tensor, possibly on an accelerator
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"add(): {name} cannot be read as an array of {dtype}: {err}") from err
