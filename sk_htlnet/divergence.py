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
"""

import math

import numpy as np
import torch
from skorch.callbacks import Callback, EarlyStopping
from skorch.utils import to_tensor

__all__ = ["DivergenceMonitor", "find_monitor", "dead_network_error"]  # TrainingDivergedError is public as sk_htlnet.TrainingDivergedError

MAX_LOSS_RATIO = 10.0
"""Largest ratio ``(L - F) / (L0 - F)`` of a task's epoch training loss that is not a divergence."""

DEAD_RTOL = 1e-6
"""A head's output is constant when, for each of its output columns, the range across the rows
checked is at most this times the column's largest magnitude (float32 resolves 1.2e-7)."""

LEARNING_RATE_STEP = 10.0
"""The remedy's suggested learning rate is the current one divided by this."""


class TrainingDivergedError(FloatingPointError):
    """Raised by ``fit`` (and ``partial_fit``) when training diverges.

    Training has diverged when a task's training loss becomes NaN or infinite (checked at every
    batch), or when, at the end of an epoch, a task's epoch training loss is more than
    ``sk_htlnet.divergence.MAX_LOSS_RATIO`` (10) times as far above the loss's lower bound as
    the loss of the best constant prediction (the head priors) on the same rows.  The rule and the
    measurements behind it: :mod:`sk_htlnet.divergence`.

    Before it is raised the net is put back to its best weights so far: with early stopping those
    of the epoch with the lowest validation loss, otherwise those of the epoch with the lowest
    training loss (``train_loss``) among the epochs of this call that passed the check, or, when
    none did, the weights the net had when a continued fit (``warm_start``, ``partial_fit``)
    started.  :class:`~sk_htlnet.HTLNetRegressor` is then left fitted on those weights (``history_``
    holds every epoch run, the diverged one included), or unfitted when a fresh fit diverged in its
    first epoch (``best_epoch`` is None).

    Attributes
    ----------
    reason : {"nan", "blow-up", "dead"} or None
        Which rule fired: a NaN or infinite batch loss, the loss ratio, or (at the end of training,
        raised by the estimator) every head's output constant across training rows whose inputs
        differ; for "dead" a fresh fit is left unfitted, a continued one keeps the network
        (``best_epoch`` its last epoch), ``task`` is the first task and ``tasks`` all of them.
    task : str or None
        The diverged task: the first with a NaN or infinite loss, or the one with the largest ratio.
    tasks : list of str
        Every task that diverged at that point.
    epoch : int or None
        The epoch (1-based, as in ``history_``) in which the divergence was found.
    best_epoch : int or None
        The epoch whose weights the net holds now (0: the weights before any epoch of its history,
        as for a model from :func:`~sk_htlnet.io.load_model`), or None when no weights were kept.
    loss : float or None
        ``task``'s loss at the divergence (its epoch training loss, or the batch's NaN or infinity).
    reference : float or None
        ``task``'s base-rate loss ``L0`` on the last epoch's training batches (None if it could not
        be computed, and for "dead").
    ratio : float or None
        ``(loss - F) / (reference - F)`` for a finite blow-up (``reason="blow-up"``), else None.
    learning_rate : float or None
        The learning rate of the diverged run.
    suggested_learning_rate : float or None
        ``learning_rate / 10``, the value the message suggests.
    """

    def __init__(self, message, *, reason=None, task=None, tasks=(), epoch=None, best_epoch=None, loss=None,
                 reference=None, ratio=None, learning_rate=None, suggested_learning_rate=None):
        super().__init__(message)
        self.reason = reason
        self.task = task
        self.tasks = list(tasks)
        self.epoch = epoch
        self.best_epoch = best_epoch
        self.loss = loss
        self.reference = reference
        self.ratio = ratio
        self.learning_rate = learning_rate
        self.suggested_learning_rate = suggested_learning_rate


