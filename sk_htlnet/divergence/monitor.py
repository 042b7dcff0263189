"""The skorch callback that catches a finite blow-up and keeps the best weights: :class:`DivergenceMonitor`.

At the end of each epoch it compares each task's epoch training loss ``L`` with the loss ``L0`` of
the head priors on the same training batches and the loss's lower bound ``F``, and raises
:class:`TrainingDivergedError` when ``(L - F) / (L0 - F)`` exceeds ``MAX_LOSS_RATIO``; the rule and
the measurements behind it: :mod:`sk_htlnet.divergence`.  :func:`find_monitor` finds a net's monitor.
"""

import math

import numpy as np
import torch
from skorch.callbacks import Callback, EarlyStopping
from skorch.utils import to_tensor

from .errors import TrainingDivergedError, learning_rates

__all__ = ["MAX_LOSS_RATIO", "DivergenceMonitor", "find_monitor"]

MAX_LOSS_RATIO = 10.0
"""Largest ratio ``(L - F) / (L0 - F)`` of a task's epoch training loss that is not a divergence."""


def find_monitor(net):
    """The :class:`DivergenceMonitor` among a net's callbacks.

    Parameters
    ----------
    net : skorch.NeuralNet
        A net, initialised (its ``callbacks_`` are searched) or not (its ``callbacks``).

    Returns
    -------
    DivergenceMonitor or None
    """
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
    best_weights_ : dict of str to torch.Tensor or None
        The kept weights (a CPU copy of the module's ``state_dict``; see Notes), None while none
        are kept or when early stopping's copy serves.
    best_epoch_ : int or None
        The epoch of ``best_weights_``.

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
            family = getattr(net.criterion_, "core_family", None)
            if family is not None:  # the core loss's own bound (sk_htlnet.core_losses)
                floor[-1] = (family.per_row_floor(y[:, -1].double()) * weight[:, -1]).sum() \
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
        group = getattr(net, "group_", None)
        if group is not None and group.active:  # a distributed fit: the reference over every rank's batches
            parts = group.all_gather_object((self._sums, self._rows))
            sums = [p for p, _ in parts if p is not None]
            self._sums = np.sum(sums, axis=0) if sums else None
            self._rows = sum(r for _, r in parts)
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
        optimisers' state and free the copy.

        Parameters
        ----------
        net : HybridNet
            The net being trained.

        Returns
        -------
        int or None
            The epoch of the weights loaded, or None if none were kept (nothing is changed then).
        """
        kept = self._early_stopping_weights(net)
        weights, epoch = kept if kept is not None else (self.best_weights_, self.best_epoch_)
        if weights is not None:
            net.module_.load_state_dict(weights)
            net.reset_optimizer_state()  # Adam's moments of the diverged steps
        self._free()
        return epoch if weights is not None else None

    # ---- the error ------------------------------------------------------------------------------
    def diverged(self, net, tasks, task=None, loss=None, ratio=None, epoch=None, reason=None):
        """Restore the best weights (:meth:`restore_best`) and return the error to raise.

        Parameters
        ----------
        net : HybridNet
            The net being trained.
        tasks : list of str
            Every task that diverged.
        task : str, default=None
            The task the message is about; None: the first of ``tasks``.
        loss, ratio : float, default=None
            ``task``'s loss and, for a finite blow-up, its ratio ``(L - F) / (L0 - F)``.
        epoch : int, default=None
            The epoch of the divergence; None: the history's length.
        reason : {"nan", "blow-up"}, default=None
            "nan" (the train step's check) or "blow-up" (the loss ratio); None infers it from
            ``ratio``.

        Returns
        -------
        TrainingDivergedError
        """
        if reason is None:
            reason = "nan" if ratio is None else "blow-up"
        task = tasks[0] if task is None else task
        epoch = len(net.history) if epoch is None else epoch
        t = list(net.task_names).index(task)
        reference = None
        if self.reference_ is not None and np.isfinite(self.reference_[t]):
            reference = float(self.reference_[t])
        best_epoch = self.restore_best(net)
        lr, lower = learning_rates(net)
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
        transformable = not getattr(getattr(criterion, "core_family", None), "likelihood", True)  # the MSE
        if t == len(net.task_names) - 1 and transformable and raw_scale != 1.0:
            remedy += ", use target_transform='log1p' or 'standardize' for a core target with large values"
        remedy += ", or check the inputs for extreme values."
        return TrainingDivergedError(
            f"training diverged at epoch {epoch}: {what}. {kept} {remedy}",
            reason=reason, task=task, tasks=tasks, epoch=epoch, best_epoch=best_epoch, loss=loss, reference=reference,
            ratio=ratio, learning_rate=lr, suggested_learning_rate=lower,
        )
