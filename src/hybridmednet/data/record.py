"""The one sample record every reader produces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SampleRecord:
    """One labelled image.

    ``image`` is always ``uint8`` with shape ``(H, W, C)``; ``label`` is a class index for
    single-label tasks and ``labels`` a multi-hot vector for multi-label tasks (exactly one of
    the two is set). ``group`` is the patient or lesion id used for leakage-aware splits.
    """

    id: str
    image: np.ndarray
    label: int | None = None
    labels: np.ndarray | None = None
    group: str | None = None
    split: str | None = None
