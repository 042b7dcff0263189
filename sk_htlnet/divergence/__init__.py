"""Divergence detection for :class:`~sk_htlnet.net.HybridNet`: NaN losses, finite blow-ups, dead networks.

A loss that becomes NaN is caught by the train step at once.  A *finite* blow-up (at a too large
``learning_rate`` the losses climb to 1e13-1e17 and then often settle, the network dead, at a
constant prediction) is caught at the end of the epoch by comparing each task's epoch training loss
with the loss of the best *constant* prediction on the same rows, the one the heads start from::

    r_t = (L_t - F_t) / (L0_t - F_t)

where ``L_t`` is task t's epoch training loss (``train_loss_<name>`` in the history), ``L0_t`` the
base-rate loss (every row predicted by the head priors: the stage base-rate logits, the core's mean
or its likelihood's fitted parameters) and ``F_t`` a lower bound of the loss.  ``L0_t`` and ``F_t``
are taken on the epoch's own training batches exactly as ``L_t`` is: each batch's weighted mean
(the criterion's, with its denominator), averaged over the batches by their row counts.  A
reference weighted over all rows at once is not comparable under heavy sample weights (one row of
weight 1e6 among 3,000 gave a ratio of 239 at a learning rate of 1e-6; Pareto(0.5-0.6) weights 2 to
41 at the default): with the per-batch reference an untrained network's ratio is 1 for any weights
(measured 0.99-1.04 on those cases).  ``F_t`` is (0 for the log loss,
the squared error and the Tweedie loss; for the zero-inflated lognormal, whose negative
log-likelihood can be negative, the value it would reach with every ``sigma`` at its floor of 1e-3
and every ``mu`` exact).  ``L - F`` is never negative, so ``r_t`` works for a loss of any sign and
any scale (a squared error in raw units of 1e16 is as unremarkable as one of 0.2 on a log scale).
The run has diverged when ``r_t > MAX_LOSS_RATIO`` (10) for some task: its training loss, on the
rows it trains on, is more than ten times as far above the loss's lower bound as the prediction of
a constant is.

The threshold is measured (docs/robustness.md): over 94 healthy fits on Hillstrom and synthetic
funnels (seven architectures, four numeric encodings, the three core losses, the three MSE
transforms, uniform and heavy-tailed sample weights, learning rates 1e-3 to 1e-2, 300 to 20,000
rows, up to 30 epochs) the largest ``r_t`` of any task in any epoch was 2.0; the 36 blow-ups at
``learning_rate`` 0.3 and 1.0 reach ``r_t`` of 79 to 4e26 in their first epoch.  Ten sits between
the two on a log scale (their geometric mean is 12.6).

A network that dies without its loss rising (every ReLU unit inactive, each head at its bias: a
constant prediction at about the base rate's loss) passes that rule; :func:`dead_network_error`,
called by the estimator at the end of training on the training rows the retransformation forwards
(else up to 10,000 of them), raises ``reason="dead"`` when *every* head's output is constant
(range at most ``DEAD_RTOL`` = 1e-6 times its magnitude) across rows whose encoded inputs differ.
Measured: the 9 of 42 fits at ``learning_rate`` 0.3 / 1.0 (seven architectures, three core losses,
4,000 rows, 10 epochs) that passed the loss rule had a range of exactly 0 in every head; over 126
healthy fits at the default learning rate (seven architectures, three core losses, 300 to 1,000
rows, stages with and without signal) the smallest relative range of any head was 1.8e-3.  Only
some heads constant is not reported: none of the dead fits was so, and a healthy HTLNet (Pareto
weights, default learning rate) had a constant head at epochs 7-8 and then recovered.

On divergence the monitor puts back the best weights kept so far, discards the optimiser's state
(Adam's moments from the diverged steps) and raises :class:`TrainingDivergedError`.

Its modules: ``errors`` (:class:`TrainingDivergedError`), ``monitor`` (:class:`DivergenceMonitor`,
the loss-ratio rule and the best weights) and ``dead`` (:func:`dead_network_error`, the
dead-network rule).
"""

from .dead import DEAD_RTOL, dead_network_error  # noqa: F401 (the constants are importable from here)
from .errors import LEARNING_RATE_STEP, TrainingDivergedError  # noqa: F401
from .monitor import MAX_LOSS_RATIO, DivergenceMonitor, find_monitor  # noqa: F401

# TrainingDivergedError is public as sk_htlnet.TrainingDivergedError
__all__ = ["DivergenceMonitor", "find_monitor", "dead_network_error"]
