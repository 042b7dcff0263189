"""The dead-network rule: every head's output constant across training rows whose inputs differ.

A network whose ReLU units all died predicts one value per target without its loss rising, which
the loss-ratio rule of :class:`~sk_htlnet.divergence.DivergenceMonitor` cannot see; the estimator
calls :func:`dead_network_error` at the end of training on the training rows the retransformation
forwards (else up to 10,000 of them).  The threshold ``DEAD_RTOL`` and the measurements behind it:
:mod:`sk_htlnet.divergence`.
"""

import numpy as np

from .errors import TrainingDivergedError, learning_rates

__all__ = ["DEAD_RTOL", "dead_network_error"]

DEAD_RTOL = 1e-6
"""A head's output is constant when, for each of its output columns, the range across the rows
checked is at most this times the column's largest magnitude (float32 resolves 1.2e-7)."""


def dead_network_error(net, raw, n_stages, features, fresh=True):
    """The :class:`TrainingDivergedError` (``reason="dead"``) for a network whose every head is
    constant, or None.

    Each head (stage t's logit; the core head's one or three outputs) is constant when every output
    column's range across the rows is at most ``DEAD_RTOL`` times its largest magnitude.  Nothing is
    reported when fewer than two rows differ in their encoded inputs (a constant output is then
    expected), when some head varies, or when an output is not finite (``predict`` reports it).

    Parameters
    ----------
    net : HybridNet
        The trained net (its ``task_names``, ``history`` and ``lr`` go into the error).
    raw : array-like of shape (n_rows, n_outputs)
        The network's outputs on the rows checked (k stage logits, then the core head's outputs).
    n_stages : int
        The number k of stage heads.
    features : sequence of ndarray
        The encoded inputs of those rows (arrays with one row each).
    fresh : bool, default=True
        Whether the estimator is left unfitted (a fresh fit) or keeps the network.

    Returns
    -------
    TrainingDivergedError or None
        The error to raise, or None when the network is not dead.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.shape[0] < 2 or not np.isfinite(raw).all():
        return None
    if not any(f.size and bool((np.asarray(f) != np.asarray(f)[:1]).any()) for f in features):
        return None
    heads = [raw[:, t : t + 1] for t in range(n_stages)] + [raw[:, n_stages:]]
    constant = [bool((np.ptp(h, axis=0) <= DEAD_RTOL * np.abs(h).max(axis=0)).all()) for h in heads]
    if not all(constant):
        return None
    tasks = list(net.task_names)
    epoch = len(net.history)
    lr, lower = learning_rates(net)
    kept = ("The estimator is left unfitted; history_ records every epoch run." if fresh else
            "The estimator keeps the dead network of this call's last epoch; history_ records every epoch run.")
    return TrainingDivergedError(
        f"training diverged: after epoch {epoch} the output of every head ({tasks}) is the same on all "
        f"{raw.shape[0]} training rows checked, whose inputs differ: the network's units died (no input "
        f"activates them any more), so it predicts one value per target whatever the input. {kept} "
        f"Refit with a lower learning_rate (now {lr:g}; try {lower:g}).",
        reason="dead", task=tasks[0], tasks=tasks, epoch=epoch, best_epoch=None if fresh else epoch,
        learning_rate=lr, suggested_learning_rate=lower,
    )
