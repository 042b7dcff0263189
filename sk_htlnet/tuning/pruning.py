"""Pruning a trial per epoch: optuna-integration's skorch callback, reporting in the study's direction."""

import optuna
from optuna_integration.skorch import SkorchPruningCallback


PRUNING_CALLBACK_NAME = "optuna_pruning"  # documented in sk_htlnet/tuning/__init__.py
PRUNED_EPOCH_ATTR = "pruned_epoch"  # user attribute of a pruned trial: the epoch it stopped at
PRUNED_LOSS_PREFIX = "pruned_"  # + monitor ("pruned_valid_loss"): the monitored loss, as in history_


class _PruningCallback(SkorchPruningCallback):
    """optuna-integration's skorch pruning callback, reporting ``sign * history[-1, monitor]``.

    With ``sign=1`` (a minimised metric) the reports and the pruning decisions are exactly those
    of SkorchPruningCallback. In a maximised study the pruner treats greater reported values as
    better, so the monitored loss is reported negated (``sign=-1``).

    Optuna records a pruned trial's last intermediate value as its ``value``
    (``optuna/study/_tell.py``), which here is a (negated) loss, not the objective's metric. So
    before raising :class:`optuna.TrialPruned` the callback records what the trial really reached,
    in the loss's own units, as user attributes: ``"pruned_epoch"`` (the step of the last report)
    and ``"pruned_<monitor>"`` (the monitored loss at that epoch, as in ``history_``).
    :func:`sk_htlnet.tuning.trials_dataframe` reads a study with pruned trials' values blanked.
    """

    def __init__(self, trial, monitor, sign=1.0):
        super().__init__(trial, monitor)
        self._sign = sign

    def on_epoch_end(self, net, **kwargs):
        history = net.history
        if not history:
            return
        epoch = len(history) - 1
        loss = history[-1, self._monitor]
        self._trial.report(loss if self._sign > 0 else -float(loss), epoch)
        if self._trial.should_prune():
            self._trial.set_user_attr(PRUNED_EPOCH_ATTR, epoch)
            self._trial.set_user_attr(PRUNED_LOSS_PREFIX + self._monitor, float(loss))
            raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")
