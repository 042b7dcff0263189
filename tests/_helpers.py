"""What the tests read from a fitted HTLNetRegressor beyond ``predict``, through its public surface
only (``make_dataset``, ``net_``), so that a redesign of the estimator's internals breaks no test."""

import numpy as np


def raw_outputs(est, X):
    """The fitted network's eval-mode outputs on X, float64 (n, k + m): the k stage logits, then the
    core head's m outputs on the loss's scale."""
    out = est.net_.forward(est.make_dataset(X), training=False)
    return out.detach().cpu().numpy().astype(np.float64)


def batch(est, X, y):
    """Every row of (X, y) as one ``(X_dict, y)`` batch for ``est.net_.train_step``: the encoded
    inputs, and the targets with the core on the loss's scale."""
    return est.make_dataset(X, y)[:]
