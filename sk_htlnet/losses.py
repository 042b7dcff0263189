"""The hybrid loss (HTLNet §3): one BCE per stage and the core-loss family for the core target,
with label masks, row weights, static task weights and Kendall et al.'s uncertainty weighting."""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .core_losses import core_loss as core_loss_family

__all__ = ["HybridLoss"]


class HybridLoss(nn.Module):
    """Per-task losses for hybrid targets (HTLNet §3): BCE for each stage, ``core_loss`` for the core.

    Parameters
    ----------
    n_stages : int
        Number k of binary stages (the first k columns).
    core_scale : float, default=1.0
        Variance of the (transformed) core target on the training data; the *monitored* total
        divides the core MSE by it so that no task dominates by its units (docs/method.md, Loss).
    task_weights : sequence of float, optional
        Static weight of each task in the optimised loss (default all 1).
    pos_weight : sequence of float, optional
        Weight of the positive class in each stage's BCE (``torch`` ``pos_weight``); default all 1.
    uncertainty : bool, default=False
        Learn Kendall et al.'s (2018) per-task log-variances ``s_t`` and optimise
        ``exp(-s) L + s / 2`` per stage and ``exp(-s) L / 2 + s / 2`` for the core (see :meth:`objective`).
    core_loss : {"mse", "ziln", "tweedie"}, default="mse"
        Loss of the core target y (a non-negative amount for "ziln" and "tweedie"):

        - "mse": ``(out - y)^2`` (HTLNet §3);
        - "ziln": the negative log-likelihood of the zero-inflated lognormal (Wang et al., 2019,
          "A Deep Probabilistic Model for Customer Lifetime Value Prediction", eq. 2-4): the BCE of
          ``1[y > 0]`` on ``logit``, plus, for ``y > 0``,
          ``log y + log sigma + log(2 pi) / 2 + (log y - mu)^2 / (2 sigma^2)``;
        - "tweedie": the Tweedie negative log-likelihood with log link and power ``p`` (up to terms
          free of the prediction; Jorgensen, 1987): ``-y exp((1 - p) eta) / (1 - p) + exp((2 - p) eta) / (2 - p)``.
    tweedie_power : float in (1, 2), default=1.5
    core_loss_scale : float, default=1.0
        Factor of the core's squared error (``core_loss="mse"``): the estimator trains
        ``target_transform="none"`` on the standardised core z and passes the core's training
        variance here, so that the loss is the squared error in the target's own units (HTLNet §3's
        raw MSE) while the network's outputs stay of order 1 (capped at 1e12, see
        ``core_report_scale``).
    core_report_scale : float, default=1.0
        Factor from the optimised core loss to the one the history reports (float64): the core's
        variance over ``core_loss_scale`` when the cap applies, so the history always holds the
        squared error in the target's units.

    Notes
    -----
    ``forward(y_pred, y_true, sample_weight=None)`` takes float32 (batch, k + m) stage logits and the
    core head's m outputs (``CoreLoss.width``), float32 (batch, k + 1) labels with NaN for
    missing, and optional float32 (batch,) row weights; returns float32 (k + 1,) per-task (weighted)
    mean losses over the observed labels.  A task with no observed label in the batch gets loss 0
    and no gradient.
    """

    def __init__(self, n_stages, core_scale=1.0, task_weights=None, pos_weight=None, uncertainty=False,
                 core_loss="mse", tweedie_power=1.5, core_loss_scale=1.0, core_report_scale=1.0):
        super().__init__()
        self.core_family = core_loss_family(core_loss, scale=core_loss_scale, tweedie_power=tweedie_power)
        self.core_loss = core_loss
        self.tweedie_power = float(tweedie_power)
        self.core_loss_scale = float(core_loss_scale)
        self.core_report_scale = float(core_report_scale)
        self.log_vars = nn.Parameter(torch.zeros(int(n_stages) + 1)) if uncertainty else None
        pos = torch.ones(int(n_stages)) if pos_weight is None else pos_weight
        self.register_buffer("pos_weight", torch.as_tensor(pos, dtype=torch.float32))
        self.n_stages = int(n_stages)
        self.core_scale = float(core_scale)
        weights = torch.ones(self.n_stages + 1) if task_weights is None else task_weights
        self.register_buffer("task_weights", torch.as_tensor(weights, dtype=torch.float32))
        monitor = torch.ones(self.n_stages + 1)
        monitor[-1] = 1.0 / self.core_scale
        self.register_buffer("monitor_weights", monitor)

    def history_factors(self):
        """Factors from each task's optimised loss to the loss the history reports, float64 (k + 1,):
        1 for every task but the core's ``core_report_scale`` (the squared error in the target's
        units under a capped ``core_loss_scale``; 1 for a criterion pickled before it existed)."""
        factors = np.ones(self.n_stages + 1)
        factors[-1] = getattr(self, "core_report_scale", 1.0)
        return factors

    def objective(self, task_losses):
        """The per-task terms that are optimised (:meth:`objective_term` of each), float32 (k + 1,)."""
        return torch.stack([self.objective_term(t, loss) for t, loss in enumerate(task_losses)])

    def core_per_row(self, out, y):
        """Per-row core loss, (batch,), for the core head's outputs ``out`` (batch, m) and labels y
        (:meth:`sk_htlnet.core_losses.CoreLoss.per_row` of ``core_loss``)."""
        return self.core_family.per_row(out, y)

    def task_loss(self, t, out, y_true, sample_weight=None):
        """Task t's (weighted) mean loss, a 0-d tensor, from its own head output ``out``
        (batch, width) and the labels ``y_true`` (batch, k + 1); the graph holds only ``out``."""
        y = y_true[:, t]
        observed = ~torch.isnan(y)
        target = torch.where(observed, y, torch.zeros_like(y))
        if t < self.n_stages:
            per_row = F.binary_cross_entropy_with_logits(out[:, 0], target, pos_weight=self.pos_weight[t],
                                                         reduction="none")
        else:
            per_row = self.core_per_row(out, target)
        mask = observed.to(per_row.dtype)
        if sample_weight is not None:
            mask = mask * sample_weight
        return (per_row * mask).sum() / mask.sum().clamp_min(1.0)

    def objective_term(self, t, loss):
        """Task t's optimised term for its 0-d ``loss``: the static task weight, and with
        ``uncertainty`` Kendall et al.'s ``scale exp(-s_t) L + s_t / 2`` (scale 1/2 for the
        regression, 1 for a classification)."""
        term = loss * self.task_weights[t]
        if self.log_vars is not None:
            scale = 0.5 if t == self.n_stages else 1.0
            term = scale * torch.exp(-self.log_vars[t]) * term + 0.5 * self.log_vars[t]
        return term

    def forward(self, y_pred, y_true, sample_weight=None):
        k = self.n_stages
        outputs = [y_pred[:, t : t + 1] for t in range(k)] + [y_pred[:, k:]]
        return torch.stack([self.task_loss(t, out, y_true, sample_weight) for t, out in enumerate(outputs)])
