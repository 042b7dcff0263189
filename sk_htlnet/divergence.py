"""Divergence detection for :class:`~sk_htlnet.net.HybridNet`: NaN losses and finite blow-ups.

A loss that becomes NaN is caught by the train step at once.  A *finite* blow-up (at a too large
``learning_rate`` the losses climb to 1e13-1e17 and then often settle, the network dead, at a
constant prediction) is caught at the end of the epoch by comparing each task's epoch training loss
with the loss of the best *constant* prediction on the same rows, the one the heads start from::

    r_t = (L_t - F_t) / (L0_t - F_t)

where ``L_t`` is task t's epoch training loss (``train_loss_<name>`` in the history), ``L0_t`` the
base-rate loss (every row predicted by the head priors: the stage base-rate logits, the core's mean
or its likelihood's fitted parameters) and ``F_t`` a lower bound of the loss (0 for the log loss,
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
the two on a log scale (their geometric mean is 12.6).  Not caught: a tower that dies without its
loss rising (a constant prediction at the base rate's loss), which no loss rule can tell from a
task with nothing to learn; a rule on constant outputs was tried and rejected, as it also fires on
a healthy PLE whose stage tower is inactive for its first epochs.

On divergence the monitor puts back the best weights kept so far, discards the optimiser's state
(Adam's moments from the diverged steps) and raises :class:`TrainingDivergedError`.
"""

import math

import numpy as np
import torch
from skorch.callbacks import Callback, EarlyStopping

__all__ = ["DivergenceMonitor", "find_monitor"]  # TrainingDivergedError is public as sk_htlnet.TrainingDivergedError

MAX_LOSS_RATIO = 10.0
"""Largest ratio ``(L - F) / (L0 - F)`` of a task's epoch training loss that is not a divergence."""

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
    reason : {"nan", "blow-up"} or None
        Which rule fired: a NaN or infinite batch loss, or the loss ratio.
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
        ``task``'s base-rate loss ``L0`` on the training rows (None if it could not be computed).
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
    chunk_rows : int, default=262144
        Rows per chunk when the reference is computed at the start of training (bounds its memory).

    Attributes
    ----------
    resumed : bool
        Whether the weights at the start of the next call to ``fit`` / ``partial_fit`` are a trained
        model to fall back on (set by the estimator before each call; a net whose history already
        holds epochs is always treated so).
    reference_, floor_ : ndarray of float64 (k + 1,)
        ``L0`` and ``F`` per task on the rows of the current call, in the history's units; NaN for a
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

    def __init__(self, base_outputs, max_ratio=MAX_LOSS_RATIO, chunk_rows=1 << 18):
        self.base_outputs = base_outputs
        self.max_ratio = max_ratio
        self.chunk_rows = chunk_rows
        self.resumed = False

    def __getstate__(self):
        state = self.__dict__.copy()
        state["best_weights_"] = None
        return state

    # ---- reference ------------------------------------------------------------------------------
    def _reference(self, net, dataset):
        """(L0, F) per task, float64 (k + 1,) each, in the history's units; NaN where unobserved."""
        criterion = net.criterion_
        n_tasks = len(net.task_names)
        device = torch.device(net.device)
        base = torch.as_tensor([float(v) for v in self.base_outputs], dtype=torch.float32, device=device)
        sums = np.zeros((3, n_tasks))  # weighted loss, weighted floor, weight
        ziln = getattr(criterion, "core_loss", None) == "ziln"
        from .net import ZILN_MIN_SIGMA

        log_floor = math.log(ZILN_MIN_SIGMA) + 0.5 * math.log(2 * math.pi)
        n, step = len(dataset), int(self.chunk_rows)
        with torch.no_grad():
            for start in range(0, n, step):
                idx = slice(start, min(start + step, n))
                if dataset.rows is not None:
                    idx = dataset.rows[idx]
                y = dataset.y[idx].to(device)
                w = None if dataset.sample_weight is None else dataset.sample_weight[idx].to(device)
                pred = base.expand(y.shape[0], -1)
                for t in range(n_tasks):
                    observed = ~torch.isnan(y[:, t])
                    weight = observed.double() if w is None else observed.double() * w.double()
                    total = float(weight.sum())
                    if total <= 0:
                        continue
                    out = pred[:, t : t + 1] if t < n_tasks - 1 else pred[:, t:]
                    # task_loss is a weighted mean divided by max(total weight, 1): undo it to sum chunks
                    sums[0, t] += float(criterion.task_loss(t, out, y, w)) * max(total, 1.0)
                    sums[2, t] += total
                    if ziln and t == n_tasks - 1:
                        z = y[:, t].double()
                        positive = observed & (z > 0)
                        log_z = torch.log(torch.where(positive, z, torch.ones_like(z)))
                        sums[1, t] += float(((log_z + log_floor) * positive.double() * weight).sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            reference, floor = np.where(sums[2] > 0, sums[:2] / sums[2], np.nan)
        report = float(getattr(criterion, "core_report_scale", 1.0))  # the history's core units
        reference[-1] *= report
        floor[-1] *= report
        return reference, floor

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
        if getattr(X, "y", None) is not None and hasattr(X, "rows"):  # a FunnelDataset with labels
            self.reference_, self.floor_ = self._reference(net, X)

    def on_epoch_begin(self, net, **kwargs):
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
        if self.reference_ is not None:
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
