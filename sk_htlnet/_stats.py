"""Small weighted statistics shared by the target policy, the core losses' priors and the net's set-up."""

import numpy as np


def weighted_nanmean(values, sample_weight=None):
    """Mean of the non-NaN values, weighted if weights are given (float)."""
    ok = ~np.isnan(values)
    w = None if sample_weight is None else sample_weight[ok]
    if not ok.any() or (w is not None and w.sum() == 0):
        return float("nan")
    return float(np.average(values[ok], weights=w))