def find_monitor(net):
    """The :class:`DivergenceMonitor` among ``net``'s callbacks (the initialised ``callbacks_`` once
    the net is initialised, else ``callbacks``), or None."""
    if hasattr(net, "callbacks_"):
        callbacks = [cb for _, cb in net.callbacks_]
    else:
        callbacks = [cb[1] if isinstance(cb, tuple) else cb for cb in getattr(net, "callbacks", None) or []]
    return next((cb for cb in callbacks if isinstance(cb, DivergenceMonitor)), None)


class DivergenceMonitor(Callback):
    """skorch callback: raise :class:`TrainingDivergedError` on a finite blow-up, keep the best weights.

    :class:`~sk_htlnet.HTLNetRegressor` adds it to every net it builds, before every other callback
    of its own and the user's.

    Parameters
    ----------
    base_outputs : sequence of float
        The constant prediction whose loss is the reference ``L0``: one output per network output
        (k stage logits, then the core head's outputs), the head priors.
    max_ratio : float, default=MAX_LOSS_RATIO
        A task diverges when ``(L - F) / (L0 - F)`` exceeds it (see the module description).

    Attributes
    ----------
    resumed : bool
        Whether the weights at the start of the next call to ``fit`` / ``partial_fit`` are a trained
        model to fall back on (set by the estimator before each call; a net whose history already
        holds epochs is always treated so).
    reference_, floor_ : ndarray of float64 (k + 1,)
        ``L0`` and ``F`` per task on the training batches of the last epoch checked, each batch's
        (weighted) mean averaged by rows as the epoch loss is, in the history's units; NaN for a
        task without an observed label there (never checked).
    ratios_ : ndarray of float64 (k + 1,)
        The ratios of the last epoch checked.

    Notes
    -----
    Memory: the kept weights are one CPU copy of the module's ``state_dict``, made at the start of
    the epoch after a new best one (so never after the last epoch) and updated in place.  When an
    early-stopping callback with ``load_best=True`` holds its best weights (it copies them itself),
    the monitor keeps none and restores those instead, so a fresh fit never holds two copies (a
    continued fit with early stopping holds its starting weights until early stopping has made its
    first copy, at the end of the call's first epoch).  The copy is freed when training ends or
    diverges and is not pickled.
    """

    def __init__(self, base_outputs, max_ratio=MAX_LOSS_RATIO):
        self.base_outputs = base_outputs
        self.max_ratio = max_ratio
        self.resumed = False

    def __getstate__(self):
        state = self.__dict__.copy()
        state["best_weights_"] = None
        state["_base"] = None  # the base prediction on the net's device, rebuilt when training
        return state

    # ---- reference ------------------------------------------------------------------------------
    def _base_prediction(self, net, n_rows):
        if self._base is None:
            values = [float(v) for v in self.base_outputs]
            self._base = torch.as_tensor(values, dtype=torch.float32, device=torch.device(net.device))
        return self._base.expand(n_rows, -1)

    def _accumulate(self, net, Xi, yi):
        """Add one training batch's base-rate loss and loss floor per task, each the batch's
        (weighted) mean exactly as its training loss is taken, times the batch's rows."""
        y = to_tensor(yi, device=net.device)
        n_rows = int(y.shape[0])
        with torch.no_grad():
            base = net.get_task_losses(self._base_prediction(net, n_rows), y, Xi).double()
            observed = ~torch.isnan(y)
            weight = observed.double()
            if isinstance(Xi, dict) and "sample_weight" in Xi:
                weight = weight * to_tensor(Xi["sample_weight"], device=net.device).double().reshape(-1, 1)
            totals = weight.sum(dim=0)
            floor = torch.zeros_like(base)
            if getattr(net.criterion_, "core_loss", None) == "ziln":
                z = y[:, -1].double()
                positive = observed[:, -1] & (z > 0)
                log_z = torch.log(torch.where(positive, z, torch.ones_like(z)))
                floor[-1] = ((log_z + self._log_floor) * positive.double() * weight[:, -1]).sum() \
                    / totals[-1].clamp_min(1.0)  # the task loss's own denominator
            batch = torch.stack([base * n_rows, floor * n_rows, totals]).cpu().numpy()
        self._sums = batch if self._sums is None else self._sums + batch
        self._rows += n_rows

    def _epoch_reference(self, net):
        """(L0, F) per task, float64 (k + 1,) each, over the epoch's training batches, in the
        history's units; NaN for a task without an observed label (weight) in them."""
        if self._sums is None or self._rows == 0:
            return None, None
        with np.errstate(invalid="ignore", divide="ignore"):
            reference, floor = np.where(self._sums[2] > 0, self._sums[:2] / self._rows, np.nan)
        factors = net.criterion_.history_factors()  # the history's units
        return reference * factors, floor * factors

    # ---- callback hooks -------------------------------------------------------------------------
    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.best_weights_ = None
        self.best_epoch_ = None
        self.best_score_ = math.inf
        self.ratios_ = None
        self._candidate = None  # (epoch, train_loss) of the last epoch that passed the check
        self._started = False
        self.start_epoch_ = None  # the epoch of the weights a continued call started from
        self.reference_ = self.floor_ = None
        self._base = None
        self._sums, self._rows = None, 0
        from .net import ZILN_MIN_SIGMA

        self._log_floor = math.log(ZILN_MIN_SIGMA) + 0.5 * math.log(2 * math.pi)

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training and batch is not None and batch[1] is not None:
            self._accumulate(net, batch[0], batch[1])

    def on_epoch_begin(self, net, **kwargs):
        self._sums, self._rows = None, 0
        epoch = len(net.history)  # the row of this epoch is already there
        if not self._started:
            self._started = True
            if self.resumed or epoch > 1:  # fall back on the weights the call started from
                self._keep(net, epoch - 1)
                self.start_epoch_ = epoch - 1
            return
        if self._early_stopping_weights(net) is not None:
            self._free()  # early stopping keeps a copy of its own
        elif self._candidate is not None and self._candidate[1] < self.best_score_:
            self._keep(net, *self._candidate)
        self._candidate = None

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        reference, floor = self._epoch_reference(net)
        if reference is not None:
            self.reference_, self.floor_ = reference, floor
            losses = np.array([row.get(f"train_loss_{name}", np.nan) for name in net.task_names], dtype=float)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratios = (losses - self.floor_) / (self.reference_ - self.floor_)
            # a task without labels in this call has no reference; a NaN batch loss was caught already
            checked = np.isfinite(self.reference_) & (self.reference_ > self.floor_) & ~np.isnan(losses)
            self.ratios_ = np.where(checked, ratios, np.nan)
            diverged = checked & (ratios > self.max_ratio)
            if diverged.any():
                names = [name for name, bad in zip(net.task_names, diverged) if bad]
                worst = int(np.argmax(np.where(diverged, np.nan_to_num(ratios, nan=np.inf), -np.inf)))
                raise self.diverged(net, names, task=net.task_names[worst], loss=float(losses[worst]),
                                    ratio=float(ratios[worst]), epoch=int(row["epoch"]))
        self._candidate = (int(row["epoch"]), float(row.get("train_loss", math.inf)))

    def on_train_end(self, net, **kwargs):
        self._free()
        self.resumed = False

    # ---- best weights ---------------------------------------------------------------------------
    @staticmethod
    def _early_stopping_weights(net):
        """(weights, epoch) of an early-stopping callback that keeps its best weights, or None."""
        for _, cb in getattr(net, "callbacks_", []):
            if isinstance(cb, EarlyStopping) and cb.load_best and getattr(cb, "best_model_weights_", None) is not None:
                return cb.best_model_weights_, int(cb.best_epoch_)
        return None

    def _keep(self, net, epoch, score=math.inf):
        """Copy the module's weights (those of ``epoch``) to the CPU, in place when already allocated."""
        state = net.module_.state_dict()
        if self.best_weights_ is None or self.best_weights_.keys() != state.keys():
            self.best_weights_ = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        else:
            for k, v in state.items():
                self.best_weights_[k].copy_(v.detach())
        self.best_epoch_ = int(epoch)
        self.best_score_ = score

    def _free(self):
        self.best_weights_ = None
        self.best_epoch_ = None
        self.best_score_ = math.inf

    def restore_best(self, net):
        """Load the best weights kept (early stopping's, else this monitor's) into ``net``, reset the
        optimisers' state and free the copy; returns the best epoch, or None if none was kept."""
        kept = self._early_stopping_weights(net)
        weights, epoch = kept if kept is not None else (self.best_weights_, self.best_epoch_)
        if weights is not None:
            net.module_.load_state_dict(weights)
            for name in getattr(net, "_optimizers", []):  # skorch's names, without the trailing "_"
                optimizer = getattr(net, name + "_", None)
                if isinstance(optimizer, torch.optim.Optimizer):
                    optimizer.state.clear()  # Adam's moments of the diverged steps
        self._free()
        return epoch if weights is not None else None

    # ---- the error ------------------------------------------------------------------------------
    def diverged(self, net, tasks, task=None, loss=None, ratio=None, epoch=None, reason=None):
        """Restore the best weights and return the :class:`TrainingDivergedError` to raise.

        ``reason``: "nan" (the train step's check) or "blow-up" (the loss ratio, given as
        ``ratio``); None infers it from ``ratio``."""
        if reason is None:
            reason = "nan" if ratio is None else "blow-up"
        task = tasks[0] if task is None else task
        epoch = len(net.history) if epoch is None else epoch
        t = list(net.task_names).index(task)
        reference = None
        if self.reference_ is not None and np.isfinite(self.reference_[t]):
            reference = float(self.reference_[t])
        best_epoch = self.restore_best(net)
        lr = float(net.lr)
        lower = lr / LEARNING_RATE_STEP
        if reason == "nan":
            what = f"the loss of {tasks} became NaN or infinite"
        else:
            floor = float(self.floor_[t])
            what = (f"the training loss of {task!r} rose to {loss:.3g} (predicting the base rates gives "
                    f"{reference:.3g}, the loss's lower bound is {floor:.3g}): {ratio:.3g} times as far above "
                    f"the bound, more than the limit of {self.max_ratio:g}")
            if len(tasks) > 1:
                what += f"; also diverged: {[name for name in tasks if name != task]}"
        if best_epoch is None:
            kept = "No earlier weights were kept (a fresh fit's first epoch): the estimator is left unfitted."
        elif best_epoch == self.start_epoch_:
            kept = "The estimator keeps the weights it had before this call; history_ records every epoch run."
        else:
            kept = (f"The estimator keeps the weights of epoch {best_epoch}, its best before the divergence; "
                    "history_ records every epoch run.")
        remedy = f"Refit with a lower learning_rate (now {lr:g}; try {lower:g})"
        criterion = net.criterion_
        raw_scale = getattr(criterion, "core_loss_scale", 1.0) * getattr(criterion, "core_report_scale", 1.0)
        if t == len(net.task_names) - 1 and getattr(criterion, "core_loss", None) == "mse" and raw_scale != 1.0:
            remedy += ", use target_transform='log1p' or 'standardize' for a core target with large values"
        remedy += ", or check the inputs for extreme values."
        return TrainingDivergedError(
            f"training diverged at epoch {epoch}: {what}. {kept} {remedy}",
            reason=reason, task=task, tasks=tasks, epoch=epoch, best_epoch=best_epoch, loss=loss, reference=reference,
            ratio=ratio, learning_rate=lr, suggested_learning_rate=lower,
        )


def dead_network_error(net, raw, n_stages, features, fresh=True):
    """The :class:`TrainingDivergedError` (``reason="dead"``) for a network whose every head is
    constant, or None.

    ``raw`` (rows, outputs): the network's outputs on the rows checked (k stage logits, then the core
    head's outputs); ``features``: the encoded inputs of those rows (arrays with one row each).  Each
    head (stage t's logit; the core head's one or three outputs) is constant when every output
    column's range across the rows is at most ``DEAD_RTOL`` times its largest magnitude.  Nothing is
    reported when fewer than two rows differ in their encoded inputs (a constant output is then
    expected), when some head varies, or when an output is not finite (``predict`` reports it).
    ``fresh``: whether the estimator is left unfitted (a fresh fit) or keeps the network."""
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
    lr = float(net.lr)
    lower = lr / LEARNING_RATE_STEP
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
